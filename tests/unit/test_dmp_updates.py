"""ITI-57 (TD3.3) and ITI-18 (TD0.2, lookups) between the DUI's SOAP client and the DMP simulator: what the
simulator refuses (another patient's entry, a stale version, an unknown lid, a final status) and what the client
reads back."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from dui.dmp.errors import Permanent
from dui.dmp.gateway import Registered
from dui.dmp.metadata import APPROVED, ARCHIVED, DELETED, cx
from dui.dmp.simulator import DmpSimulator, SigningPki, make_signing_pki
from dui.dmp.soap import SoapDmpGateway
from ins.insi.pki import make_pki
from tests.unit.dmp_samples import INS, INS_OID, SOURCE_ID, dlu_entry, vihf_context

OTHER_INS = "100000000000000"


@pytest.fixture(scope="module")
def cachet(tmp_path_factory: pytest.TempPathFactory) -> SigningPki:
    return make_signing_pki(Path(tmp_path_factory.mktemp("cachet")))


@pytest.fixture
def dmp(tmp_path_factory: pytest.TempPathFactory, cachet: SigningPki) -> Iterator[DmpSimulator]:
    with DmpSimulator(make_pki(Path(tmp_path_factory.mktemp("pki"))), vihf_ca=cachet.ca_cert) as simulator:
        yield simulator


@pytest.fixture
def client(dmp: DmpSimulator, cachet: SigningPki) -> SoapDmpGateway:
    pki = dmp.pki
    return SoapDmpGateway(dmp.url, str(pki.client_cert), str(pki.client_key), str(pki.ca_cert),
                          cachet.cert.read_bytes(), cachet.key.read_bytes(), 5.0, vihf=vihf_context(),
                          source_id=SOURCE_ID)


def new_uuid(n: int) -> str:
    return f"urn:uuid:44444444-0000-4000-8000-{n:012d}"


def codes(exc: pytest.ExceptionInfo[Permanent]) -> set[str]:
    return {getattr(e, "error_code", "") for e in exc.value.errors}


def test_lookup_mask_unmask_and_versions(client: SoapDmpGateway, dmp: DmpSimulator) -> None:
    entry, data = dlu_entry()
    assert client.lookup(entry.unique_id, entry.patient_id) is None
    client.provide(entry, data)
    first = client.lookup(entry.unique_id, entry.patient_id)
    assert first == Registered(entry.entry_uuid, entry.entry_uuid, 1, APPROVED, frozenset())
    second = dataclasses.replace(entry, entry_uuid=new_uuid(2))
    assert client.update_metadata(second, first, masking=frozenset({"MASQUE_PS"})).ok
    now = client.lookup(entry.unique_id, entry.patient_id)
    assert now == Registered(new_uuid(2), entry.entry_uuid, 2, APPROVED, frozenset({"MASQUE_PS"}))
    with pytest.raises(Permanent) as stale:  # version 1 is no longer the registered one
        client.update_metadata(dataclasses.replace(entry, entry_uuid=new_uuid(3)), first, masking=frozenset())
    assert codes(stale) == {"XDSMetadataVersionError"}
    assert client.update_metadata(dataclasses.replace(entry, entry_uuid=new_uuid(3)), now, masking=frozenset()).ok
    held = dmp.entry(entry.unique_id)
    assert held is not None and held.version == 3 and held.masking == frozenset()
    assert held.versions == [entry.entry_uuid, new_uuid(2)] and dmp.count(entry.unique_id) == 1


def test_status_changes_and_a_deleted_entry_is_final(client: SoapDmpGateway) -> None:
    entry, data = dlu_entry()
    client.provide(entry, data)
    registered = client.lookup(entry.unique_id, entry.patient_id)
    assert registered is not None
    with pytest.raises(Permanent) as wrong:  # OriginalStatus must be the entry's status
        client.update_metadata(entry, dataclasses.replace(registered, status=ARCHIVED), status=DELETED)
    assert codes(wrong) == {"XDSMetadataUpdateError"}
    assert client.update_metadata(entry, registered, status=ARCHIVED).ok
    archived = client.lookup(entry.unique_id, entry.patient_id)
    assert archived is not None and archived.status == ARCHIVED
    assert client.update_metadata(entry, archived, status=DELETED).ok
    deleted = client.lookup(entry.unique_id, entry.patient_id)
    assert deleted is not None and deleted.status == DELETED
    with pytest.raises(Permanent) as final:
        client.update_metadata(entry, deleted, status=APPROVED)
    assert codes(final) == {"XDSMetadataUpdateError"}


def test_an_update_names_the_patient_of_the_entry(client: SoapDmpGateway) -> None:
    entry, data = dlu_entry()
    client.provide(entry, data)
    registered = client.lookup(entry.unique_id, entry.patient_id)
    assert registered is not None
    other = cx(OTHER_INS, INS_OID)
    assert client.lookup(entry.unique_id, other) is None  # another patient's VIHF finds nothing
    with pytest.raises(Permanent) as refused:
        client.update_metadata(dataclasses.replace(entry, patient_id=other, entry_uuid=new_uuid(5)), registered,
                               masking=frozenset({"MASQUE_PS"}))
    assert codes(refused) == {"XDSPatientIdDoesNotMatch"}
    with pytest.raises(Permanent) as unknown:
        client.update_metadata(entry, dataclasses.replace(registered, logical_id=new_uuid(9)), status=ARCHIVED)
    assert codes(unknown) == {"XDSMetadataUpdateError"}


def test_check_tells_no_dmp_blocked_and_open(client: SoapDmpGateway, dmp: DmpSimulator) -> None:
    assert client.check(INS, INS_OID).authorized
    dmp.patients = frozenset({OTHER_INS})
    absent = client.check(INS, INS_OID)
    assert (absent.exists, absent.authorized, absent.detail) == (False, False, "XDSUnknownPatientId")
    dmp.patients, dmp.blocked = None, frozenset({INS})
    blocked = client.check(INS, INS_OID)
    assert blocked.exists and not blocked.authorized
    entry, data = dlu_entry()
    with pytest.raises(Permanent):  # and the feeding itself is refused
        client.provide(entry, data)
    assert dmp.count(entry.unique_id) == 0
