"""The in-memory DMP twin: idempotent provide, RPLC, masking and status updates, injected failures."""

from __future__ import annotations

import dataclasses

import pytest

from dui.dmp.errors import Permanent, Transient
from dui.dmp.gateway import DEPRECATED, DmpGateway, InMemoryDmpGateway
from dui.dmp.metadata import APPROVED, DELETED
from tests.unit.dmp_samples import INS, INS_OID, dlu_entry


def test_provide_is_idempotent_on_the_unique_id() -> None:
    dmp = InMemoryDmpGateway()
    gateway: DmpGateway = dmp
    entry, data = dlu_entry()
    first = gateway.provide(entry, data)
    assert first.status == "Success"
    assert gateway.provide(entry, data) is first
    assert len(dmp.entries) == 1


def test_rplc_deprecates_the_previous_entry() -> None:
    dmp = InMemoryDmpGateway()
    old, old_data = dlu_entry()
    dmp.provide(old, old_data)
    new, new_data = dlu_entry(extension="DLU-p1-4", version=4)
    new = dataclasses.replace(new, entry_uuid="urn:uuid:22222222-0000-4000-8000-000000000004")
    assert dmp.provide(new, new_data, replaces=old.entry_uuid).ok
    assert dmp.entries[old.unique_id].entry.availability_status == DEPRECATED
    assert dmp.entries[new.unique_id].entry.availability_status == APPROVED
    other = dataclasses.replace(new, unique_id="1.2.250.1.999.1.2^X", entry_uuid="urn:uuid:x")
    with pytest.raises(Permanent):  # a deprecated entry cannot be replaced again
        dmp.provide(other, new_data, replaces=old.entry_uuid)


def test_injected_failures() -> None:
    dmp = InMemoryDmpGateway()
    entry, data = dlu_entry()
    dmp.fail_next(Transient("down"))
    with pytest.raises(Transient):
        dmp.provide(entry, data)
    assert dmp.provide(entry, data).ok  # the retry succeeds
    dmp.fail_next(Permanent("no"))
    with pytest.raises(Permanent):
        dmp.check(INS, INS_OID)


def test_unknown_patient_and_check() -> None:
    dmp = InMemoryDmpGateway(patients={"1"})
    entry, data = dlu_entry()
    with pytest.raises(Permanent) as refused:
        dmp.provide(entry, data)
    assert refused.value.errors[0].error_code == "XDSUnknownPatientId"  # type: ignore[attr-defined]
    assert not dmp.check(INS, INS_OID).exists
    assert dmp.check("1", INS_OID).exists


def test_masking_and_status_updates() -> None:
    dmp = InMemoryDmpGateway()
    entry, data = dlu_entry()
    dmp.provide(entry, data)
    registered = dmp.lookup(entry.unique_id, entry.patient_id)
    assert registered is not None and (registered.version, registered.masking) == (1, frozenset())
    assert registered.logical_id == registered.entry_uuid == entry.entry_uuid
    second = dataclasses.replace(entry, entry_uuid="urn:uuid:33333333-0000-4000-8000-000000000002")
    dmp.update_metadata(second, registered, masking=frozenset({"INVISIBLE_PATIENT"}))
    now = dmp.lookup(entry.unique_id, entry.patient_id)
    assert now is not None and (now.version, now.masking, now.entry_uuid) == (
        2, {"INVISIBLE_PATIENT"}, second.entry_uuid)
    assert now.logical_id == entry.entry_uuid
    with pytest.raises(Permanent) as stale:  # an update on version 1 once version 2 exists
        dmp.update_metadata(second, registered, masking=frozenset())
    assert stale.value.errors[0].error_code == "XDSMetadataVersionError"  # type: ignore[attr-defined]
    third = dataclasses.replace(entry, entry_uuid="urn:uuid:33333333-0000-4000-8000-000000000003")
    dmp.update_metadata(third, now, masking=frozenset())
    assert dmp.entries[entry.unique_id].entry.masking == frozenset()
    assert dmp.entries[entry.unique_id].entry.confidentiality_codes[0].code == "N"
    latest = dmp.lookup(entry.unique_id, entry.patient_id)
    assert latest is not None
    dmp.update_metadata(entry, latest, status=DELETED)
    assert dmp.entries[entry.unique_id].entry.availability_status == DELETED
    assert dmp.lookup(entry.unique_id, "another^^^&1.2.250.1.213.1.4.8&ISO^NH") is None


def test_blocked_patient() -> None:
    dmp = InMemoryDmpGateway(blocked={INS})
    entry, data = dlu_entry()
    access = dmp.check(INS, INS_OID)
    assert access.exists and not access.authorized
    with pytest.raises(Permanent):
        dmp.provide(entry, data)
