"""``dui purge`` (docs/retention.md): a dry run changes nothing; applied, exactly the rows past their retention go,
in any batch size; a deleted resource goes whole and only when nothing live needs it; the audit trail stays whole."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import Result
from flask import Flask
from sqlalchemy import insert, select, text

from dui.audit.tables import audit_event
from dui.auth.tables import used_jti
from dui.documents.tables import resident_document
from dui.fhir import tables
from dui.messaging.tables import mssante_inbox
from dui.outbox.tables import outbox_job
from dui.services import Services
from dui.settings import RetentionSettings, Settings, SettingsError
from dui.staff.tables import device_event, staff_alert, staff_alert_event
from dui.subscriptions.tables import subscription_ping
from tests.conftest import empty_database
from tests.functional.test_audit_chain import verify
from tests.helpers import FhirClient, ins_identifier, observation, patient

OLD = datetime(2001, 3, 1, 9, 0, tzinfo=UTC)  # long before 20 years ago
RECENT = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
RID_TABLES = [t for t in tables.metadata.sorted_tables if "rid" in t.c and t.name != "audit_event"]


@pytest.fixture
def svc(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[Services]:
    empty_database(app)
    services: Services = app.extensions["dui"]
    yield services
    monkeypatch.undo()


def at(svc: Services, monkeypatch: pytest.MonkeyPatch, moment: datetime) -> None:
    """The app's clock stands still at ``moment``."""
    monkeypatch.setattr(svc, "clock", lambda: moment)


def purge(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=["purge", *args])


def counts(svc: Services) -> dict[str, int]:
    """Rows of every table of the service (the audit trail's included)."""
    with svc.engine.connect() as conn:
        return {t.name: int(conn.execute(text(f"SELECT count(*) FROM {t.name}")).scalar_one())
                for t in tables.metadata.sorted_tables}


def rows_of(svc: Services, rids: list[int]) -> dict[str, int]:
    """Rows naming these row ids, in every table that has a ``rid`` column."""
    with svc.engine.connect() as conn:
        return {t.name: int(conn.execute(select(text("count(*)")).select_from(t).where(t.c.rid.in_(rids)))
                            .scalar_one()) for t in RID_TABLES}


def rid_of(svc: Services, rtype: str, rid: str) -> int:
    with svc.engine.connect() as conn:
        found = conn.execute(select(tables.resource.c.rid).where(tables.resource.c.res_type == rtype,
                                                                 tables.resource.c.res_id == rid)).scalar()
    assert found is not None, f"{rtype}/{rid}"
    return int(found)


def versions(svc: Services, rtype: str, rid: str) -> int:
    with svc.engine.connect() as conn:
        return int(conn.execute(
            select(text("count(*)")).select_from(tables.resource_version.join(tables.resource))
            .where(tables.resource.c.res_type == rtype, tables.resource.c.res_id == rid)).scalar_one())


def put(client: FhirClient, resource: dict[str, Any]) -> None:
    response = client.put(f"{resource['resourceType']}/{resource['id']}", resource)
    assert response.status_code in (200, 201), response.get_data(as_text=True)


def delete(client: FhirClient, reference: str) -> None:
    response = client.delete(reference)
    assert response.status_code in (200, 204), response.get_data(as_text=True)


def build_record(app: Flask, svc: Services, monkeypatch: pytest.MonkeyPatch) -> FhirClient:
    """Resources written and deleted long ago, recently, and now:

    - ``keep`` a live resident written in 2001 and changed since (every version must stay), with a live Observation,
      an Observation deleted in 2001 (part of her live record: kept) and an Organization deleted in 2001 that she
      still names (kept);
    - ``gone`` a resident deleted in 2001 with her Observation and her document's Binary, a Practitioner deleted in
      2001 that nothing names: all four go;
    - ``held`` a resident deleted in 2001 whom a live Observation still names: kept, with that Observation;
    - ``late`` a resident deleted a month ago: kept."""
    client = FhirClient(app.test_client())
    at(svc, monkeypatch, OLD)
    put(client, {"resourceType": "Organization", "id": "closed-org", "name": "Ancien EHPAD"})
    put(client, patient("Ancienne", "Keep", id="keep", managingOrganization={"reference": "Organization/closed-org"}))
    put(client, patient("Partie", "Gone", id="gone", identifier=[ins_identifier("232032A00400570")]))
    put(client, patient("Tenue", "Held", id="held"))
    put(client, {**observation("Patient/gone"), "id": "obs-gone"})
    put(client, {**observation("Patient/keep"), "id": "obs-keep-deleted"})
    put(client, {**observation("Patient/held"), "id": "obs-held"})
    put(client, {"resourceType": "Binary", "id": "bin-gone", "contentType": "application/pdf",
                 "securityContext": {"reference": "Patient/gone"}, "data": base64.b64encode(b"%PDF-1.4").decode()})
    put(client, {"resourceType": "Practitioner", "id": "pract-gone", "name": [{"family": "Parti"}]})
    at(svc, monkeypatch, OLD + timedelta(days=2))
    put(client, patient("Ancienne", "Keep", id="keep", active=True,
                        managingOrganization={"reference": "Organization/closed-org"}))
    for reference in ("Observation/obs-gone", "Binary/bin-gone", "Patient/gone", "Observation/obs-keep-deleted",
                      "Organization/closed-org", "Practitioner/pract-gone", "Patient/held"):
        delete(client, reference)
    at(svc, monkeypatch, RECENT)
    put(client, patient("Récente", "Late", id="late"))
    delete(client, "Patient/late")
    at(svc, monkeypatch, NOW)
    put(client, {**observation("Patient/keep"), "id": "obs-keep"})  # the newest row of the store is a live one
    return client


@pytest.fixture
def record(app: Flask, svc: Services, monkeypatch: pytest.MonkeyPatch) -> FhirClient:
    return build_record(app, svc, monkeypatch)


GONE = [("Observation", "obs-gone"), ("Binary", "bin-gone"), ("Patient", "gone"), ("Practitioner", "pract-gone")]
KEPT = {("Patient", "keep"): 2, ("Observation", "obs-keep"): 1, ("Observation", "obs-keep-deleted"): 2,
        ("Organization", "closed-org"): 2, ("Patient", "held"): 2, ("Observation", "obs-held"): 1,
        ("Patient", "late"): 2}


def test_a_dry_run_changes_nothing_and_says_what_would_go(app: Flask, svc: Services, record: FhirClient) -> None:
    before = counts(svc)
    result = purge(app, "tombstones")
    assert result.exit_code == 0, result.output + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == ("tombstones: 4 deleted resource(s) would go (8 version(s)), resources deleted before "
                        "2006-12-01T09:00:00Z; the oldest 2001-03-03T09:00:00Z; 3 kept: a live resource or a live "
                        "resident's record refers to them")
    assert lines[-1] == "dry run: nothing was removed; run again with --yes to purge"
    assert counts(svc) == before


@pytest.mark.parametrize("batch", ["1", "500"])
def test_applied_a_deleted_record_goes_whole_and_nothing_live_is_touched(app: Flask, svc: Services,
                                                                          record: FhirClient, batch: str) -> None:
    gone = [rid_of(svc, *key) for key in GONE]
    kept = {key: rid_of(svc, *key) for key in KEPT}
    kept_rows = rows_of(svc, list(kept.values()))
    assert record.get("Patient/gone").status_code == 410
    assert any(e["resource"]["id"] == "obs-gone" for e in record.search("Observation/_history").get("entry", [])
               if "resource" in e)

    result = purge(app, "tombstones", "--yes", "--batch", batch)
    assert result.exit_code == 0, result.output + result.stderr
    assert result.stdout.splitlines() == [
        "tombstones: 4 deleted resource(s) purged (8 version(s)), resources deleted before 2006-12-01T09:00:00Z; "
        "the oldest 2001-03-03T09:00:00Z; 3 kept: a live resource or a live resident's record refers to them"]
    assert "Purging tombstones" in result.stderr

    # gone from every table that names a resource row, the index's included; every kept row is still there
    assert set(rows_of(svc, gone).values()) == {0}
    assert rows_of(svc, list(kept.values())) == kept_rows
    for key, count in KEPT.items():
        assert versions(svc, *key) == count, key
    for rtype, rid in GONE:
        assert record.get(f"{rtype}/{rid}").status_code == 404
        assert record.get(f"{rtype}/{rid}/_history").status_code == 404
    assert record.get("Patient/late").status_code == 410  # deleted recently: still a tombstone
    assert record.get("Patient/keep/_history/1").status_code == 200  # the live resident's old version stays
    history = record.search("Observation/_history")
    assert {e["request"]["url"].split("/")[1] for e in history["entry"]} == {"obs-keep", "obs-keep-deleted",
                                                                              "obs-held"}
    assert [e["resource"]["id"] for e in record.search("Observation?subject=Patient/keep")["entry"]] == ["obs-keep"]
    assert record.search("Patient?family=partie").get("total", 0) == 0
    # the INS of the resident removed is free again; her identifiers are nowhere
    put(record, patient("Nouvelle", "Venue", id="new", identifier=[ins_identifier("232032A00400570")]))

    # run again: nothing more goes; the index is whole and the audit trail verifies
    again = purge(app, "tombstones", "--yes")
    assert again.stdout.startswith("tombstones: 0 deleted resource(s) purged"), again.stdout
    reindex = app.test_cli_runner().invoke(args=["reindex", "--restart"])
    assert reindex.exit_code == 0, reindex.output
    assert record.search("Patient?identifier=232032A00400570")["entry"][0]["resource"]["id"] == "new"
    checked = verify(app)
    assert checked.exit_code == 0, checked.output
    with svc.engine.connect() as conn:
        entries = conn.execute(select(audit_event.c.outcome, audit_event.c.count).where(
            audit_event.c.action == "admin", audit_event.c.detail == "purge tombstones")
            .order_by(audit_event.c.seq)).all()
    assert [tuple(e) for e in entries] == [("success", 4), ("success", 0)]


def test_a_shorter_retention_and_a_moment_are_explicit_choices(app: Flask, svc: Services,
                                                               record: FhirClient) -> None:
    week = purge(app, "tombstones", "--older-than", "7")  # `late` was deleted a month ago: it is eligible now
    assert week.stdout.startswith("tombstones: 5 deleted resource(s) would go"), week.stdout
    assert purge(app, "tombstones", "--before", "2001-03-02").stdout.startswith(
        "tombstones: 0 deleted resource(s) would go")
    plain = purge(app, "--yes")  # every category but tombstones: the record is not touched
    assert plain.exit_code == 0, plain.output + plain.stderr
    assert "tombstones" not in plain.stdout
    assert record.get("Patient/gone").status_code == 410


def test_resident_document_rows_of_a_resident_removed_go_with_her(app: Flask, svc: Services,
                                                                    record: FhirClient) -> None:
    with svc.engine.begin() as conn:  # the record's changes made them already, or not
        present = {r[0] for r in conn.execute(select(resident_document.c.patient_id))}
        for missing in {"gone", "keep", "held"} - present:
            conn.execute(insert(resident_document).values(patient_id=missing, kind="DLU"))
    assert purge(app, "tombstones", "--yes").exit_code == 0
    with svc.engine.connect() as conn:
        assert {r[0] for r in conn.execute(select(resident_document.c.patient_id))} >= {"keep", "held"}
        assert "gone" not in {r[0] for r in conn.execute(select(resident_document.c.patient_id))}


def add_jobs(svc: Services) -> dict[str, int]:
    """Jobs of every state, old and recent; the newest row is a due job."""
    old, recent = NOW - timedelta(days=200), NOW - timedelta(days=10)
    specs = {
        "done-old": ("test.kind", "done", old), "done-recent": ("test.kind", "done", recent),
        "cancelled-old": ("test.kind", "cancelled", old), "dead-old": ("test.kind", "dead", old),
        "dead-recent": ("test.kind", "dead", recent), "running-old": ("test.kind", "running", old),
        "sent-dmp-old": ("dmp.send", "done", old), "sent-mail-old": ("mssante.send", "done", old),
        "dead-dmp-old": ("dmp.send", "dead", old), "due-old": ("test.kind", "due", old),
        "due-new": ("test.kind", "due", NOW),
    }
    ids = {}
    with svc.engine.begin() as conn:
        for key, (kind, state, when) in specs.items():
            ids[key] = conn.execute(insert(outbox_job).values(
                kind=kind, target="DocumentReference/x", idempotency_key=key, state=state, attempts=1,
                next_attempt_at=when, created_at=when, updated_at=when,
                done_at=when if state == "done" else None).returning(outbox_job.c.id)).scalar_one()
    return ids


def outbox_left(svc: Services) -> set[str]:
    with svc.engine.connect() as conn:
        return {r[0] for r in conn.execute(select(outbox_job.c.idempotency_key))}


@pytest.mark.parametrize("batch", ["1", "500"])
def test_the_outbox_loses_only_delivered_and_cancelled_jobs_past_the_retention(
        app: Flask, svc: Services, monkeypatch: pytest.MonkeyPatch, batch: str) -> None:
    add_jobs(svc)
    at(svc, monkeypatch, NOW)
    dry = purge(app, "outbox")
    assert dry.stdout.splitlines()[0] == ("outbox: 2 row(s) would go (outbox_job 2), outbox jobs done or cancelled "
                                          "before 2026-09-02T09:00:00Z; the oldest 2026-05-15T09:00:00Z")
    result = purge(app, "outbox", "--yes", "--batch", batch)
    assert result.exit_code == 0, result.output + result.stderr
    everything = {"done-old", "done-recent", "cancelled-old", "dead-old", "dead-recent", "running-old",
                  "sent-dmp-old", "sent-mail-old", "dead-dmp-old", "due-old", "due-new"}
    assert outbox_left(svc) == everything - {"done-old", "cancelled-old"}
    dead = purge(app, "outbox", "--dead", "--yes", "--batch", batch)
    assert dead.stdout.startswith("outbox: 2 row(s) purged"), dead.stdout
    # due and running jobs are never purged, however old; nor the record that a document was sent
    assert outbox_left(svc) == {"done-recent", "dead-recent", "running-old", "sent-dmp-old", "sent-mail-old",
                                "due-old", "due-new"}


def test_operational_tables_lose_their_old_rows_only(app: Flask, svc: Services,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    at(svc, monkeypatch, NOW)
    old = NOW - timedelta(days=400)
    with svc.engine.begin() as conn:
        for alert_id, state in (("a-closed", "acknowledged"), ("a-open", "open")):
            conn.execute(insert(staff_alert).values(
                id=alert_id, establishment="690001425", room="room-1", sensor="s-1", kind="fall", state=state,
                events=1, raised_at=old, last_event_at=old))
        conn.execute(insert(staff_alert_event), [
            {"alert_id": "a-closed", "establishment": "690001425", "kind": "raised", "at": old},
            {"alert_id": "a-open", "establishment": "690001425", "kind": "raised", "at": old},
            {"alert_id": "a-closed", "establishment": "690001425", "kind": "acknowledged", "at": NOW}])
        conn.execute(insert(device_event), [
            {"client_id": "gw", "event_id": "e-old", "alert_id": "a-closed", "received_at": old},
            {"client_id": "gw", "event_id": "e-new", "alert_id": "a-closed", "received_at": NOW}])
        for state, decided in (("assigned", old), ("rejected", old), ("pending", None), ("rejected", NOW)):
            conn.execute(insert(mssante_inbox).values(
                message_id=f"<{state}.{decided}@x>", received_at=old, sender_domain="x", reason="r",
                task_id="t", state=state, decided_at=decided))
        conn.execute(insert(subscription_ping), [
            {"subscription_id": "s", "resource_type": "Flag", "resource_id": "f", "at": NOW - timedelta(minutes=m)}
            for m in (60, 10, 1)])
        conn.execute(insert(used_jti), [
            {"client_id": "c", "jti": "expired", "expires_at": int(NOW.timestamp()) - 3600},
            {"client_id": "c", "jti": "live", "expires_at": int(NOW.timestamp()) + 60}])
        if conn.dialect.name == "postgresql":
            conn.execute(text("INSERT INTO rate_limit VALUES ('full', 1, 0, true, 0), "
                              "('busy', 1, 0, true, extract(epoch FROM now()) + 3600)"))
    before = counts(svc)
    dry = purge(app)
    assert counts(svc) == before
    buckets = 1 if svc.engine.dialect.name == "postgresql" else 0
    assert dry.stdout.splitlines()[1:4] == [
        "alerts: 2 row(s) would go (device_event 1, staff_alert_event 1), sensor and alert events before "
        "2026-11-01T09:00:00Z; the oldest 2025-10-27T09:00:00Z",
        "mssante: 2 row(s) would go (mssante_inbox 2), MSSanté queue rows decided before 2025-12-01T09:00:00Z; "
        "the oldest 2025-10-27T09:00:00Z",
        f"expired: {3 + buckets} row(s) would go (subscription_ping 2, used_jti 1, rate_limit {buckets}, "
        "bulk_export 0), expired pings, assertion ids, rate-limit buckets and bulk exports (with their files); "
        "the oldest 1970-01-01T00:00:00Z" if buckets else
        "expired: 3 row(s) would go (subscription_ping 2, used_jti 1, rate_limit 0, bulk_export 0), expired pings, "
        "assertion ids, rate-limit buckets and bulk exports (with their files); the oldest 2026-12-01T08:00:00Z"]
    result = purge(app, "--yes", "--batch", "1")
    assert result.exit_code == 0, result.output + result.stderr
    with svc.engine.connect() as conn:
        assert {tuple(r) for r in conn.execute(select(staff_alert_event.c.alert_id, staff_alert_event.c.kind))} == {
            ("a-open", "raised"), ("a-closed", "acknowledged")}
        assert [r[0] for r in conn.execute(select(device_event.c.event_id))] == ["e-new"]
        assert conn.execute(text("SELECT count(*) FROM staff_alert")).scalar_one() == 2
        assert sorted((r.state, r.decided_at is None) for r in conn.execute(select(mssante_inbox))) == [
            ("pending", True), ("rejected", False)]
        assert conn.execute(text("SELECT count(*) FROM subscription_ping")).scalar_one() == 1
        assert [r[0] for r in conn.execute(select(used_jti.c.jti))] == ["live"]
        if conn.dialect.name == "postgresql":
            assert [r[0] for r in conn.execute(text("SELECT key FROM rate_limit"))] == ["busy"]
        details = {r.detail: r.count for r in conn.execute(
            select(audit_event.c.detail, audit_event.c.count).where(audit_event.c.action == "admin"))}
    assert details == {"purge outbox": 0, "purge alerts": 2, "purge mssante": 2, "purge expired": 3 + buckets}


@pytest.mark.parametrize("args, said", [
    (["--older-than", "0"], "Error: Invalid value for '--older-than'"),
    (["--older-than", "x"], "Error: Invalid value for '--older-than'"),
    (["everything"], "Error: Invalid value for '[CATEGORY]...': 'everything' is not one of"),
    (["--older-than", "30", "--before", "2020-01-01"], "Error: give --older-than or --before, not both"),
    (["--before", "2099-01-01"], "Error: --before 2099-01-01T00:00:00Z is in the future"),
    (["--before", "yesterday"], "Error: Invalid value for '--before'"),
    (["alerts", "--dead"], "Error: --dead is about the outbox: name the outbox category too"),
    (["--batch", "0"], "Error: Invalid value for '--batch'"),
])
def test_a_bad_option_is_one_line_and_a_non_zero_exit(app: Flask, svc: Services, args: list[str],
                                                      said: str) -> None:
    before = counts(svc)
    result = purge(app, *args, "--yes")
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(said), result.stderr
    assert counts(svc) == before


def test_the_retention_settings() -> None:
    assert Settings.from_env({}).retention == RetentionSettings(90, 30, 365, 7305)
    read = Settings.from_env({"DUI_RETENTION_OUTBOX_DAYS": "7", "DUI_RETENTION_ALERT_EVENTS_DAYS": "2",
                              "DUI_RETENTION_MSSANTE_DAYS": "30", "DUI_RETENTION_TOMBSTONES_DAYS": "3650"})
    assert read.retention == RetentionSettings(7, 2, 30, 3650)
    with pytest.raises(SettingsError, match="DUI_RETENTION_TOMBSTONES_DAYS must be at least 1, not 0"):
        Settings.from_env({"DUI_RETENTION_TOMBSTONES_DAYS": "0"})


def test_the_settings_decide_the_cutoffs(app: Flask, svc: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    add_jobs(svc)
    at(svc, monkeypatch, NOW)
    monkeypatch.setattr(svc, "settings", svc.settings.with_(retention=RetentionSettings(outbox_days=5)))
    result = purge(app, "outbox")
    assert result.stdout.startswith("outbox: 3 row(s) would go"), result.stdout  # done-recent too, 10 days old



def test_the_newest_row_of_the_store_waits_for_a_newer_one(app: Flask, svc: Services,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    client = FhirClient(app.test_client())
    at(svc, monkeypatch, OLD)
    for name in ("first", "last"):
        put(client, {"resourceType": "Practitioner", "id": name, "name": [{"family": name}]})
    for name in ("first", "last"):
        delete(client, f"Practitioner/{name}")
    at(svc, monkeypatch, NOW)
    result = purge(app, "tombstones", "--yes")
    assert result.stdout.splitlines() == [
        "tombstones: 1 deleted resource(s) purged (2 version(s)), resources deleted before 2006-12-01T09:00:00Z; "
        "the oldest 2001-03-01T09:00:00Z; 1 kept for now: the newest row of the store"]
    last = rid_of(svc, "Practitioner", "last")
    put(client, {"resourceType": "Practitioner", "id": "new", "name": [{"family": "new"}]})
    assert purge(app, "tombstones", "--yes").stdout.startswith("tombstones: 1 deleted resource(s) purged")
    assert set(rows_of(svc, [last]).values()) == {0}
    assert rid_of(svc, "Practitioner", "new") > last  # numbers are never given twice


def test_an_interrupted_purge_keeps_whole_batches_records_what_went_and_resumes(
        app: Flask, svc: Services, record: FhirClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from dui.maintenance.purge import TombstonePurger

    remove = TombstonePurger._remove
    calls = []

    def failing(self: TombstonePurger, session: Any, rows: Any) -> int:
        if rows:
            calls.append(len(rows))
            if len(calls) == 2:
                raise KeyboardInterrupt
        return remove(self, session, rows)

    monkeypatch.setattr(TombstonePurger, "_remove", failing)
    stopped = purge(app, "tombstones", "--yes", "--batch", "1")
    assert stopped.exit_code != 0
    monkeypatch.setattr(TombstonePurger, "_remove", remove)
    with svc.engine.connect() as conn:
        left = conn.execute(select(text("count(*)")).select_from(tables.resource)
                            .where(tables.resource.c.deleted == True)).scalar_one()  # noqa: E712
    assert left == 7  # one of the four went, whole; the second batch rolled back
    assert [key for key in GONE if record.get("/".join(key)).status_code == 404] == [("Patient", "gone")]
    resumed = purge(app, "tombstones", "--yes")
    assert resumed.stdout.startswith("tombstones: 3 deleted resource(s) purged"), resumed.stdout
    with svc.engine.connect() as conn:
        entries = conn.execute(select(audit_event.c.outcome, audit_event.c.count).where(
            audit_event.c.detail == "purge tombstones").order_by(audit_event.c.seq)).all()
    assert [tuple(e) for e in entries] == [("failed", 1), ("success", 3)]


def test_on_postgresql_a_resource_brought_back_meanwhile_is_not_purged(app: Flask, svc: Services, backend: str,
                                                                       record: FhirClient) -> None:
    """A writer holds a tombstone's row (bringing it back to life) while the purge reaches it: the purge waits for
    it, then leaves it, and what refers to it, alone."""
    if backend != "postgresql":
        pytest.skip("SQLite has one writer at a time: the purge's batch and the write cannot interleave")
    gone = rid_of(svc, "Patient", "gone")
    before = rows_of(svc, [gone])
    results: list[Result] = []
    with svc.engine.connect() as writer:
        with writer.begin():
            writer.execute(tables.resource.update().where(tables.resource.c.rid == gone).values(deleted=False))
            purging = threading.Thread(target=lambda: results.append(purge(app, "tombstones", "--yes")))
            purging.start()
            purging.join(1.5)
            assert purging.is_alive(), "the purge did not wait for the row the writer holds"
        purging.join(60)
    assert results and results[0].exit_code == 0, results and results[0].output
    # only the Practitioner went: the resident is back, and her Observation and Binary with her
    assert results[0].stdout.startswith("tombstones: 1 deleted resource(s) purged (2 version(s))"), results[0].stdout
    assert rows_of(svc, [gone]) == before
    assert versions(svc, "Observation", "obs-gone") == 2 and versions(svc, "Binary", "bin-gone") == 2


def test_a_batch_given_up_to_a_concurrent_writer_is_tried_again(svc: Services) -> None:
    from sqlalchemy.exc import OperationalError

    from dui.cli.purge import _batch
    from dui.maintenance.purge import Step

    class Refusal(Exception):
        def __init__(self, sqlstate: str) -> None:
            self.sqlstate = sqlstate

    class Flaky:
        category = "outbox"

        def __init__(self, sqlstate: str) -> None:
            self.sqlstate, self.calls = sqlstate, 0

        def step(self, session: Any, limit: int) -> Step:
            self.calls += 1
            if self.calls == 1:
                raise OperationalError("DELETE ...", {}, Refusal(self.sqlstate))
            return Step(0, 0, True)

    deadlocked = Flaky("40P01")
    assert _batch(svc, deadlocked, 10).done and deadlocked.calls == 2  # type: ignore[arg-type]
    broken = Flaky("08006")  # the connection is lost: said, not tried again
    with pytest.raises(OperationalError):
        _batch(svc, broken, 10)  # type: ignore[arg-type]
    assert broken.calls == 1
