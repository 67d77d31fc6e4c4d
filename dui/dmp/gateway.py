"""What the DUI asks of the DMP (``DmpGateway``), and its in-memory twin for tests and development.

``provide`` is ITI-41 (DMP TD2.1 / TD2.2: a new document, or with ``replaces`` a new version RPLC-replacing the
previous entry); ``update_metadata`` is ITI-57 (TD3.3: masking, unmasking, archive, delete); ``check`` is the
TD0.2 "does this patient have a DMP, may we feed it" (UNCONFIRMED request shape: ``dui.dmp.soap``).
A call that may succeed later raises ``Transient``; one the DMP refused raises ``Permanent`` (``dui.dmp.errors``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol

from dui.dmp.ebrim import Outcome, RegistryError
from dui.dmp.errors import DmpError, Permanent
from dui.dmp.metadata import APPROVED, MASKING_DISPLAY, MASKING_OID, Code, DocumentEntry

DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"


@dataclass(frozen=True)
class Access:
    """The answer of TD0.2: ``exists`` (the patient has an open DMP), ``authorized`` (this structure may feed it)."""

    exists: bool
    authorized: bool
    detail: str = ""


class DmpGateway(Protocol):
    """The national shared record, as the DUI uses it."""

    def provide(self, entry: DocumentEntry, cda: bytes, replaces: str | None = None) -> Outcome:
        """Submit ``cda`` with ``entry``; ``replaces``: entryUUID of the entry this one replaces (RPLC)."""
        ...

    def update_metadata(self, entry: DocumentEntry, *, masking: frozenset[str] | None = None,
                        status: str | None = None, version: str = "1") -> Outcome:
        """Set the masking codes of ``entry`` (None: unchanged) and/or its availability status (archive, delete)."""
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


class InMemoryDmpGateway:
    """A DMP in a dict: entries by uniqueId; a second ``provide`` of a uniqueId returns the first outcome (idempotent
    retries); RPLC deprecates the replaced entry. ``fail_next(error)`` makes the next call raise ``error``;
    ``patients`` (INS values) lists who has a DMP (None: everybody)."""

    def __init__(self, patients: set[str] | None = None) -> None:
        self.entries: dict[str, _Stored] = {}
        self.patients = patients
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
        if self.patients is not None and entry.patient_id.split("^", 1)[0] not in self.patients:
            error = RegistryError("XDSUnknownPatientId", f"unknown patient {entry.patient_id}", "Error")
            raise Permanent("the DMP refused the submission", (error,))
        if replaces is not None:
            previous = next((s for s in self.entries.values() if s.entry.entry_uuid == replaces), None)
            if previous is None or previous.entry.availability_status != APPROVED:
                error = RegistryError("XDSRegistryError", f"no approved entry {replaces} to replace", "Error")
                raise Permanent("the DMP refused the submission", (error,))
            previous.entry = dataclasses.replace(previous.entry, availability_status=DEPRECATED)
        outcome = Outcome("Success")
        self.entries[entry.unique_id] = _Stored(entry, cda, outcome)
        return outcome

    def update_metadata(self, entry: DocumentEntry, *, masking: frozenset[str] | None = None,
                        status: str | None = None, version: str = "1") -> Outcome:
        self._called()
        stored = self.entries.get(entry.unique_id)
        if stored is None:
            raise Permanent("the DMP refused the update",
                            (RegistryError("XDSUnknownDocument", entry.unique_id, "Error"),))
        updated = stored.entry if masking is None else with_masking(stored.entry, masking)
        if status is not None:
            updated = dataclasses.replace(updated, availability_status=status)
        stored.entry = updated
        return Outcome("Success")

    def check(self, ins: str, ins_oid: str) -> Access:
        self._called()
        exists = self.patients is None or ins in self.patients
        return Access(exists=exists, authorized=exists)
