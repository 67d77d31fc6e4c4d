"""The audit trail: every read, search, write and refusal recorded; append-only; hash chain that
`dui audit verify` checks; export as FHIR AuditEvent; a resident's access report."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, StatementError

from dui.audit import trail
from dui.audit.keys import AuditKeys, audit_keys
from dui.fhir.validation import Validator
from dui.services import Services
from tests.auditkit import owner_maintenance
from tests.helpers import FhirClient, observation, patient


def rows(app: Flask) -> list[tuple[Any, list[str]]]:
    svc: Services = app.extensions["dui"]
    with svc.unit_of_work(write=False) as session:
        return list(trail.entries(session))


def keys(app: Flask) -> AuditKeys:
    svc: Services = app.extensions["dui"]
    return audit_keys(svc.settings)


def test_every_access_is_recorded_with_the_resident(app: Flask, client: FhirClient) -> None:
    pid = client.create(patient())["id"]
    oid = client.create(observation(f"Patient/{pid}"))["id"]
    client.get(f"Patient/{pid}", headers={"X-Request-Id": "req-0000001"})
    client.get(f"Observation?subject=Patient/{pid}")
    client.get(f"Patient/{pid}/$everything")
    client.get("Patient/nope")
    client.put(f"Observation/{oid}", dict(observation(f"Patient/{pid}"), id="other"))  # 400
    client.get("metadata")  # every request is recorded, the CapabilityStatement too
    found = [(r["action"], r["detail"], r["resource_type"], r["outcome"], r["status"], tuple(p)) for r, p in rows(app)]
    assert found == [
        ("create", None, "Patient", "success", 201, (pid,)),
        ("create", None, "Observation", "success", 201, (pid,)),
        ("read", None, "Patient", "success", 200, (pid,)),
        ("search", None, "Observation", "success", 200, (pid,)),
        ("operation", "$everything", "Patient", "success", 200, (pid,)),
        ("read", "NotFound", "Patient", "failed", 404, ("nope",)),
        ("update", "Invalid", "Observation", "failed", 400, ()),
        ("capabilities", None, None, "success", 200, ()),
    ]
    third = rows(app)[2][0]
    assert third["request_id"] == "req-0000001" and third["actor_kind"] == "anonymous"
    assert rows(app)[3][0]["count"] == 1


def test_an_entry_is_written_in_its_units_transaction_and_never_with_a_naive_time(app: Flask, backend: str) -> None:
    """``trail.record`` in a writing unit (on PostgreSQL on the unit's own connection, not through the session):
    its number comes back, it rolls back with the unit, and a time without a zone is refused on both backends."""
    from datetime import UTC, datetime

    from dui.auth.actor import SYSTEM

    svc: Services = app.extensions["dui"]
    entry = trail.AuditEntry("read", "success", SYSTEM, "Patient", "p1", patients=("p1", "p1", "p2"))
    before = len(rows(app))
    with pytest.raises(RuntimeError), svc.unit_of_work() as session:
        assert trail.record(session, entry, datetime.now(UTC)) > 0
        raise RuntimeError("the unit fails")
    assert len(rows(app)) == before
    with svc.unit_of_work() as session:
        first = trail.record(session, entry, datetime.now(UTC))
        second = trail.record(session, entry, datetime.now(UTC))
    assert second > first
    written = rows(app)[-2:]
    assert [(r["seq"], r["resource_id"], tuple(p)) for r, p in written] == [
        (first, "p1", ("p1", "p2")), (second, "p1", ("p1", "p2"))]
    with pytest.raises((ValueError, StatementError), match="naive"), svc.unit_of_work() as session:
        trail.record(session, entry, datetime.now())  # SQLAlchemy wraps the column type's ValueError
    assert len(rows(app)) == before + 2, backend


def test_a_refused_write_leaves_no_success_entry(app: Flask, client: FhirClient) -> None:
    from tests.helpers import ins_identifier

    client.create(patient(identifier=[ins_identifier("279035121518989")]))
    duplicate = client.post("Patient", patient(identifier=[ins_identifier("279035121518989")]))
    assert duplicate.status_code == 409
    outcomes = [(r["action"], r["outcome"], r["status"]) for r, _ in rows(app)]
    assert outcomes == [("create", "success", 201), ("create", "failed", 409)]


def test_the_database_refuses_to_change_the_trail(app: Flask, client: FhirClient, backend: str) -> None:
    client.create(patient())
    engine = app.extensions["dui"].engine
    for statement in ("UPDATE audit_event SET actor_id = 'someone-else'", "DELETE FROM audit_event_patient",
                      "DELETE FROM audit_event"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))
    assert len(rows(app)) == 1


def _seal_and_verify(app: Flask, settle: float = 10.0) -> trail.Verification:
    """Seal, then verify. On PostgreSQL an entry is sealed once every transaction older than it has ended,
    on the whole server: another database's long transaction (a parallel test run) may hold it back a while."""
    svc: Services = app.extensions["dui"]
    deadline = time.monotonic() + settle
    while True:
        with svc.unit_of_work() as session:
            trail.seal(session, keys(app).current)
        with svc.unit_of_work(write=False) as session:
            result = trail.verify(session, keys(app))
        if result.unsealed == 0 or not result.ok or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


@pytest.mark.parametrize("tamper", ["alter", "delete", "reorder"])
def test_verify_finds_any_alteration(app: Flask, client: FhirClient, backend: str, tamper: str) -> None:
    pid = client.create(patient())["id"]
    for _ in range(4):
        client.get(f"Patient/{pid}")
    result = _seal_and_verify(app)
    assert result.ok and result.sealed == 5 and result.unsealed == 0
    engine = app.extensions["dui"].engine
    with engine.begin() as conn, owner_maintenance(conn):
        if tamper == "alter":
            conn.execute(text("UPDATE audit_event SET actor_id = 'quelqu-un' WHERE chain_pos = 3"))
        elif tamper == "delete":
            conn.execute(text("DELETE FROM audit_event_patient WHERE seq IN "
                              "(SELECT seq FROM audit_event WHERE chain_pos = 2)"))
            conn.execute(text("DELETE FROM audit_event WHERE chain_pos = 2"))
        else:
            conn.execute(text("UPDATE audit_event SET chain_pos = 100 WHERE chain_pos = 4"))
            conn.execute(text("UPDATE audit_event SET chain_pos = 4 WHERE chain_pos = 5"))
            conn.execute(text("UPDATE audit_event SET chain_pos = 5 WHERE chain_pos = 100"))
    result = _seal_and_verify(app)
    assert not result.ok
    expected = {"alter": "position 3", "delete": "missing at chain position 2", "reorder": "position 4"}[tamper]
    assert expected in (result.problem or "")
    verify = app.test_cli_runner().invoke(args=["audit", "verify"])
    assert verify.exit_code == 1 and "ALTERED" in verify.output


def test_entries_written_while_sealing_all_end_up_chained(app: Flask, client: FhirClient) -> None:
    pid = client.create(patient())["id"]
    stop = threading.Event()

    def reader() -> None:
        http = app.test_client()
        for _ in range(15):
            assert http.get(f"/fhir/Patient/{pid}").status_code == 200

    def sealer() -> None:
        while not stop.is_set():
            _seal_and_verify(app, settle=0)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    sealing = threading.Thread(target=sealer)
    sealing.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    sealing.join()
    result = _seal_and_verify(app)
    assert result.ok, result.problem
    assert result.sealed == 1 + 4 * 15 and result.unsealed == 0


def test_export_as_audit_events_and_access_report(app: Flask, client: FhirClient) -> None:
    pid = client.create(patient())["id"]
    other = client.create(patient(family="Autre"))["id"]
    client.get(f"Patient/{pid}")
    client.get(f"Patient/{other}")
    runner = app.test_cli_runner()
    exported = runner.invoke(args=["audit", "export", "--patient", pid])
    assert exported.exit_code == 0, exported.output
    events = [json.loads(line) for line in exported.stdout.splitlines() if line.startswith("{")]
    assert [e["action"] for e in events] == ["C", "R"]
    validator = Validator()
    for event in events:
        validator.check(event)
        assert {"reference": f"Patient/{pid}"} in [e["what"] for e in event["entity"]]
    report = runner.invoke(args=["audit", "report", pid])
    assert report.exit_code == 0
    assert len([line for line in report.stdout.splitlines() if "anonymous:anonymous" in line]) == 2
    assert "2 accesses" in report.output
    assert runner.invoke(args=["audit", "verify"]).exit_code == 0


def test_access_report_is_one_call_for_the_direction(app: Flask, client: FhirClient) -> None:
    import dataclasses

    from dui.auth.actor import Actor
    from dui.errors import Forbidden
    from dui.fhir import router
    from dui.fhir.interactions.base import FhirRequest

    pid = client.create(patient())["id"]
    client.get(f"Patient/{pid}")
    report = client.get(f"Patient/{pid}/$access-report").get_json()
    assert report["type"] == "collection"
    assert [e["resource"]["action"] for e in report["entry"]] == ["C", "R"]
    Validator().check(report["entry"][0]["resource"])
    svc: Services = app.extensions["dui"]
    for roles, allowed in ((frozenset({"direction"}), True), (frozenset({"infirmier"}), False)):
        with svc.unit_of_work(write=False) as session:
            ctx = svc.fhir_context(session, Actor("staff", "s", roles))
            req = FhirRequest("GET", f"Patient/{pid}/$access-report")
            if allowed:
                assert router.handle(dataclasses.replace(ctx), req).status == 200
            else:
                with pytest.raises(Forbidden):
                    router.handle(ctx, req)


def test_logins_are_recorded_given_or_refused(app: Flask, client: FhirClient) -> None:
    web = app.test_client()
    runner = app.test_cli_runner()
    created = runner.invoke(args=["users", "create", "ide.audit", "--role", "infirmier", "--establishment",
                                  "690002662", "--password-stdin"], input="Journal-des-acces-2026!\n")
    assert created.exit_code == 0, created.output
    assert web.post("/auth/token", data={"grant_type": "password", "username": "ide.audit",
                                         "password": "wrong"}).status_code == 400
    assert web.post("/auth/token", data={"grant_type": "password", "username": "ide.audit",
                                         "password": "Journal-des-acces-2026!"}).status_code == 200
    logins = [(r["action"], r["outcome"], r["actor_kind"], r["actor_id"], r["detail"]) for r, _ in rows(app)
              if r["action"] == "login"]
    assert logins == [("login", "denied", "anonymous", "anonymous", "password: invalid_grant"),
                      ("login", "success", "staff", "ide.audit", "password")]


def test_administrative_commands_are_recorded(app: Flask, client: FhirClient) -> None:
    runner = app.test_cli_runner()
    assert runner.invoke(args=["users", "create", "adm.audit", "--role", "administrateur", "--establishment",
                               "690002662", "--password-stdin"], input="Journal-des-acces-2026!\n").exit_code == 0
    assert runner.invoke(args=["users", "create", "adm.audit", "--role", "administrateur", "--establishment",
                               "690002662", "--password-stdin"], input="Journal-des-acces-2026!\n").exit_code == 1
    assert runner.invoke(args=["users", "disable", "adm.audit"]).exit_code == 0
    assert runner.invoke(args=["keys", "rotate", "--data-key"]).exit_code == 0
    admin = [(r["actor_kind"], r["detail"], r["outcome"]) for r, _ in rows(app) if r["action"] == "admin"]
    assert admin == [("cli", "users create", "success"), ("cli", "users create", "failed"),
                     ("cli", "users disable", "success"), ("cli", "keys rotate", "success")]


def test_a_write_that_fails_at_commit_voids_its_entry(app: Flask, client: FhirClient, backend: str) -> None:
    """PostgreSQL numbers an entry when it is inserted; a write whose commit then fails takes its entry with it and
    leaves a gap, which the web layer explains with a void (and records the failure): verify finds no gap."""
    if backend != "postgresql":
        pytest.skip("SQLite gives the number back on rollback: no gap to explain")
    engine = app.extensions["dui"].engine
    with engine.begin() as conn:  # the database refuses this resource only at commit (a deferred trigger)
        conn.execute(text("CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                          "IF NEW.res_id = 'fails-at-commit' THEN RAISE EXCEPTION 'refused at commit'; END IF; "
                          "RETURN NULL; END $$"))
        conn.execute(text("CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON resource DEFERRABLE "
                          "INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_at_commit()"))
    try:
        client.create(patient())
        failed = client.put("Patient/fails-at-commit", dict(patient(), id="fails-at-commit"),
                            headers={"X-Request-Id": "commit-fails-01"})
        assert failed.status_code == 500
        client.create(patient())
    finally:
        with engine.begin() as conn:
            conn.execute(text("DROP TRIGGER refuse_at_commit ON resource"))
            conn.execute(text("DROP FUNCTION refuse_at_commit()"))
    found = [(r["action"], r["outcome"], r["status"], r["request_id"]) for r, _ in rows(app)]
    assert ("update", "error", 500, "commit-fails-01") in found
    assert any(action == "void" and request_id == "commit-fails-01" for action, _, _, request_id in found), found
    result = app.test_cli_runner().invoke(args=["audit", "verify", "--grace", "0"])
    assert result.exit_code == 0, result.output
