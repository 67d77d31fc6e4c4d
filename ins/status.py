"""Identity statuses of the RNIV (référentiel national d'identitovigilance) and how they change.

Two pieces of evidence make the status: the identity was checked against a high-trust identity
document, and the INS was retrieved or verified through the INSi téléservice.

================  =====================  ====================
status            identity document      INSi
================  =====================  ====================
provisoire PROV   no                     no
récupérée  RECUP  no                     yes
validée    VALI   yes (high trust)       no
qualifiée  QUAL   yes (high trust)       yes
================  =====================  ====================

Only a qualified identity may use the matricule INS to reference and share health data. A status
changes one piece of evidence at a time (``EVENTS``); losing evidence (INSi no longer confirms the
INS, a document check withdrawn) steps the status down the same way. ``StatusHistory`` keeps the
changes in order and refuses one that does not start where the last one ended.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum

from ins.errors import TransitionError


class IdentityStatus(Enum):
    PROV = ("PROV", "Identité provisoire", False, False)
    RECUP = ("RECUP", "Identité récupérée", False, True)
    VALI = ("VALI", "Identité validée", True, False)
    QUAL = ("QUAL", "Identité qualifiée", True, True)

    def __init__(self, code: str, label: str, document: bool, insi: bool) -> None:
        self.code = code
        self.label = label
        self.document = document
        self.insi = insi

    @classmethod
    def of(cls, document: bool, insi: bool) -> IdentityStatus:
        return next(s for s in cls if s.document == document and s.insi == insi)

    @classmethod
    def from_code(cls, code: str) -> IdentityStatus:
        for status in cls:
            if status.code == code:
                return status
        raise TransitionError(f"'{code[:20]}' is not an identity status (PROV, RECUP, VALI or QUAL)")

    @property
    def may_share_ins(self) -> bool:
        """The matricule INS may reference and share health data only when the identity is qualified."""
        return self is IdentityStatus.QUAL


# FR Core ``fr-core-cs-mode-validation-identity`` codes (2.1.0; DC, AC and IE added in 2.2.0), and
# whether each is a high-trust identity document for an adult (RNIV). UNCONFIRMED: the list of
# high-trust devices, which the RNIV may widen; AC is the médico-social 2024 addition.
DOCUMENT_SYSTEM = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-mode-validation-identity"
DOCUMENTS: dict[str, tuple[str, bool]] = {
    "CN": ("Carte nationale d'identité", True),
    "PA": ("Passeport", True),
    "CS": ("Carte de séjour", True),
    "CE": ("Carte Européenne", True),
    "IE": ("Identification électronique EIDAS", True),
    "AC": ("Acte de naissance + Carte vitale avec photo", True),
    "AN": ("Extrait d'acte de naissance", False),
    "LE": ("Livret de famille", False),
    "DC": ("Document de Circulation pour étranger mineur", False),
    "PC": ("Permis de conduire", False),
    "CM": ("Carte militaire", False),
    "CC": ("Carnet de circulation", False),
    "TC": ("Tiers de confiance", False),
}


def check_document(code: str) -> str:
    """The label of a high-trust document type; ``TransitionError`` for any other code."""
    known = DOCUMENTS.get(code)
    if known is None:
        raise TransitionError(f"'{code[:20]}' is not an identity document type of FR Core "
                              f"(one of {', '.join(DOCUMENTS)})")
    label, high_trust = known
    if not high_trust:
        trusted = ", ".join(c for c, (_, ok) in DOCUMENTS.items() if ok)
        raise TransitionError(f"{label} ({code}) is not a high-trust identity document; an identity is "
                              f"validated with one of {trusted}")
    return label


class Event(Enum):
    """What changes the evidence behind a status."""

    INSI_CONFIRMED = "insi-confirmed"  # INSi returned the INS (retrieval or verification)
    DOCUMENT_CHECKED = "document-checked"  # a high-trust identity document was checked
    INSI_WITHDRAWN = "insi-withdrawn"  # INSi no longer confirms the INS (or the traits were corrected)
    DOCUMENT_WITHDRAWN = "document-withdrawn"  # the document check no longer holds (doubt, wrong person)


def next_status(current: IdentityStatus, event: Event) -> IdentityStatus:
    """The status after ``event``; a confirmation of evidence already held keeps the status."""
    if event is Event.INSI_CONFIRMED:
        return IdentityStatus.of(current.document, True)
    if event is Event.DOCUMENT_CHECKED:
        return IdentityStatus.of(True, current.insi)
    if event is Event.INSI_WITHDRAWN:
        if not current.insi:
            raise TransitionError(f"{current.label}: there is no INSi result to withdraw")
        return IdentityStatus.of(current.document, False)
    if not current.document:
        raise TransitionError(f"{current.label}: there is no identity document check to withdraw")
    return IdentityStatus.of(False, current.insi)


def allowed_transitions() -> set[tuple[IdentityStatus, IdentityStatus]]:
    """Every (from, to) pair that some event allows, status kept included."""
    out = set()
    for status in IdentityStatus:
        for event in Event:
            try:
                out.add((status, next_status(status, event)))
            except TransitionError:
                continue
    return out


@dataclass(frozen=True)
class StatusChange:
    before: IdentityStatus
    after: IdentityStatus
    event: Event
    at: datetime
    document: str | None = None  # the document type code, for DOCUMENT_CHECKED
    reason: str | None = None


@dataclass(frozen=True)
class Evidence:
    """What a status rests on, as recorded on the identity."""

    document: str | None = None  # high-trust document type code
    document_date: date | None = None
    insi_date: date | None = None

    @property
    def status(self) -> IdentityStatus:
        return IdentityStatus.of(self.document is not None, self.insi_date is not None)


def apply(current: IdentityStatus, event: Event, at: datetime, *, document: str | None = None,
          reason: str | None = None) -> StatusChange:
    """The change ``event`` makes, with its evidence checked (a document check needs a high-trust type)."""
    if event is Event.DOCUMENT_CHECKED:
        if document is None:
            raise TransitionError("recording an identity document check needs the document type")
        check_document(document)
    if event in (Event.INSI_WITHDRAWN, Event.DOCUMENT_WITHDRAWN) and not (reason or "").strip():
        raise TransitionError("withdrawing evidence needs a reason")
    return StatusChange(current, next_status(current, event), event, at, document, reason)


class StatusHistory:
    """The ordered status changes of one identity."""

    def __init__(self, changes: Iterable[StatusChange] = (), start: IdentityStatus = IdentityStatus.PROV) -> None:
        self.start = start
        self.changes: list[StatusChange] = []
        for change in changes:
            self.append(change)

    @property
    def current(self) -> IdentityStatus:
        return self.changes[-1].after if self.changes else self.start

    def append(self, change: StatusChange) -> None:
        if change.before is not self.current:
            raise TransitionError(f"a change from {change.before.code} cannot follow {self.current.code}")
        if self.changes and change.at < self.changes[-1].at:
            raise TransitionError("status changes are recorded in time order")
        if next_status(change.before, change.event) is not change.after:
            raise TransitionError(f"{change.event.value} leads from {change.before.code} to "
                                  f"{next_status(change.before, change.event).code}, not {change.after.code}")
        self.changes.append(change)
