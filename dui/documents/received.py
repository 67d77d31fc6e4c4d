"""Reading a received CDA R2 document (the FLUDR first) into plain values, then into FHIR resources.

A FLUDR (CI-SIS volet DLU-EHPAD 2022.01, "Fiche de liaison d'urgence – retour", templateId
``1.2.250.1.213.1.1.1.24``, code LOINC 74207-2) comes back from the emergency department with the resident.
``read_cda`` reads its header (document ids, the patient as the document names him, author, custodian,
encounter) and its content: exit diagnoses (11535-2), exit treatments (10183-2), prostheses and personal
belongings (46264-8), the patient-state section (42545-4), the attached-documents checklist (55107-7) and the
comment (55112-7). ``to_resources`` (``dui.documents.received_fhir``) turns the items into FHIR R4 resources.

Pure: no Flask, no database. The bytes are untrusted: they go through ``dui.fhir.xmlsafe`` (no DTD, no entity,
no network, size and depth limits), and a refusal is an ``Invalid`` (or ``TooLarge``) saying why. Nothing is
logged: the content is health data.

Conventions read in the official example and the FLUDR schematron (TestContenuCDA ``ExemplesCDA/
DLU-EHPAD-FLUDR_2022.01.xml``, ``schematrons/CI-SIS_DLU-EHPAD-FLUDR_2022.01.sch``): sections are found by
their LOINC code, or failing that by their CI-SIS/IHE templateId; a text given as ``<reference value="#id"/>``
is resolved in the section narrative (``#`` optional: the DLU example omits it), and when the referenced text
sits in a table cell, the other cells of its row become the item's ``detail`` ("Lunettes" / "oui"). An entry
whose every value is a ``nullFlavor``, or which is negated, produces no item but a ``Note``.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from lxml import etree

from dui.documents.received_fhir import to_resources
from dui.documents.received_model import (
    INS_OIDS,
    Attachment,
    Coded,
    Comment,
    Device,
    Diagnosis,
    Encounter,
    InstanceId,
    Item,
    NamedPatient,
    Note,
    Organization,
    Party,
    ReceivedDocument,
    State,
    Treatment,
)
from dui.errors import Invalid, TooLarge, Unprocessable
from dui.fhir.xmlsafe import MAX_BYTES, MAX_DEPTH, UnsafeXml, parse_untrusted

__all__ = ["ReceivedDocument", "read_cda", "to_resources"]

NS = "urn:hl7-org:v3"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
_N = {"h": NS}

# Document templateIds (DOMAIN.md §4.4; VSM 1.4 and XDS-SD from the copied examples), most specific first.
KINDS = (
    ("1.2.250.1.213.1.1.1.24", "FLUDR"),
    ("1.2.250.1.213.1.1.1.23", "FLUDT"),
    ("1.2.250.1.213.1.1.1.22", "DLU"),
    ("1.2.250.1.213.1.1.1.13", "VSM"),
    ("1.3.6.1.4.1.19376.1.2.20", "N1"),  # IHE XDS-SD: a non-structured body (PDF...)
)

# FLUDR sections: LOINC code → the CI-SIS / IHE templateIds that also name it.
DIAGNOSIS, TREATMENTS, DEVICES = "11535-2", "10183-2", "46264-8"
STATE, ATTACHED, COMMENT = "42545-4", "55107-7", "55112-7"
SECTION_TEMPLATES = {
    "1.2.250.1.213.1.1.2.133": DIAGNOSIS, "1.3.6.1.4.1.19376.1.5.3.1.3.7": DIAGNOSIS,
    "1.2.250.1.213.1.1.2.146": TREATMENTS, "1.3.6.1.4.1.19376.1.5.3.1.3.22": TREATMENTS,
    "1.2.250.1.213.1.1.2.53": DEVICES,
    "1.2.250.1.213.1.1.2.163": STATE, "1.3.6.1.4.1.19376.1.7.3.1.1.13.7": STATE,
    "1.2.250.1.213.1.1.2.37": ATTACHED,
    "1.2.250.1.213.1.1.2.73": COMMENT, "1.3.6.1.4.1.19376.1.4.1.2.16": COMMENT,
}
PROBLEM_TEMPLATES = {"1.2.250.1.213.1.1.3.37", "1.3.6.1.4.1.19376.1.5.3.1.4.5", "2.16.840.1.113883.10.20.1.28"}
ATTACHED_TYPE_TEMPLATE = "1.2.250.1.213.1.1.3.48.18"

GENDERS = {"F": "female", "M": "male", "UN": "other", "U": "unknown"}
# PIVL_TS period units: UCUM, and the French ones the official example writes ("J").
PERIOD_UNITS = {"s": "s", "min": "min", "h": "h", "d": "d", "j": "d", "wk": "wk", "sem": "wk", "mo": "mo",
                "a": "a"}
PERIOD_WORDS = {"s": ("seconde", "secondes"), "min": ("minute", "minutes"), "h": ("heure", "heures"),
                "d": ("jour", "jours"), "wk": ("semaine", "semaines"), "mo": ("mois", "mois"), "a": ("an", "ans")}
NO_VALUE = ("NI", "UNK", "NA", "NASK", "ASKU", "NAV", "MSK", "OTH", "NINF", "PINF")

_TS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d+)?([+-]\d{4}|Z)?$")


def read_cda(xml: bytes, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH,
             timezone: str = "Europe/Paris") -> ReceivedDocument:
    """Read a CDA R2 document. ``Invalid`` when the bytes are not one safe, well-formed CDA document (DTD,
    entities, not UTF-8, another root element), ``TooLarge`` beyond ``max_bytes`` / ``max_depth``,
    ``Unprocessable`` when it lacks what makes it usable (its id, its patient). A time without an offset is
    read in ``timezone`` (CI-SIS requires the offset; the service's zone is the best guess)."""
    if not isinstance(xml, bytes | bytearray):
        raise Invalid("The CDA document must be given as bytes")
    if len(xml) > max_bytes:
        raise TooLarge(f"The CDA document is larger than {max_bytes} bytes")
    try:
        root = parse_untrusted(bytes(xml), max_bytes=max_bytes, max_depth=max_depth)
    except UnsafeXml as exc:
        if "nested deeper" in str(exc):
            raise TooLarge(f"The CDA document is refused: {exc}") from None
        raise Invalid(f"The CDA document is refused: {exc}") from None
    if root.tag != f"{{{NS}}}ClinicalDocument":
        name = etree.QName(root).localname
        if name == "ClinicalDocument":
            raise Invalid(f"Not a CDA R2 document: <ClinicalDocument> is not in the CDA namespace {NS}")
        raise Invalid(f"Not a CDA R2 document: the root element is <{name}>, not <ClinicalDocument>")
    return _Reader(root, ZoneInfo(timezone)).document()


class _Reader:
    def __init__(self, root: etree._Element, zone: ZoneInfo) -> None:
        self.root = root
        self.zone = zone
        self.notes: list[Note] = []

    # -- header ---------------------------------------------------------------------------------------------

    def document(self) -> ReceivedDocument:
        r = self.root
        templates = tuple(i for i in (_ii(t) for t in r.findall("h:templateId", _N)) if i)
        roots = {t.root for t in templates}
        kind = next((name for oid, name in KINDS if oid in roots), "CDA")
        doc_id = _ii(r.find("h:id", _N))
        if doc_id is None:
            raise Unprocessable("The CDA document has no id (ClinicalDocument/id)")
        version = _attr(r.find("h:versionNumber", _N), "value")
        items: list[Item] = []
        if kind == "FLUDR":
            items = self.fludr_items()
        return ReceivedDocument(
            kind=kind, template_ids=templates, code=self.coded(r.find("h:code", _N)),
            title=_text(r.find("h:title", _N)),
            id=doc_id, set_id=_ii(r.find("h:setId", _N)),
            version=int(version) if version and version.isdigit() else None,
            effective=self.ts(r.find("h:effectiveTime", _N)), patient=self.patient(),
            author=self.party(r.find("h:author/h:assignedAuthor", _N), r.find("h:author/h:time", _N)),
            custodian=self.organization(
                r.find("h:custodian/h:assignedCustodian/h:representedCustodianOrganization", _N)),
            encounter=self.encounter(), items=tuple(items), notes=tuple(self.notes))

    def patient(self) -> NamedPatient:
        role = self.root.find("h:recordTarget/h:patientRole", _N)
        if role is None:
            raise Unprocessable("The CDA document names no patient (recordTarget/patientRole)")
        ins = ins_oid = None
        others: list[InstanceId] = []
        for element in role.findall("h:id", _N):
            ident = _ii(element)
            if ident is None:
                continue
            if ident.root in INS_OIDS and ident.extension and ins is None:
                ins, ins_oid = ident.extension, ident.root
            else:
                others.append(ident)
        person = role.find("h:patient", _N)
        names: dict[tuple[str, str], str] = {}
        birth_given: list[str] = []
        name = person.find("h:name", _N) if person is not None else None
        if name is not None:
            for part in name:
                if not isinstance(part.tag, str):
                    continue
                local, value = etree.QName(part).localname, _text(part)
                if local not in ("family", "given") or not value:
                    continue
                qualifier = (part.get("qualifier") or "").split()
                key = "BR" if "BR" in qualifier else "CL" if "CL" in qualifier else ""
                if local == "given" and not key:
                    birth_given.append(value)
                names.setdefault((local, key), value)
        gender = _attr(person.find("h:administrativeGenderCode", _N), "code") if person is not None else None
        birth = _attr(person.find("h:birthTime", _N), "value") if person is not None else None
        birth_family = names.get(("family", "BR")) or names.get(("family", ""))
        first_given = names.get(("given", "BR")) or (birth_given[0].split()[0] if birth_given else None)
        return NamedPatient(
            ins=ins, ins_oid=ins_oid, ins_kind=INS_OIDS.get(ins_oid) if ins_oid else None, ids=tuple(others),
            birth_family=birth_family, used_family=names.get(("family", "CL")),
            birth_given=" ".join(birth_given) or first_given, first_given=first_given,
            used_given=names.get(("given", "CL")), birth_date=_date(birth), gender_code=gender,
            gender=GENDERS.get(gender or "", "unknown") if gender else None)

    def party(self, entity: etree._Element | None, time: etree._Element | None = None) -> Party | None:
        """An assignedAuthor / assignedEntity: the person (or the software), and the organization."""
        if entity is None:
            return None
        person = entity.find("h:assignedPerson/h:name", _N)
        device = entity.find("h:assignedAuthoringDevice", _N)
        name = _person_name(person)
        if name is None and device is not None:
            name = _text(device.find("h:softwareName", _N)) or _text(device.find("h:manufacturerModelName", _N))
        org = self.organization(entity.find("h:representedOrganization", _N))
        ids = [i for i in (_ii(e) for e in entity.findall("h:id", _N)) if i]
        return Party(name=name, id=ids[0] if ids else None, profession=self.coded(entity.find("h:code", _N)),
                     organization=org.name if org else None, organization_id=org.id if org else None,
                     time=self.ts(time))

    def organization(self, element: etree._Element | None) -> Organization | None:
        if element is None:
            return None
        ids = [i for i in (_ii(e) for e in element.findall("h:id", _N)) if i]
        org = Organization(name=_text(element.find("h:name", _N)), id=ids[0] if ids else None)
        return org if org.name or org.id else None

    def encounter(self) -> Encounter | None:
        enc = self.root.find("h:componentOf/h:encompassingEncounter", _N)
        if enc is None:
            return None
        start, end = self.interval(enc.find("h:effectiveTime", _N))
        facility = enc.find("h:location/h:healthCareFacility", _N)
        location = provider = None
        if facility is not None:
            location = _text(facility.find("h:location/h:name", _N))
            provider = self.organization(facility.find("h:serviceProviderOrganization", _N))
            location = location or (provider.name if provider else None)
        return Encounter(
            id=_ii(enc.find("h:id", _N)), code=self.coded(enc.find("h:code", _N)), start=start, end=end,
            facility=self.coded(facility.find("h:code", _N)) if facility is not None else None,
            location=location, provider=provider,
            responsible=self.party(enc.find("h:responsibleParty/h:assignedEntity", _N)))

    # -- body -----------------------------------------------------------------------------------------------

    def fludr_items(self) -> list[Item]:
        items: list[Item] = []
        readers = {DIAGNOSIS: self.diagnoses, TREATMENTS: self.treatments, DEVICES: self.devices,
                   STATE: self.state, ATTACHED: self.attached, COMMENT: self.comment}
        for section in self.root.iterfind("h:component/h:structuredBody/h:component/h:section", _N):
            code = _section_code(section)
            if code in readers:
                items.extend(readers[code](_Section(self, section, code)))
        return items

    def diagnoses(self, s: _Section) -> list[Item]:
        items: list[Item] = []
        entries = s.entries()
        for entry, content in entries:
            problems = [o for o in content.iter(f"{{{NS}}}observation") if _templates(o) & PROBLEM_TEMPLATES]
            if not problems and etree.QName(content).localname == "observation":
                problems = [content]
            if not problems:
                self.note(s, entry, "no problem observation in the entry")
            for obs in problems:
                if obs.get("negationInd") == "true":
                    self.note(s, obs, "negated: the problem is stated absent")
                    continue
                value = self.coded(obs.find("h:value", _N), s)
                text, detail = s.text_of(obs.find("h:text", _N))
                if value is not None and value.code is None and value.text is None and text is None:
                    value = None
                if value is None and text is None:
                    self.note(s, obs, "no information (nullFlavor, no text)")
                    continue
                start, end = self.interval(obs.find("h:effectiveTime", _N))
                items.append(Diagnosis(**s.origin(obs),
                                       text=text or (value.text or value.display if value else None), detail=detail,
                                       code=value if value and value.code else None, start=start, end=end))
        if not entries:
            items.extend(Diagnosis(section=s.code, title=s.title, location=loc, text=text, coded=False)
                         for loc, text in s.narrative_lines())
        return items

    def treatments(self, s: _Section) -> list[Item]:
        items: list[Item] = []
        entries = s.entries()
        for entry, content in entries:
            administrations = list(content.iter(f"{{{NS}}}substanceAdministration"))
            if not administrations:
                self.note(s, entry, "no substanceAdministration in the entry")
            for sa in administrations:
                if sa is not content and _ancestor_is_admin(sa, content):
                    continue  # a nested administration (a dose step) belongs to its parent
                item = self.treatment(s, sa)
                if item is not None:
                    items.append(item)
        if not entries:
            items.extend(Treatment(section=s.code, title=s.title, location=loc, text=text, coded=False)
                         for loc, text in s.narrative_lines())
        return items

    def treatment(self, s: _Section, sa: etree._Element) -> Treatment | None:
        if sa.get("negationInd") == "true":
            self.note(s, sa, "negated: the treatment is stated not given")
            return None
        material = sa.find("h:consumable/h:manufacturedProduct/h:manufacturedMaterial", _N)
        product = self.coded(material.find("h:code", _N), s) if material is not None else None
        name = _text(material.find("h:name", _N)) if material is not None else None
        text, detail = s.text_of(sa.find("h:text", _N))
        label = name or (product.text or product.display if product else None) or text
        if label is None:
            self.note(s, sa, "no information (no product code, name or text)")
            return None
        start = end = None
        period = unit = None
        for et in sa.findall("h:effectiveTime", _N):
            xtype = _xsi_type(et)
            if xtype == "PIVL_TS":
                p = et.find("h:period", _N)
                value, raw_unit = _number(_attr(p, "value")), (_attr(p, "unit") or "").lower()
                if value is not None and raw_unit in PERIOD_UNITS:
                    period, unit = value, PERIOD_UNITS[raw_unit]
            elif xtype in ("", "IVL_TS"):
                if et.find("h:low", _N) is not None or et.find("h:high", _N) is not None:
                    start, end = self.interval(et)
                elif start is None:
                    start = self.ts(et)
        dose_el = sa.find("h:doseQuantity", _N)
        low = high = None
        dose_unit: str | None = None
        if dose_el is not None:
            unit_text = None
            original = dose_el.find("h:translation/h:originalText", _N)
            if original is not None:
                unit_text = s.text_of(original)[0]
            if dose_el.get("value") is not None:
                low = high = _number(dose_el.get("value"))
                dose_unit = unit_text or _plain_unit(dose_el.get("unit"))
            else:
                low = _number(_attr(dose_el.find("h:low", _N), "value"))
                high = _number(_attr(dose_el.find("h:high", _N), "value"))
                dose_unit = unit_text or _plain_unit(_attr(dose_el.find("h:low", _N), "unit"))
        route = self.coded(sa.find("h:routeCode", _N), s)
        frequency = None
        if period is not None and unit is not None:
            one, many = PERIOD_WORDS[unit]
            frequency = f"par {one}" if period == 1 else f"toutes les {_num_text(period)} {many}"
        return Treatment(
            **s.origin(sa), text=label,
            detail=detail, product=product if product and product.code else None, start=start, end=end,
            dose=_dose_text(low, high, dose_unit), dose_low=low, dose_high=high, dose_unit=dose_unit,
            route=route if route and (route.code or route.text) else None, frequency=frequency,
            period=period, period_unit=unit)

    def devices(self, s: _Section) -> list[Item]:
        items: list[Item] = []
        entries = s.entries()
        for entry, obs in entries:
            if etree.QName(obs).localname != "observation":
                self.note(s, entry, "not an observation")
                continue
            code = self.coded(obs.find("h:code", _N), s)
            text, detail = s.text_of(obs.find("h:text", _N))
            value_el = obs.find("h:value", _N)
            present: bool | None = None
            value_text = None
            if value_el is not None and _xsi_type(value_el) == "BL":
                present = {"true": True, "false": False}.get(value_el.get("value") or "")
            elif value_el is not None:
                value = self.coded(value_el, s)
                value_text = value.text or value.display if value else None
            if obs.get("negationInd") == "true" and present is not None:
                present = not present
            if (code is None or code.code is None) and text is None:
                self.note(s, obs, "no information (nullFlavor, no text)")
                continue
            site = self.coded(obs.find("h:targetSiteCode", _N), s)
            items.append(Device(**s.origin(obs),
                                text=text or (code.display if code else None), detail=detail, code=code,
                                present=present, value=value_text if value_text != text else None,
                                site=site if site and site.code else None,
                                time=self.ts(obs.find("h:effectiveTime", _N))))
        if not entries:
            items.extend(Device(section=s.code, title=s.title, location=loc, text=text, coded=False)
                         for loc, text in s.narrative_lines())
        return items

    def state(self, s: _Section) -> list[Item]:
        items: list[Item] = []
        entries = s.entries()
        for entry, content in entries:
            local = etree.QName(content).localname
            if local not in ("observation", "act", "encounter"):
                self.note(s, entry, f"a {local} entry is not read")
                continue
            if content.get("negationInd") == "true":
                self.note(s, content, "negated")
                continue
            code = self.coded(content.find("h:code", _N), s)
            text, detail = s.text_of(content.find("h:text", _N))
            value_el = content.find("h:value", _N)
            value = self.coded(value_el, s) if value_el is not None else None
            value_text = None
            if value_el is not None and _xsi_type(value_el) in ("PQ", "INT", "REAL", "BL", "ST"):
                value = None
                value_text = (" ".join(filter(None, (value_el.get("value"), value_el.get("unit")))) or _text(value_el))
            if local != "observation":
                names = [_text(n) for n in content.iterfind(".//h:participantRole/h:playingEntity/h:name", _N)]
                value_text = "; ".join(n for n in names if n) or None
            start, end = self.interval(content.find("h:effectiveTime", _N))
            if code is None and value is None and value_text is None and text is None:
                self.note(s, content, "no information (nullFlavor, no text)")
                continue
            items.append(State(**s.origin(content),
                               text=text, detail=detail, code=code,
                               value=value if value and (value.code or value.text) else None,
                               value_text=value_text, start=start, end=end, event=local != "observation"))
        if not entries:
            items.extend(State(section=s.code, title=s.title, location=loc, text=text, coded=False)
                         for loc, text in s.narrative_lines())
        return items

    def attached(self, s: _Section) -> list[Item]:
        items: list[Item] = []
        for entry, content in s.entries():
            kinds = [o for o in content.iter(f"{{{NS}}}observation") if ATTACHED_TYPE_TEMPLATE in _templates(o)]
            if not kinds:
                self.note(s, entry, "no document type observation")
                continue
            obs = kinds[0]
            value = self.coded(obs.find("h:value", _N), s)
            text, detail = s.text_of(obs.find("h:text", _N))
            if (value is None or value.code is None) and text is None:
                self.note(s, obs, "no information (nullFlavor, no text)")
                continue
            media = content.find(".//h:observationMedia/h:value", _N)
            items.append(Attachment(**s.origin(content),
                                    text=text or (value.display if value else None), detail=detail, code=value,
                                    media_type=media.get("mediaType") if media is not None else None,
                                    embedded=media is not None and bool((media.text or "").strip())))
        return items

    def comment(self, s: _Section) -> list[Item]:
        text = _text(s.element.find("h:text", _N))
        if not text:
            self.note(s, s.element, "empty comment")
            return []
        return [Comment(section=s.code, title=s.title, location=_path(s.element.find("h:text", _N)), text=text,
                        coded=False)]

    # -- values ---------------------------------------------------------------------------------------------

    def coded(self, element: etree._Element | None, s: _Section | None = None) -> Coded | None:
        """A CD/CE element: ``None`` when absent, or when a nullFlavor leaves neither code nor text."""
        if element is None:
            return None
        original = element.find("h:originalText", _N)
        text = s.text_of(original)[0] if s is not None and original is not None else _text(original)
        code = None if element.get("nullFlavor") else element.get("code")
        if code is None and text is None:
            return None
        return Coded(code=code, display=element.get("displayName"), oid=element.get("codeSystem"), text=text)

    def interval(self, element: etree._Element | None) -> tuple[str | None, str | None]:
        if element is None:
            return None, None
        if element.get("value"):
            return self.ts(element), None
        return self.ts(element.find("h:low", _N)), self.ts(element.find("h:high", _N))

    def ts(self, element: etree._Element | None) -> str | None:
        """A CDA TS (``value`` attribute) as a FHIR date or dateTime; None when absent or a nullFlavor."""
        return cda_time(_attr(element, "value"), self.zone) if element is not None else None

    def note(self, s: _Section, element: etree._Element, reason: str) -> None:
        self.notes.append(Note(section=s.code, location=_path(element), reason=reason))


class _Section:
    """One section: its code and title, its entries, its narrative ``ID`` index."""

    def __init__(self, reader: _Reader, element: etree._Element, code: str) -> None:
        self.reader = reader
        self.element = element
        self.code = code
        self.title = _text(element.find("h:title", _N))
        narrative = element.find("h:text", _N)
        self.ids: dict[str, etree._Element] = {}
        if narrative is not None:
            for node in narrative.iter():
                if isinstance(node.tag, str) and node.get("ID"):
                    self.ids.setdefault(node.get("ID") or "", node)

    def origin(self, element: etree._Element) -> dict[str, Any]:
        """The traceability members of an item read from ``element``: section, title, location, entry id."""
        return {"section": self.code, "title": self.title, "location": _path(element),
                "entry_id": _ii(element.find("h:id", _N))}

    def entries(self) -> list[tuple[etree._Element, etree._Element]]:
        """Each entry with its one clinical statement (observation, act, substanceAdministration, organizer...)."""
        found = []
        for entry in self.element.findall("h:entry", _N):
            content = next((c for c in entry if isinstance(c.tag, str)), None)
            if content is None:
                self.reader.note(self, entry, "empty entry")
                continue
            found.append((entry, content))
        return found

    def text_of(self, element: etree._Element | None) -> tuple[str | None, str | None]:
        """The text of a ``text`` / ``originalText`` element: its reference resolved in the narrative (with the
        rest of the table row as detail), else its own text."""
        if element is None:
            return None, None
        reference = element.find("h:reference", _N)
        if reference is not None:
            target = (reference.get("value") or "").removeprefix("#")
            node = self.ids.get(target) if target else None
            if node is None:
                return _text(element), None
            return _text(node), _row_rest(node)
        return _text(element), None

    def narrative_lines(self) -> list[tuple[str, str]]:
        """The narrative as items, when there is no entry: each body row of its tables, each list item, each
        paragraph, else the whole text; with the location of each."""
        narrative = self.element.find("h:text", _N)
        if narrative is None:
            return []
        lines: list[tuple[str, str]] = []
        rows = [r for r in narrative.iter(f"{{{NS}}}tr") if r.getparent() is not None
                and etree.QName(r.getparent()).localname != "thead" and r.find("h:th", _N) is None]
        units = rows or list(narrative.iter(f"{{{NS}}}item")) or list(narrative.iter(f"{{{NS}}}paragraph"))
        for unit in units:
            cells = [c for c in unit if isinstance(c.tag, str) and etree.QName(c).localname == "td"]
            text = " ; ".join(t for t in (_text(c) for c in cells) if t) if cells else _text(unit)
            if text:
                lines.append((_path(unit), text))
        if not units:
            text = _text(narrative)
            if text:
                lines.append((_path(narrative), text))
        return lines


# -- helpers ----------------------------------------------------------------------------------------------------


def cda_time(value: str | None, zone: ZoneInfo) -> str | None:
    """``YYYY[MM[DD[HH[MM[SS[.S]]]]]][±ZZZZ]`` as FHIR: a date when there is no hour, else a dateTime with its
    offset (the one written, or that of ``zone`` at that moment). None for what does not parse."""
    if not value:
        return None
    m = _TS.match(value.strip())
    if not m:
        return None
    year, month, day, hour, minute, second, fraction, offset = m.groups()
    if hour is None:
        return "-".join(p for p in (year, month, day) if p)
    if month is None or day is None:
        return None
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute or 0), int(second or 0))
    except ValueError:
        return None
    if offset in (None, "Z"):
        tz = "+00:00" if offset == "Z" else moment.replace(tzinfo=zone).strftime("%z")
    else:
        tz = offset
    tz = tz if ":" in tz else f"{tz[:3]}:{tz[3:]}"
    return f"{moment:%Y-%m-%dT%H:%M:%S}{fraction or ''}{tz}"


def _date(value: str | None) -> str | None:
    if not value or not re.match(r"^\d{4}(\d{2}(\d{2})?)?", value):
        return None
    digits = value[:8]
    return "-".join(p for p in (digits[:4], digits[4:6], digits[6:8]) if p)


def _text(element: etree._Element | None) -> str | None:
    if element is None:
        return None
    text = " ".join("".join(element.itertext()).split())
    return text or None


def _attr(element: etree._Element | None, name: str) -> str | None:
    if element is None or element.get("nullFlavor"):
        return None
    return element.get(name) or None


def _ii(element: etree._Element | None) -> InstanceId | None:
    if element is None or element.get("nullFlavor") or not element.get("root"):
        return None
    return InstanceId(root=element.get("root") or "", extension=element.get("extension") or None)


def _xsi_type(element: etree._Element) -> str:
    """The local part of ``xsi:type`` ("IVL_TS"), empty when absent."""
    return (element.get(XSI_TYPE) or "").split(":")[-1]


def _templates(element: etree._Element) -> set[str]:
    return {t.get("root") or "" for t in element.findall("h:templateId", _N)}


def _section_code(section: etree._Element) -> str | None:
    code = section.find("h:code", _N)
    if code is not None and code.get("code") in (DIAGNOSIS, TREATMENTS, DEVICES, STATE, ATTACHED, COMMENT):
        return str(code.get("code"))
    return next((SECTION_TEMPLATES[t] for t in _templates(section) if t in SECTION_TEMPLATES), None)


def _person_name(name: etree._Element | None) -> str | None:
    if name is None:
        return None
    parts: dict[str, list[str]] = {}
    for part in name:
        if isinstance(part.tag, str) and (value := _text(part)):
            parts.setdefault(etree.QName(part).localname, []).append(value)
    if not parts:
        return _text(name)
    return " ".join(parts.get("given", []) + parts.get("family", [])) or _text(name)


def _row_rest(node: etree._Element) -> str | None:
    """The other cells of the table row ``node`` sits in, joined; None outside a table."""
    cell = node
    while cell is not None and etree.QName(cell).localname not in ("td", "th"):
        cell = cell.getparent()
        if cell is None or not isinstance(cell.tag, str) or etree.QName(cell).localname == "text":
            return None
    row = cell.getparent()
    if row is None:
        return None
    rest = [_text(c) for c in row if c is not cell and isinstance(c.tag, str)]
    return " ; ".join(t for t in rest if t) or None


def _path(element: etree._Element | None) -> str:
    """``/ClinicalDocument/component/.../entry[2]/observation``: local names, an index where a name repeats."""
    steps: list[str] = []
    node = element
    while node is not None:
        name = etree.QName(node).localname
        parent = node.getparent()
        if parent is not None:
            same = [c for c in parent if isinstance(c.tag, str) and c.tag == node.tag]
            if len(same) > 1:
                name = f"{name}[{same.index(node) + 1}]"
        steps.append(name)
        node = parent
    return "/" + "/".join(reversed(steps))


def _ancestor_is_admin(sa: etree._Element, stop: etree._Element) -> bool:
    node = sa.getparent()
    while node is not None and node is not stop.getparent():
        if node.tag == f"{{{NS}}}substanceAdministration":
            return True
        node = node.getparent()
    return False


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _num_text(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value).replace(".", ",")


def _plain_unit(unit: str | None) -> str | None:
    """A UCUM unit worth printing: not ``1`` nor an annotation such as ``{count}``."""
    if not unit or unit == "1" or (unit.startswith("{") and unit.endswith("}")):
        return None
    return unit


def _dose_text(low: float | None, high: float | None, unit: str | None) -> str | None:
    if low is None and high is None:
        return None
    if low is not None and high is not None and low != high:
        amount = f"de {_num_text(low)} à {_num_text(high)}"
    else:
        amount = _num_text(low if low is not None else high)  # type: ignore[arg-type]
    return f"{amount} {unit}" if unit else amount
