"""The items of a received FLUDR as FHIR R4 resources, ready for one transaction Bundle.

``to_resources`` returns ``(fullUrl, resource)`` pairs, in dependency order: every fullUrl is a fresh
``urn:uuid:``, resources have no ``id``, and the only links between them are the ``Provenance.target``
references to those fullUrls (the Provenance comes last). A transaction rewrites them to the ids it assigns
(http://hl7.org/fhir/R4/bundle.html#references). References to the patient, the filed DocumentReference and the
encounter are taken as given (``Patient/1`` or a ``urn:uuid:`` of the same Bundle).

What each item becomes:

- exit diagnosis → ``Condition`` (category encounter-diagnosis, clinicalStatus active, the CDA coding with its
  system mapped to a FHIR URI, or only ``code.text`` when the narrative is all there is), ``encounter`` when one
  is given, ``evidence.detail`` → the DocumentReference (Condition has no ``derivedFrom``);
- exit treatment → ``MedicationStatement`` (status active, ``derivedFrom`` → the DocumentReference,
  ``informationSource`` a display-only reference to the author's organization, dosage text plus the
  structured dose range, route and period when the entry gives them, ``context`` → the encounter);
- prosthesis / personal belonging → ``Observation`` whose ``code`` is the kind of device (EMDN or TA_ASIP code
  of the entry) and whose ``valueBoolean`` says whether the resident came back with it (true) or without it
  (false); ``bodySite`` from the target site (upper / lower denture, left / right hearing aid); free text as
  ``valueString``. Why an Observation: "came back with her hearing aids, without her dentures" is a fact
  observed at one moment about the resident, with a yes/no value, which is exactly an Observation. A ``Flag``
  is a standing warning for whoever opens the record (it has no value, so "without" would live in free text
  and the flag would have to be closed by hand), and ``Device`` / ``DeviceUseStatement`` would assert device
  instances the EHPAD has not identified; the Observation records the fact without either;
- patient-state observation (reason of the return...) → ``Observation`` (coded value, or the text);
  the transfer act, the attached-documents checklist and the comment stay in the document (the filed
  DocumentReference holds it) and give no resource.

Each resource carries the extension ``{CANONICAL}/StructureDefinition/dui-received-entry`` (``document``: the
DocumentReference, ``section``: the LOINC code of the section, ``location``: the entry's path in the CDA) and,
when the entry has an id, an ``identifier`` made from it (``urn:ietf:rfc:3986`` + ``urn:uuid:``/``urn:oid:``, or
``urn:oid:<root>`` + extension), so that importing the same document twice can be detected. One ``Provenance``
per import: target = every resource, entity = the DocumentReference (role source), agent = the document's
author organization as a display (with its identifier when the document gives one), recorded = ``recorded``.
The extension is defined in ``fhir_profiles/definitions/StructureDefinition-dui-received-entry.json`` (its three
parts required), so profile validation checks it.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from dui.documents.received_model import (
    Coded,
    Device,
    Diagnosis,
    InstanceId,
    Item,
    ReceivedDocument,
    State,
    Treatment,
    system_uri,
)
from fhir_profiles import CANONICAL

SOURCE_EXTENSION = f"{CANONICAL}/StructureDefinition/dui-received-entry"
LOINC = "http://loinc.org"
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")

CLINICAL_ACTIVE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                               "code": "active", "display": "Active"}]}
ENCOUNTER_DIAGNOSIS = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category",
                                   "code": "encounter-diagnosis", "display": "Encounter Diagnosis"}]}
AUTHOR_AGENT = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                            "code": "author", "display": "Author"}]}


def to_resources(doc: ReceivedDocument, patient_ref: str, document_ref: str, encounter_ref: str | None,
                 recorded: str) -> list[tuple[str, dict[str, Any]]]:
    """The items of ``doc`` as ``(fullUrl, resource)`` pairs, the Provenance of the import last; empty when no
    item gives a resource (no Provenance of nothing)."""
    builder = _Builder(doc, patient_ref, document_ref, encounter_ref)
    pairs: list[tuple[str, dict[str, Any]]] = []
    for item in doc.items:
        resource = builder.resource(item)
        if resource is not None:
            pairs.append((f"urn:uuid:{uuid.uuid4()}", resource))
    if pairs:
        pairs.append((f"urn:uuid:{uuid.uuid4()}", provenance(doc, [url for url, _ in pairs], document_ref, recorded)))
    return pairs


class _Builder:
    def __init__(self, doc: ReceivedDocument, patient_ref: str, document_ref: str, encounter_ref: str | None) -> None:
        self.doc = doc
        self.subject = {"reference": patient_ref}
        self.document = {"reference": document_ref}
        self.encounter = {"reference": encounter_ref} if encounter_ref else None

    def resource(self, item: Item) -> dict[str, Any] | None:
        if isinstance(item, Diagnosis):
            return self.condition(item)
        if isinstance(item, Treatment):
            return self.medication(item)
        if isinstance(item, Device):
            return self.device(item)
        if isinstance(item, State) and not item.event:
            return self.state(item)
        return None

    def common(self, rtype: str, item: Item) -> dict[str, Any]:
        resource: dict[str, Any] = {"resourceType": rtype, "extension": [self.source(item)]}
        if item.entry_id is not None:
            resource["identifier"] = [identifier(item.entry_id)]
        return resource

    def source(self, item: Item) -> dict[str, Any]:
        section: dict[str, Any] = {"system": LOINC, "code": item.section}
        if item.title:
            section["display"] = item.title
        return {"url": SOURCE_EXTENSION, "extension": [
            {"url": "document", "valueReference": dict(self.document)},
            {"url": "section", "valueCoding": section},
            {"url": "location", "valueString": item.location},
        ]}

    def condition(self, item: Diagnosis) -> dict[str, Any]:
        r = self.common("Condition", item)
        r["clinicalStatus"] = CLINICAL_ACTIVE
        r["category"] = [ENCOUNTER_DIAGNOSIS]
        r["code"] = concept(item.code, item.text)
        r["subject"] = dict(self.subject)
        if self.encounter:
            r["encounter"] = dict(self.encounter)
        if item.start:
            r["onsetDateTime"] = item.start
        if item.end:
            r["abatementDateTime"] = item.end
        if self.doc.effective:
            r["recordedDate"] = self.doc.effective
        r["evidence"] = [{"detail": [dict(self.document)]}]
        return _clean(r)

    def medication(self, item: Treatment) -> dict[str, Any]:
        r = self.common("MedicationStatement", item)
        r["status"] = "active"
        r["medicationCodeableConcept"] = concept(item.product, item.text)
        r["subject"] = dict(self.subject)
        if self.encounter:
            r["context"] = dict(self.encounter)
        if item.start or item.end:
            r["effectivePeriod"] = {"start": item.start, "end": item.end}
        if self.doc.effective:
            r["dateAsserted"] = self.doc.effective
        source = self.informant()
        if source:
            r["informationSource"] = source
        r["derivedFrom"] = [dict(self.document)]
        dosage: dict[str, Any] = {}
        route_text = (item.route.text or item.route.display) if item.route else None
        text = " ; ".join(t for t in (item.dose, route_text, item.frequency) if t)
        if text:
            dosage["text"] = text
        if item.period is not None and item.period_unit:
            dosage["timing"] = {"repeat": {"period": _num(item.period), "periodUnit": item.period_unit}}
        if item.route:
            dosage["route"] = concept(item.route, None)
        if item.dose_low is not None or item.dose_high is not None:
            unit = {"unit": item.dose_unit} if item.dose_unit else {}
            if item.dose_low is not None and item.dose_high is not None and item.dose_low != item.dose_high:
                dose: dict[str, Any] = {"doseRange": {"low": {"value": _num(item.dose_low), **unit},
                                                      "high": {"value": _num(item.dose_high), **unit}}}
            else:
                value = item.dose_low if item.dose_low is not None else item.dose_high
                dose = {"doseQuantity": {"value": _num(value or 0), **unit}}
            dosage["doseAndRate"] = [dose]
        if dosage:
            r["dosage"] = [dosage]
        return _clean(r)

    def device(self, item: Device) -> dict[str, Any]:
        r = self.common("Observation", item)
        r["status"] = "final"
        r["code"] = concept(item.code, item.text)
        r["subject"] = dict(self.subject)
        if self.encounter:
            r["encounter"] = dict(self.encounter)
        when = item.time or self.doc.effective
        if when:
            r["effectiveDateTime"] = when
        if item.present is not None:
            r["valueBoolean"] = item.present
        elif item.value or item.detail:
            r["valueString"] = item.value or item.detail
        if item.site:
            r["bodySite"] = concept(item.site, None)
        r["derivedFrom"] = [dict(self.document)]
        return _clean(r)

    def state(self, item: State) -> dict[str, Any]:
        r = self.common("Observation", item)
        r["status"] = "final"
        r["code"] = concept(item.code, item.text if item.code is None or item.code.code is None else None)
        r["subject"] = dict(self.subject)
        if self.encounter:
            r["encounter"] = dict(self.encounter)
        if item.start and item.end:
            r["effectivePeriod"] = {"start": item.start, "end": item.end}
        elif item.start or self.doc.effective:
            r["effectiveDateTime"] = item.start or self.doc.effective
        if item.value is not None and item.value.code:
            r["valueCodeableConcept"] = concept(item.value, None)
        else:
            said = [item.value.text if item.value else None, item.value_text, item.detail]
            words = " : ".join(dict.fromkeys(t for t in said if t))
            if words:
                r["valueString"] = words
        r["derivedFrom"] = [dict(self.document)]
        return _clean(r)

    def informant(self) -> dict[str, Any] | None:
        author = self.doc.author
        if author is None or not (author.organization or author.name):
            return None
        ref: dict[str, Any] = {"type": "Organization" if author.organization else "Practitioner",
                               "display": author.organization or author.name}
        ident = author.organization_id if author.organization else author.id
        if ident is not None:
            ref["identifier"] = identifier(ident)
        return ref


def provenance(doc: ReceivedDocument, targets: list[str], document_ref: str, recorded: str) -> dict[str, Any]:
    """The import, once: what it created, from which document, on whose word."""
    author = doc.author
    who: dict[str, Any]
    if author is not None and author.organization:
        who = {"type": "Organization", "display": author.organization}
        if author.organization_id is not None:
            who["identifier"] = identifier(author.organization_id)
    elif author is not None and author.name:
        who = {"type": "Practitioner", "display": author.name}
    elif doc.custodian is not None and doc.custodian.name:
        who = {"type": "Organization", "display": doc.custodian.name}
    else:
        who = {"display": "auteur du document non nommé"}
    resource: dict[str, Any] = {
        "resourceType": "Provenance",
        "target": [{"reference": t} for t in targets],
        "recorded": recorded,
        "agent": [{"type": AUTHOR_AGENT, "who": who}],
        "entity": [{"role": "source", "what": {"reference": document_ref}}],
    }
    if doc.effective:
        resource["occurredDateTime"] = doc.effective
    return resource


def concept(coded: Coded | None, text: str | None) -> dict[str, Any]:
    """A CodeableConcept: the coding when there is a code, and the text (the narrative's, else the display)."""
    result: dict[str, Any] = {}
    if coded is not None and coded.code:
        coding: dict[str, Any] = {"code": coded.code}
        system = system_uri(coded.oid)
        if system:
            coding["system"] = system
        if coded.display:
            coding["display"] = coded.display
        result["coding"] = [coding]
    label = text or (coded.text or coded.display if coded else None)
    if label:
        result["text"] = label
    return result


def identifier(ii: InstanceId) -> dict[str, Any]:
    """A CDA II as a FHIR Identifier (http://hl7.org/fhir/R4/datatypes.html#Identifier, ``urn:ietf:rfc:3986``)."""
    if ii.extension:
        system = f"urn:oid:{ii.root}" if _OID.match(ii.root) else ii.root
        return {"system": system, "value": ii.extension}
    if _UUID.match(ii.root):
        return {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{ii.root.lower()}"}
    if _OID.match(ii.root):
        return {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{ii.root}"}
    return {"value": ii.root}


def _num(value: float) -> int | float:
    return int(value) if value == int(value) else value


def _clean(resource: dict[str, Any]) -> dict[str, Any]:
    """Drop the None members of the periods built above (FHIR has no nulls)."""
    for key in ("effectivePeriod",):
        if key in resource:
            resource[key] = {k: v for k, v in resource[key].items() if v is not None}
    return {k: v for k, v in resource.items() if v not in (None, {}, [])}
