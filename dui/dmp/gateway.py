"""What the DUI asks of the DMP (``DmpGateway``), and its in-memory twin for tests and development.

``provide`` is ITI-41 (DMP TD2.1 / TD2.2: a new document, or with ``replaces`` a new version RPLC-replacing the
previous entry); ``lookup`` is ITI-18 GetDocuments (TD3.1: the entry as the DMP holds it now: its current
entryUUID, version, status and masking); ``update_metadata`` is ITI-57 (TD3.3: masking, unmasking, archive,
delete) on what ``lookup`` returned; ``check`` is the TD0.2 "does this patient have a DMP, may we feed it"
(UNCONFIRMED request shape: ``dui.dmp.soap``).
A call that may succeed later raises ``Transient``; one the DMP refused raises ``Permanent`` (``dui.dmp.errors``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol

from dui.dmp.ebrim import Outcome, RegistryError
from dui.dmp.errors import DmpError, Permanent
from dui.dmp.metadata import APPROVED, DELETED, MASKING_DISPLAY, MASKING_OID, Code, DocumentEntry

DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"


@dataclass(frozen=True)
class Access:
    """The answer of TD0.2: ``exists`` (the patient has an open DMP), ``authorized`` (this structure may feed it)."""

    exists: bool
    authorized: bool
    detail: str = ""


@dataclass(frozen=True)
class Registered:
    """A document entry as the DMP holds it: ``entry_uuid`` of its current version, ``logical_id`` (lid) shared by
    all its versions, ``version``, availability ``status`` and TRE_A07 ``masking`` codes."""

    entry_uuid: str
    logical_id: str
    version: int
    status: str
    masking: frozenset[str]


class DmpGateway(Protocol):
    """The national shared record, as the DUI uses it."""

    def provide(self, entry: DocumentEntry, cda: bytes, replaces: str | None = None) -> Outcome:
        """Submit ``cda`` with ``entry``; ``replaces``: entryUUID of the entry this one replaces (RPLC)."""
        ...

    def lookup(self, unique_id: str, patient_id: str) -> Registered | None:
        """The entry ``unique_id`` of the patient ``patient_id`` (CX) as the DMP holds it, or None."""
        ...

    def update_metadata(self, entry: DocumentEntry, registered: Registered, *,
                        masking: frozenset[str] | None = None, status: str | None = None) -> Outcome:
        """Set the masking codes of the registered entry (None: unchanged; a new version, ``entry`` giving its
        metadata and its new entryUUID) and/or its availability status (archive, delete)."""
        ...

    def check(self, ins: str, ins_oid: str) -> Access:
        """Whether the patient ``ins`` has a DMP this structure may feed."""
        ...


def with_masking(entry: DocumentEntry, masking: frozenset[str]) -> DocumentEntry:
    """``entry`` whose TRE_A07 masking codes are exactly ``masking`` (the HL7 confidentiality code kept)."""
    kept = tuple(c for c in entry.confidentiality_codes if c.scheme != MASKING_OID)
    added = tuple(Code(m, MASKING_OID, MASKING_DISPLAY.get(m, "")) for m in sorted(masking))
    return dataclasses.replace(entry, confidentiality_codes=kept + added)


@dataclass
class _Stored:
    entry: DocumentEntry
    cda: bytes
    outcome: Outcome
    logical_id: str = ""
    version: int = 1


class InMemoryDmpGateway:
    """A DMP in a dict: entries by uniqueId; a second ``provide`` of a uniqueId returns the first outcome (idempotent
    retries); RPLC deprecates the replaced entry. ``fail_next(error)`` makes the next call raise ``error``;
    ``patients`` (INS values) lists who has a DMP (None: everybody); ``blocked`` who blocked this structure."""

    def __init__(self, patients: set[str] | None = None, blocked: set[str] | None = None) -> None:
        self.entries: dict[str, _Stored] = {}
        self.patients = patients
        self.blocked = blocked or set()
        self._failures: list[DmpError] = []
        self.calls = 0

    def fail_next(self, error: DmpError) -> None:
        self._failures.append(error)

    def _called(self) -> None:
        self.calls += 1
        if self._failures:
            raise self._failures.pop(0)

    def by_entry_uuid(self, entry_uuid: str) -> DocumentEntry | None:
        return next((s.entry for s in self.entries.values() if s.entry.entry_uuid == entry_uuid), None)

    def provide(self, entry: DocumentEntry, cda: bytes, replaces: str | None = None) -> Outcome:
        self._called()
        if entry.unique_id in self.entries:
            return self.entries[entry.unique_id].outcome
        matricule = entry.patient_id.split("^", 1)[0]
        if self.patients is not None and matricule not in self.patients:
            error = RegistryError("XDSUnknownPatientId", f"unknown patient {entry.patient_id}", "Error")
            raise Permanent("the DMP refused the submission", (error,))
        if matricule in self.blocked:
            raise Permanent("the DMP refused the submission",
                            (RegistryError("XDSRegistryError", "access refused", "Error"),))
        if replaces is not None:
            previous = next((s for s in self.entries.values() if s.entry.entry_uuid == replaces), None)
            if previous is None or previous.entry.availability_status != APPROVED:
                error = RegistryError("XDSRegistryError", f"no approved entry {replaces} to replace", "Error")
                raise Permanent("the DMP refused the submission", (error,))
            previous.entry = dataclasses.replace(previous.entry, availability_status=DEPRECATED)
        outcome = Outcome("Success")
        self.entries[entry.unique_id] = _Stored(entry, cda, outcome, logical_id=entry.entry_uuid)
        return outcome

    def lookup(self, unique_id: str, patient_id: str) -> Registered | None:
        self._called()
        stored = self.entries.get(unique_id)
        if stored is None or stored.entry.patient_id != patient_id:
            return None
        return Registered(stored.entry.entry_uuid, stored.logical_id, stored.version,
                          stored.entry.availability_status, stored.entry.masking)

    def update_metadata(self, entry: DocumentEntry, registered: Registered, *,
                        masking: frozenset[str] | None = None, status: str | None = None) -> Outcome:
        self._called()
        stored = self.entries.get(entry.unique_id)
        if stored is None or stored.logical_id != registered.logical_id:
            raise Permanent("the DMP refused the update",
                            (RegistryError("XDSMetadataUpdateError", entry.unique_id, "Error"),))
        if stored.version != registered.version or stored.entry.availability_status != registered.status:
            raise Permanent("the DMP refused the update",
                            (RegistryError("XDSMetadataVersionError", entry.unique_id, "Error"),))
        if stored.entry.availability_status in (DEPRECATED, DELETED):
            raise Permanent("the DMP refused the update",
                            (RegistryError("XDSMetadataUpdateError", "the entry cannot change", "Error"),))
        if masking is not None:
            stored.entry = dataclasses.replace(with_masking(stored.entry, masking), entry_uuid=entry.entry_uuid)
            stored.version += 1
        if status is not None:
            stored.entry = dataclasses.replace(stored.entry, availability_status=status)
        return Outcome("Success")

    def check(self, ins: str, ins_oid: str) -> Access:
        self._called()
        exists = self.patients is None or ins in self.patients
        return Access(exists=exists, authorized=exists and ins not in self.blocked)
