"""What a received CDA says, as plain values: the model ``dui.documents.received`` fills and
``dui.documents.received_fhir`` turns into FHIR resources.

Every item keeps the section it came from (LOINC code and title) and its location in the document, an
XPath-like path such as ``/ClinicalDocument/component/structuredBody/component[2]/section/entry[1]/act``
(an index only where an element has siblings of the same name), so that what lands in the record can be
traced back to the exact entry of the exact document.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

# CDA codeSystem OIDs with a FHIR system URI (http://hl7.org/fhir/R4/terminologies-systems.html); any other
# OID becomes ``urn:oid:<oid>`` (http://hl7.org/fhir/R4/references.html#identifiers).
SYSTEM_URIS = {
    "2.16.840.1.113883.6.3": "http://hl7.org/fhir/sid/icd-10",
    "2.16.840.1.113883.6.96": "http://snomed.info/sct",
    "2.16.840.1.113883.6.1": "http://loinc.org",
    "2.16.840.1.113883.6.73": "http://www.whocc.no/atc",
    "2.16.840.1.113883.6.8": "http://unitsofmeasure.org",
}

# Matricule INS roots (FR Core fr-core-patient-ins; DOMAIN.md §1.2): NIR, NIA, test and demo identities.
INS_OIDS = {
    "1.2.250.1.213.1.4.8": "NIR",
    "1.2.250.1.213.1.4.9": "NIA",
    "1.2.250.1.213.1.4.10": "TEST",
    "1.2.250.1.213.1.4.11": "DEMO",
}


def system_uri(oid: str | None) -> str | None:
    """The FHIR ``system`` of a CDA ``codeSystem`` OID (``None`` stays ``None``)."""
    if not oid:
        return None
    return SYSTEM_URIS.get(oid, f"urn:oid:{oid}")


@dataclass(frozen=True)
class Coded:
    """A CD/CE value: ``code`` may be None when only the text is given (``nullFlavor`` + ``originalText``)."""

    code: str | None
    display: str | None
    oid: str | None  # the CDA codeSystem
    text: str | None = None  # originalText, resolved in the narrative

    @property
    def system(self) -> str | None:
        return system_uri(self.oid)


@dataclass(frozen=True)
class InstanceId:
    """A CDA ``II``: ``root`` alone (a UUID or an OID naming the thing) or ``root`` + ``extension``."""

    root: str
    extension: str | None = None


@dataclass(frozen=True)
class NamedPatient:
    """The patient as the document names him (``recordTarget/patientRole``), not as the record knows him.

    ``ins`` / ``ins_oid`` / ``ins_kind`` (NIR, NIA, TEST, DEMO): the matricule INS when one of the ids has an
    INS root; ``ids``: every other id with its root (the sender's IPP...). Names: ``birth_family`` (qualifier
    BR), ``used_family`` (CL), ``birth_given`` (the given names without qualifier: the birth list),
    ``first_given`` (BR), ``used_given`` (CL). ``gender`` is the FHIR code of ``administrativeGenderCode``."""

    ins: str | None
    ins_oid: str | None
    ins_kind: str | None
    ids: tuple[InstanceId, ...]
    birth_family: str | None
    used_family: str | None
    birth_given: str | None
    first_given: str | None
    used_given: str | None
    birth_date: str | None  # FHIR date
    gender_code: str | None  # as written: F, M, U, UN
    gender: str | None  # female, male, other, unknown


@dataclass(frozen=True)
class Party:
    """An author, a legal authenticator or a responsible party: the person (``name``, ``id`` such as the RPPS
    idNat ``1.2.250.1.71.4.2.1``) and the organization she acts for (``organization``, ``organization_id``
    such as the FINESS idNatSt ``1.2.250.1.71.4.2.2``). A software author has only ``name``."""

    name: str | None
    id: InstanceId | None
    profession: Coded | None
    organization: str | None
    organization_id: InstanceId | None
    time: str | None = None  # FHIR dateTime


@dataclass(frozen=True)
class Organization:
    name: str | None
    id: InstanceId | None


@dataclass(frozen=True)
class Encounter:
    """``componentOf/encompassingEncounter``: when, where (``facility``: healthCareFacility/code, ``location``:
    its location name or service provider name), who was responsible."""

    id: InstanceId | None
    code: Coded | None
    start: str | None
    end: str | None
    facility: Coded | None
    location: str | None
    provider: Organization | None
    responsible: Party | None


@dataclass(frozen=True, kw_only=True)
class Item:
    """One piece of content: the section (LOINC ``section``, its ``title``), where (``location``), the entry
    id when it has one, its text as the narrative shows it and the rest of its table row (``detail``)."""

    section: str
    title: str | None
    location: str
    entry_id: InstanceId | None = None
    text: str | None = None
    detail: str | None = None
    coded: bool = True  # False: read from the narrative, no structured entry behind it


@dataclass(frozen=True, kw_only=True)
class Diagnosis(Item):
    """An exit diagnosis (section 11535-2, FR-Probleme entries)."""

    code: Coded | None = None
    start: str | None = None
    end: str | None = None


@dataclass(frozen=True, kw_only=True)
class Treatment(Item):
    """An exit treatment (section 10183-2, FR-Traitement entries): the product, dose, route and frequency as
    text (``dose``, ``frequency``) and as numbers where the entry gives them, the period."""

    product: Coded | None = None
    start: str | None = None
    end: str | None = None
    dose: str | None = None
    dose_low: float | None = None
    dose_high: float | None = None
    dose_unit: str | None = None
    route: Coded | None = None
    frequency: str | None = None
    period: float | None = None
    period_unit: str | None = None  # UCUM: s, min, h, d, wk, mo, a


@dataclass(frozen=True, kw_only=True)
class Device(Item):
    """A prosthesis or personal belonging (section 46264-8): ``present`` True when the resident has it with
    him, False when he came back without it, None when the entry says something else (``value`` text)."""

    code: Coded | None = None
    present: bool | None = None
    value: str | None = None
    site: Coded | None = None
    time: str | None = None


@dataclass(frozen=True, kw_only=True)
class State(Item):
    """An observation or an event of the patient-state section (42545-4): reason of the return, transfer..."""

    code: Coded | None = None
    value: Coded | None = None
    value_text: str | None = None
    start: str | None = None
    end: str | None = None
    event: bool = False  # an act (a transfer), not an observation


@dataclass(frozen=True, kw_only=True)
class Attachment(Item):
    """A line of the attached-documents checklist (55107-7): which document, and whether its content is
    embedded (``media_type`` of the observationMedia; the content itself is not read here)."""

    code: Coded | None = None
    media_type: str | None = None
    embedded: bool = False


@dataclass(frozen=True, kw_only=True)
class Comment(Item):
    """The free-text comment (55112-7)."""


ItemT = TypeVar("ItemT", bound=Item)


@dataclass(frozen=True)
class Note:
    """An entry that produced no item, and why ("no information", nullFlavor, negated...). No values."""

    section: str
    location: str
    reason: str


@dataclass(frozen=True)
class ReceivedDocument:
    """A received CDA R2 document: header, and for a FLUDR its items (other kinds: none, their sections are not
    read). ``kind``: FLUDR, FLUDT, DLU, N1, VSM or CDA, from the templateIds."""

    kind: str
    template_ids: tuple[InstanceId, ...]
    code: Coded | None
    title: str | None
    id: InstanceId
    set_id: InstanceId | None
    version: int | None
    effective: str | None  # FHIR dateTime with its offset
    patient: NamedPatient
    author: Party | None
    custodian: Organization | None
    encounter: Encounter | None
    items: tuple[Item, ...] = ()
    notes: tuple[Note, ...] = ()

    def of(self, kind: type[ItemT]) -> list[ItemT]:
        """The items of one class (``doc.of(Diagnosis)``)."""
        return [item for item in self.items if isinstance(item, kind)]
