"""The sharing gate decides per stored version, and never serves one body's decision for another."""

from __future__ import annotations

from datetime import UTC, datetime

from dui.fhir import jsontext
from dui.fhir.repository import ResourceVersion
from dui.residents import mapping
from dui.residents.sharing import gate_version
from ins import Evidence, IdentityStatus
from ins.insi.table import LYON
from tests.functional.test_identity import resident
from tests.helpers import ins_identifier


def _version(status: IdentityStatus, rid: int = 7) -> ResourceVersion:
    evidence = Evidence(document="CN" if status.document else None, insi_date=datetime.now(UTC).date())
    body = mapping.with_identity(resident(identifier=[ins_identifier(LYON.identity.matricule)]), status, evidence)
    return ResourceVersion(rid, "Patient", "p", 1, datetime.now(UTC), False, "PUT", jsontext.dump(body))


def test_same_row_and_version_in_two_databases_are_decided_apart() -> None:
    recup, qual = _version(IdentityStatus.RECUP), _version(IdentityStatus.QUAL)
    for _ in range(2):  # the second round is served from the kept decisions
        assert mapping.ins_identifiers(gate_version(recup).resource()) == []
        assert gate_version(qual) is qual


def test_other_types_and_patients_without_ins_pass_untouched() -> None:
    plain = ResourceVersion(8, "Patient", "q", 1, datetime.now(UTC), False, "PUT", jsontext.dump(resident()))
    assert gate_version(plain) is plain
    observation = ResourceVersion(9, "Observation", "o", 1, datetime.now(UTC), False, "PUT",
                                  b'{"identifier":[{"system":"urn:oid:1.2.250.1.213.1.4.10"}]}')
    assert gate_version(observation) is observation
