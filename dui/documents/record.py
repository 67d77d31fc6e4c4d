"""What a clinical document shows of a resident: the record read once into plain values.

The CDA builders (``dui.documents.cda``) and the PDF renderer (``dui.documents.pdf``) read these values and
nothing else, so the structured document and its printed form cannot disagree. ``dui.documents.extract``
fills them from the FHIR record; every item keeps the reference of the resource it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime


@dataclass(frozen=True)
class Code:
    """A coded value: ``system`` is the FHIR system URI, ``oid`` its CDA codeSystem when one is known."""

    code: str
    display: str
    system: str | None = None
    oid: str | None = None


@dataclass(frozen=True)
class Item:
    """One line of a section: what it says, its code when the record has one, when, and where it came from."""

    text: str
    code: Code | None = None
    start: str | None = None  # FHIR date or dateTime as written
    end: str | None = None
    detail: str | None = None  # dosage, reaction, criticality, value and unit...
    source: str | None = None  # "Type/id" of the resource


@dataclass(frozen=True)
class Identity:
    """The identity traits RNIV requires printed, and the identifiers a document may carry.

    ``ins`` is the matricule INS only when the identity is qualified (the sharing gate decided); otherwise
    None and the document names the resident by ``local_id``."""

    birth_family: str
    first_given: str
    birth_given: str  # the whole birth list of given names
    used_family: str | None
    used_given: str | None
    birth_date: date
    sex: str  # FHIR administrative gender: female, male, other, unknown
    birth_place_code: str | None  # INSEE (COG) code
    birth_place: str | None
    status_code: str  # PROV, RECUP, VALI, QUAL
    status_label: str  # "Identité qualifiée"...
    ins: str | None
    ins_oid: str | None
    local_id: str
    local_oid: str
    address: tuple[str, ...] = ()
    phone: str | None = None


@dataclass(frozen=True)
class Person:
    """A practitioner or a relative: ``role`` as printed ("Médecin traitant", "Personne de confiance"...)."""

    family: str
    given: str | None
    role: str
    phone: str | None = None
    rpps: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class Establishment:
    name: str
    finess: str
    line: str | None = None
    postal: str | None = None
    city: str | None = None
    phone: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class Transfer:
    """The facts of a transfer to hospital that the record does not hold (FLUDT): the nurse gives them."""

    reason: str
    destination: str | None = None
    last_meal: str | None = None  # "Déjeuner complet à 12 h"
    devices: tuple[str, ...] = ()  # prostheses, hearing aids, glasses...
    belongings: tuple[str, ...] = ()
    comment: str | None = None
    consciousness: str | None = None  # at departure: DLU_002 conscient et éveillé, DLU_003 éveillable, DLU_004 non


@dataclass(frozen=True)
class ResidentRecord:
    """Everything the DLU and the FLUDT show, read at ``as_of`` from the record at version ``record_version``."""

    patient_id: str
    identity: Identity
    establishment: Establishment
    as_of: datetime
    record_version: str  # changes whenever a resource the documents show changes
    stay_start: str | None = None
    gp: Person | None = None  # médecin traitant
    coordinator: Person | None = None  # médecin coordonnateur, the author of record when no GP
    trusted: tuple[Person, ...] = ()  # personne de confiance (NOK)
    notify: tuple[Person, ...] = ()  # person to notify (ECON)
    preferred_hospital: str | None = None
    dispositions: tuple[Item, ...] = ()
    pathologies: tuple[Item, ...] = ()
    antecedents: tuple[Item, ...] = ()
    allergies: tuple[Item, ...] = ()
    # The record states "no known allergy" (an AllergyIntolerance coded so): only then does an empty list mean
    # none; otherwise it means that nobody recorded any.
    no_known_allergy: bool = False
    treatments: tuple[Item, ...] = ()
    directives: tuple[Item, ...] = ()  # advance directives, palliative care
    state: tuple[Item, ...] = ()  # psychic state, handicaps, mobility, risks
    results: tuple[Item, ...] = ()  # e.g. BMR / BHRe carriage
    vaccinations: tuple[Item, ...] = ()
    vitals: tuple[Item, ...] = ()  # the latest of each vital sign
    attached: tuple[Item, ...] = ()  # documents on file (checklist of the DLU)
    comment: str | None = None
    sources: tuple[str, ...] = field(default_factory=tuple)  # every "Type/id@version" read
