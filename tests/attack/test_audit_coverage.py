"""Hole 6: the audit trail names every resident a request touched, and records every request.

Each request below carries its own ``X-Request-Id``; afterwards the trail must hold exactly one entry with that id,
whose residents are those of the data the request served or wrote (known here by construction: every record
created for the test belongs to one resident). Refusals are recorded too, also those answered before the FHIR
handler (406, 413, malformed ids, unknown paths).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text

from tests.attack.conftest import FHIR_JSON, World, parc_residents, tilleuls_residents

_ids = itertools.count(1)


def request_id() -> str:
    return f"hole6-{next(_ids):06d}"


def entries(world: World, rid: str) -> list[tuple[dict[str, Any], set[str]]]:
    with world.app.extensions["dui"].engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM audit_event WHERE request_id = :r"), {"r": rid}).mappings().all()
        return [(dict(row), {p for (p,) in conn.execute(text(
            "SELECT patient_id FROM audit_event_patient WHERE seq = :s"), {"s": row["seq"]})}) for row in rows]


def recorded(world: World, who: str | None, method: str, path: str, body: Any = None,
             headers: dict[str, str] | None = None, **kw: Any) -> tuple[Any, dict[str, Any], set[str]]:
    """Make the request; return the answer and the one audit entry it left (asserting there is exactly one)."""
    rid = request_id()
    answer = world.call(who, method, path, body, headers={**(headers or {}), "X-Request-Id": rid}, **kw)
    found = entries(world, rid)
    assert len(found) == 1, (method, path, answer.status_code, found)
    return answer, found[0][0], found[0][1]


@pytest.fixture(scope="module")
def record(world: World) -> Iterator[dict[str, str]]:
    """An Appointment and a Group naming one resident of Les Tilleuls each (made by the unrestricted caller)."""
    mine, other = tilleuls_residents()[0], tilleuls_residents()[1]
    appointment = world.call(None, "POST", "Appointment", {
        "resourceType": "Appointment", "status": "booked", "participant": [
            {"actor": {"reference": f"Patient/{mine}"}, "status": "accepted"}]}).get_json()["id"]
    group = world.call(None, "POST", "Group", {
        "resourceType": "Group", "type": "person", "actual": True,
        "member": [{"entity": {"reference": f"Patient/{other}"}}]}).get_json()["id"]
    yield {"mine": mine, "other": other, "appointment": appointment, "group": group}
    world.call(None, "DELETE", f"Appointment/{appointment}")
    world.call(None, "DELETE", f"Group/{group}")


def test_reads_name_the_residents_they_touch(world: World, record: dict[str, str]) -> None:
    mine, other = record["mine"], record["other"]
    answer, entry, patients = recorded(world, "t.medecin", "GET", f"Observation?subject=Patient/{mine}"
                                       "&_elements=status&_count=5")
    assert answer.status_code == 200 and entry["action"] == "search" and patients == {mine}
    etag = world.get("t.medecin", f"Observation/{mine}-weight-0").headers["ETag"]
    answer, entry, patients = recorded(world, "t.medecin", "GET", f"Observation/{mine}-weight-0",
                                       headers={"If-None-Match": etag})
    assert answer.status_code == 304 and entry["status"] == 304 and patients == {mine}
    answer, entry, patients = recorded(world, "t.medecin", "GET", f"Appointment/{record['appointment']}")
    assert answer.status_code == 200 and patients == {mine}
    answer, entry, patients = recorded(world, "t.medecin", "GET", f"Group/{record['group']}")
    assert answer.status_code == 200 and patients == {other}
    answer, entry, patients = recorded(world, "t.medecin", "GET", f"Patient?_id={mine},{other}"
                                       "&_revinclude=Condition:subject&_summary=true")
    assert answer.status_code == 200 and patients == {mine, other}
    answer, entry, patients = recorded(world, "t.medecin", "GET", f"Observation/{mine}-weight-0/_history/1")
    assert entry["action"] == "vread" and patients == {mine}
    answer, entry, patients = recorded(world, "t.medecin", "GET", f"Patient/{mine}/$everything?_count=3")
    assert entry["detail"] == "$everything" and patients == {mine}


def test_writes_name_the_residents_they_touch(world: World) -> None:
    mine, other = tilleuls_residents()[0], tilleuls_residents()[1]
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "note"},
                   "subject": {"reference": f"Patient/{mine}"}}
    answer, entry, patients = recorded(world, "t.medecin", "POST", "Observation", observation,
                                       headers={"Prefer": "return=minimal"})
    assert answer.status_code == 201 and answer.get_data() == b"" and patients == {mine}
    oid = answer.headers["Location"].split("/")[-3]
    assert entry["resource_id"] == oid
    moved = dict(observation, id=oid, subject={"reference": f"Patient/{other}"})
    answer, entry, patients = recorded(world, "t.medecin", "PUT", f"Observation/{oid}", moved)
    assert answer.status_code == 200 and patients == {mine, other}  # taken from one record, put in another
    answer, entry, patients = recorded(world, "t.medecin", "DELETE", f"Observation/{oid}")
    assert answer.status_code == 204 and entry["action"] == "delete" and patients == {other}
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": observation, "request": {"method": "POST", "url": "Observation"}},
        {"request": {"method": "GET", "url": f"Observation/{other}-weight-0"}}]}
    answer, entry, patients = recorded(world, "t.medecin", "POST", "", bundle)
    assert answer.status_code == 200 and entry["action"] == "transaction" and patients == {mine, other}


def test_refusals_are_recorded_with_the_resident_asked_for(world: World) -> None:
    theirs = parc_residents()[0]
    answer, entry, patients = recorded(world, "t.medecin", "GET", f"Patient/{theirs}")
    assert answer.status_code == 404 and entry["outcome"] == "failed" and patients == {theirs}
    answer, entry, patients = recorded(world, "t.aide-soignant", "GET", "Condition")
    assert answer.status_code == 403 and entry["outcome"] == "denied"
    answer, entry, _ = recorded(world, "t.medecin", "POST", "Observation", {
        "resourceType": "Observation", "status": "final", "code": {"text": "note"},
        "subject": {"reference": f"Patient/{theirs}"}})
    assert answer.status_code == 403 and entry["outcome"] == "denied"


def test_requests_refused_before_the_handler_are_recorded(world: World) -> None:
    mine = tilleuls_residents()[0]
    answer, entry, _ = recorded(world, "t.medecin", "GET", f"Patient/{mine}", headers={"Accept": "text/turtle"})
    assert answer.status_code == 406 and entry["status"] == 406
    huge = b'{"resourceType":"Basic","code":{"text":"' + b"x" * (3 * 1024 * 1024) + b'"}}'
    answer, entry, _ = recorded(world, "t.medecin", "POST", "Basic", huge)
    assert answer.status_code == 413 and entry["status"] == 413
    answer, entry, _ = recorded(world, "t.medecin", "GET", "Patient/%00evil")
    assert answer.status_code == 400 and entry["status"] == 400
    answer, entry, _ = recorded(world, "t.medecin", "GET", "NoSuchType/1")
    assert answer.status_code == 404 and entry["status"] == 404
    answer, entry, _ = recorded(world, None, "DELETE", "metadata")
    assert answer.status_code == 405 and entry["status"] == 405
    rid = request_id()
    outside = world.web.get("/nowhere", headers={"X-Request-Id": rid, "Authorization":
                                                 f"Bearer {world.tokens['t.medecin']}"})
    assert outside.status_code == 404
    found = entries(world, rid)
    assert len(found) == 1 and found[0][0]["status"] == 404 and found[0][0]["actor_id"] == "t.medecin"
    bad = world.web.get(f"/fhir/Patient/{mine}", headers={"X-Request-Id": (rid := request_id()),
                                                          "Authorization": "Bearer not-a-token",
                                                          "Accept": FHIR_JSON})
    assert bad.status_code == 401
    found = entries(world, rid)
    assert len(found) == 1 and found[0][0]["outcome"] == "denied" and found[0][1] == {mine}
