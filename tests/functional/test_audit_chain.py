"""The audit trail against someone who can write to the database: a chain keyed with the audit key, heads kept
outside the database, numbers that cannot go missing unexplained, no bypass for the service's own role, and an
entry never dropped for what it holds. Each attack is played as the database's owner (``tests.auditkit``) or
with the service's own connection, then found by the real ``dui audit`` commands."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from alembic import command
from click.testing import CliRunner, Result
from flask import Flask
from flask.cli import ScriptInfo
from sqlalchemy import Connection, inspect, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from dui import migrations
from dui.app import create_app
from dui.audit import trail
from dui.audit.keys import AuditKey, audit_keys, read_audit_key
from dui.audit.tables import audit_event, audit_event_patient
from dui.auth.actor import Actor
from dui.cli import cli as dui_cli
from dui.crypto.master import KEY_BYTES, write_key_file
from dui.db import make_engine, normalize_url
from dui.fhir.validation import Validator
from dui.logs import JsonFormatter
from dui.services import Services
from dui.settings import AuditSettings
from tests.auditkit import owner_maintenance
from tests.conftest import PG_URL, TEST_AUDIT, TEST_AUDIT_KEY_FILE, TEST_HEADS_FILE
from tests.conftest import test_settings as settings_for
from tests.functional.test_audit import rows
from tests.helpers import FhirClient, patient

ROOT = Path(__file__).resolve().parents[2]


def cli(app: Flask, *args: str) -> Result:
    return app.test_cli_runner().invoke(args=list(args))


def unsealed(app: Flask) -> int:
    with app.extensions["dui"].engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM audit_event WHERE chain_pos IS NULL")).scalar_one())


def seal_all(app: Flask, timeout: float = 30.0) -> None:
    """``dui audit seal`` until every entry is chained. On PostgreSQL a seal takes only entries older than every
    transaction running on the server (another test run's may hold them back a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        result = cli(app, "audit", "seal")
        assert result.exit_code == 0, result.output
        if unsealed(app) == 0:
            return
        assert time.monotonic() < deadline, "entries still unsealed"
        time.sleep(0.05)


def verify(app: Flask, *args: str) -> Result:
    """``dui audit verify``, once every entry is sealed (the command seals too, but only what has settled)."""
    seal_all(app)
    return cli(app, "audit", "verify", *args)


def record_entries(client: FhirClient, count: int) -> str:
    pid = client.create(patient())["id"]
    for _ in range(count - 1):
        client.get(f"Patient/{pid}")
    return pid


@contextmanager
def as_owner(app: Flask) -> Iterator[Connection]:
    with app.extensions["dui"].engine.begin() as conn, owner_maintenance(conn):
        yield conn


def failure(result: Result) -> str:
    """The one line a failing ``dui audit verify`` prints."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


Link = Callable[[str, Any, list[str]], tuple[str, str | None]]  # (previous hash, row, residents) -> (hash, key id)


def rechain(conn: Connection, start: int, link: Link) -> None:
    """Recompute the chain from position ``start`` with ``link``, as an attacker would after changing an entry."""
    entries = conn.execute(select(audit_event).where(audit_event.c.chain_pos >= start)
                           .order_by(audit_event.c.chain_pos)).mappings().all()
    previous = entries[0]["prev_hash"] if start > 1 else trail.GENESIS
    for row in entries:
        residents = list(conn.execute(select(audit_event_patient.c.patient_id)
                                      .where(audit_event_patient.c.seq == row["seq"])).scalars())
        digest, key_id = link(previous, row, residents)
        conn.execute(update(audit_event).where(audit_event.c.seq == row["seq"])
                     .values(prev_hash=previous, hash=digest, key_id=key_id))
        previous = digest


def plain_sha256(previous: str, row: Any, residents: list[str]) -> tuple[str, str | None]:
    """The public, unkeyed chain function of the trail before it was keyed."""
    return trail.legacy_hash(previous, trail.legacy_content(row, residents)), None


def other_key(key: AuditKey, *, own_id: bool) -> Link:
    def link(previous: str, row: Any, residents: list[str]) -> tuple[str, str | None]:
        return trail.chain_hash(key, previous, trail.content(row, residents)), key.key_id if own_id else row["key_id"]
    return link


# -- 1. a keyed chain -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["sha256 from the entry", "sha256 from the start", "another key",
                                 "another key and its id"])
def test_an_altered_entry_rechained_without_the_key_is_found(app: Flask, client: FhirClient, how: str) -> None:
    record_entries(client, 6)
    seal_all(app)
    intact = verify(app)
    assert intact.exit_code == 0 and "audit trail intact: 6 entries chained" in intact.output, intact.output
    stranger = AuditKey(os.urandom(KEY_BYTES))
    link = {"sha256 from the entry": plain_sha256, "sha256 from the start": plain_sha256,
            "another key": other_key(stranger, own_id=False),
            "another key and its id": other_key(stranger, own_id=True)}[how]
    with as_owner(app) as conn:
        conn.execute(text("UPDATE audit_event SET actor_id = 'quelqu-un' WHERE chain_pos = 3"))
        rechain(conn, 1 if how == "sha256 from the start" else 3, link)
    line = failure(verify(app))
    expected = {
        "sha256 from the entry": "audit trail ALTERED: entry at chain position 3 (seq 3) carries no audit key id "
                                 "after entries sealed with the audit key",
        # Every entry made to look as if sealed before the key: only the heads outside the database show it.
        "sha256 from the start": "audit trail ALTERED: chain position ",  # the first head: see below
        "another key": "audit trail ALTERED: entry at chain position 3 (seq 3) was altered after it was sealed",
        "another key and its id": f"audit trail NOT VERIFIED: entry at chain position 3 (seq 3) names audit key "
                                  f"{stranger.key_id}, which this process does not hold",
    }[how]
    assert line.startswith(expected), line
    if how == "sha256 from the start":
        assert "does not match the head sealed at" in line and "the chain was recomputed after that seal" in line


def test_entries_sealed_before_the_key_still_verify_and_the_chain_continues_keyed(app: Flask,
                                                                                 client: FhirClient) -> None:
    record_entries(client, 3)
    # Sealed as revision 0009's code did: plain SHA-256, no key id (the service's connection may fill in the
    # chain columns of an unsealed entry, once).
    svc: Services = app.extensions["dui"]
    with svc.engine.begin() as conn:
        previous = trail.GENESIS
        for position, row in enumerate(conn.execute(select(audit_event).order_by(audit_event.c.seq))
                                       .mappings().all(), 1):
            residents = list(conn.execute(select(audit_event_patient.c.patient_id)
                                          .where(audit_event_patient.c.seq == row["seq"])).scalars())
            digest = trail.legacy_hash(previous, trail.legacy_content(row, residents))
            conn.execute(update(audit_event).where(audit_event.c.seq == row["seq"])
                         .values(chain_pos=position, prev_hash=previous, hash=digest))
            previous = digest
    record_entries(client, 2)
    result = verify(app)
    assert result.exit_code == 0, result.output
    assert "5 entries chained; 3 of them sealed before the audit key (plain SHA-256)" in result.output
    keyed = [(r["chain_pos"], r["key_id"]) for r, _ in rows(app)]
    current = audit_keys(svc.settings).current.key_id
    assert keyed == [(1, None), (2, None), (3, None), (4, current), (5, current)]
    # The unkeyed part is bound by the keyed entry after it: recomputing it breaks that entry's seal.
    with as_owner(app) as conn:
        conn.execute(text("UPDATE audit_event SET actor_id = 'quelqu-un' WHERE chain_pos = 2"))
        rechain(conn, 2, lambda p, r, res: (trail.legacy_hash(p, trail.legacy_content(r, res)), r["key_id"])
                if r["key_id"] is None else (r["hash"], r["key_id"]))
    line = failure(verify(app))
    assert line.startswith("audit trail ALTERED: entry at chain position 4 (seq 4) was altered"), line


def test_after_a_rotation_the_previous_key_verifies_what_it_sealed(database_url: str, app: Flask,
                                                                   client: FhirClient, tmp_path: Path) -> None:
    record_entries(client, 3)
    seal_all(app)
    new_key = tmp_path / "audit-2027.key"
    generated = cli(app, "keys", "generate", "--audit", str(new_key))
    assert generated.exit_code == 0, generated.output
    assert f"audit key {read_audit_key(new_key).key_id} written" in generated.output
    assert oct(new_key.stat().st_mode & 0o777) == "0o600"
    old_id, new_id = read_audit_key(TEST_AUDIT_KEY_FILE).key_id, read_audit_key(new_key).key_id
    apps: list[Flask] = []

    def app_with(**audit: Any) -> Flask:
        apps.append(create_app(settings_for(database_url, audit=AuditSettings(heads_file=str(TEST_HEADS_FILE),
                                                                                **audit))))
        return apps[-1]

    try:
        rotated = app_with(key_file=str(new_key), previous_key_files=(str(TEST_AUDIT_KEY_FILE),))
        record_entries(FhirClient(rotated.test_client()), 2)
        seal_all(rotated)
        assert [r["key_id"] for r, _ in rows(rotated)] == [old_id] * 3 + [new_id] * 2
        result = verify(rotated)
        assert result.exit_code == 0 and "5 entries chained" in result.output, result.output
        # Without the previous key, the entries it sealed cannot be verified; the old key alone, the new ones.
        line = failure(verify(app_with(key_file=str(new_key))))
        assert line.startswith(f"audit trail NOT VERIFIED: entry at chain position 1 (seq 1) names audit key "
                               f"{old_id}, which this process does not hold (it holds {new_id}): after a rotation "
                               "set DUI_AUDIT_KEY_PREVIOUS_FILE"), line
        line = failure(verify(app))
        assert f"entry at chain position 4 (seq 4) names audit key {new_id}" in line
        # Whoever still holds the replaced key cannot recompute what the new one sealed with it.
        with as_owner(app) as conn:
            conn.execute(text("UPDATE audit_event SET actor_id = 'quelqu-un' WHERE chain_pos = 5"))
            rechain(conn, 5, other_key(read_audit_key(TEST_AUDIT_KEY_FILE), own_id=True))
        line = failure(verify(rotated))
        assert line.startswith(f"audit trail ALTERED: entry at chain position 5 (seq 5) goes back to audit key "
                               f"{old_id} after {new_id}"), line
    finally:
        for made in apps:
            made.extensions["dui"].dispose()


@contextmanager
def database_at(revision: str, backend: str, tmp_path: Path) -> Iterator[str]:
    """A database of its own, migrated to ``revision`` (PostgreSQL: a schema of its own, dropped afterwards)."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.sqlite'}"
        migrations.upgrade(url, revision)
        yield url
        return
    if not PG_URL:
        pytest.skip("PostgreSQL tests need DUI_TEST_DATABASE_URL (see README, 'Tests')")
    schema = f"dui_old_{uuid.uuid4().hex[:12]}"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = normalize_url(PG_URL) + ("&" if "?" in PG_URL else "?") + f"options={quote(f'-csearch_path={schema}')}"
    try:
        migrations.upgrade(url, revision)
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_trail_chained_before_the_key_upgrades_verifies_and_downgrades(backend: str, tmp_path: Path) -> None:
    with database_at("0010", backend, tmp_path) as url:
        engine = make_engine(url)
        now = "2026-11-30 10:00:00" + ("+00" if backend == "postgresql" else "")
        with engine.begin() as conn:  # four entries as revision 0010 recorded them; the third one lost
            for n in range(4):
                conn.execute(text("INSERT INTO audit_event (recorded, actor_kind, actor_id, roles, action, outcome) "
                                  f"VALUES ('{now}', 'staff', 'ide-{n}', 'infirmier', 'read', 'success')"))
            conn.execute(text("INSERT INTO audit_event_patient (seq, patient_id) VALUES (2, 'p-2')"))
        with engine.begin() as conn:  # what revision 0009 allowed: the maintenance switch, then its seal
            conn.execute(text("SET LOCAL dui.audit_maintenance = 'on'") if backend == "postgresql"
                         else text("INSERT INTO audit_maintenance (id) VALUES (1)"))
            conn.execute(text("DELETE FROM audit_event WHERE seq = 3"))
            conn.execute(text("DELETE FROM audit_maintenance") if backend == "sqlite" else text("SELECT 1"))
        with engine.begin() as conn:
            previous = trail.GENESIS
            for position, row in enumerate(conn.execute(select(audit_event.c.seq, *[
                    audit_event.c[c] for c in trail.LEGACY_CONTENT_COLUMNS if c != "seq"]).where(
                    audit_event.c.seq <= 2).order_by(audit_event.c.seq)).mappings().all(), 1):
                residents = ["p-2"] if row["seq"] == 2 else []
                digest = trail.legacy_hash(previous, trail.legacy_content(row, residents))
                conn.execute(text("UPDATE audit_event SET chain_pos = :p, prev_hash = :v, hash = :h WHERE seq = :s"),
                             {"p": position, "v": previous, "h": digest, "s": row["seq"]})
                previous = digest
        engine.dispose()
        migrations.upgrade(url)
        upgraded = create_app(settings_for(url, audit=AuditSettings(key_file=str(TEST_AUDIT_KEY_FILE),
                                                                   heads_file=str(tmp_path / "heads.jsonl"))))
        try:
            record_entries(FhirClient(upgraded.test_client()), 2)
            seal_all(upgraded)
            result = verify(upgraded, "--grace", "0")
            assert result.exit_code == 0, result.output
            assert "6 entries chained; 2 of them sealed before the audit key (plain SHA-256)" in result.output
            assert "1 missing numbers explained" in result.output  # seq 3, acknowledged by the migration
            found = [(r["seq"], r["action"], r["key_id"] is None) for r, _ in rows(upgraded)]
            assert found == [(1, "read", True), (2, "read", True), (4, "read", False),
                             (5, "acknowledge-gap", False), (6, "create", False), (7, "read", False)]
        finally:
            upgraded.extensions["dui"].dispose()
        command.downgrade(migrations.alembic_config(url), "0010")
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                columns = {c["name"] for c in inspect(conn).get_columns("audit_event")}
                assert "key_id" not in columns and "gap_first" not in columns
                assert "audit_maintenance" in inspect(conn).get_table_names()
                chained = conn.execute(text("SELECT seq FROM audit_event WHERE chain_pos IS NOT NULL "
                                            "ORDER BY seq")).scalars().all()
                assert chained == [1, 2]  # what the key sealed is unsealed: 0009's code chains it again
        finally:
            engine.dispose()
        migrations.upgrade(url)
        assert migrations.current(url) == migrations.head()


# -- 2. heads outside the database ------------------------------------------------------------------------------


def test_removing_the_newest_sealed_entries_is_found_by_the_heads(app: Flask, client: FhirClient,
                                                                   tmp_path: Path) -> None:
    record_entries(client, 3)
    seal_all(app)
    record_entries(client, 2)
    seal_all(app)
    exported = cli(app, "audit", "export", "--heads")
    assert exported.exit_code == 0, exported.output
    heads = [json.loads(line) for line in exported.stdout.splitlines()]
    positions = [h["position"] for h in heads]  # PostgreSQL may seal in several runs, each with its head
    assert positions == sorted(positions) and 3 in positions and positions[-1] == 5
    assert sum(h["sealed"] for h in heads) == 5
    with app.extensions["dui"].unit_of_work(write=False) as session:
        position, digest, key_id = trail.head(session)
    assert (heads[-1]["position"], heads[-1]["hash"], heads[-1]["key_id"]) == (position, digest, key_id)
    assert key_id == audit_keys(app.extensions["dui"].settings).current.key_id and heads[-1]["time"]
    copy = tmp_path / "heads-copy.jsonl"  # kept apart, e.g. on another host
    shutil.copy(TEST_HEADS_FILE, copy)
    assert verify(app, "--heads", str(copy)).exit_code == 0
    with as_owner(app) as conn:  # the two newest sealed entries, and their residents
        conn.execute(text("DELETE FROM audit_event_patient WHERE seq IN "
                          "(SELECT seq FROM audit_event WHERE chain_pos > 3)"))
        conn.execute(text("DELETE FROM audit_event WHERE chain_pos > 3"))
    line = failure(verify(app, "--heads", str(copy)))
    assert line.startswith("audit trail ALTERED: the chain ends at position 3, but the head sealed at "), line
    assert f"(heads line {len(heads)}) names position 5: sealed entries were removed from the end" in line
    assert failure(verify(app)) == line  # DUI_AUDIT_HEADS_FILE, checked by default, says the same
    # The chain by itself holds: only the heads show what is missing.
    TEST_HEADS_FILE.unlink()
    alone = verify(app)
    assert alone.exit_code == 0 and "no heads file checked" in alone.output


def test_a_head_that_differs_from_the_chain_is_named(app: Flask, client: FhirClient, tmp_path: Path) -> None:
    record_entries(client, 2)
    seal_all(app)
    forged = tmp_path / "heads.jsonl"
    head = json.loads(TEST_HEADS_FILE.read_text().splitlines()[0])
    forged.write_text(json.dumps({**head, "hash": "0" * 64}) + "\n")
    line = failure(verify(app, "--heads", str(forged)))
    assert line.startswith(f"audit trail ALTERED: chain position {head['position']} does not match the head sealed "
                           f"at {head['time']} (heads line 1): the chain was recomputed after that seal"), line
    forged.write_text("not a head\n")
    bad = verify(app, "--heads", str(forged))
    assert bad.exit_code == 1 and f"{forged} line 1 is not JSON: not a heads file" in bad.output


def test_without_a_heads_file_the_heads_go_to_the_log(database_url: str, client: FhirClient, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(settings_for(database_url, audit=AuditSettings(key_file=str(TEST_AUDIT_KEY_FILE))))
    try:
        record_entries(FhirClient(app.test_client()), 2)
        caplog.set_level(logging.INFO, logger="dui.audit")
        seal_all(app)
        logged = [r for r in caplog.records if r.getMessage() == "audit head"]
        assert logged and logged[-1].position == 2 and logged[-1].sealed >= 1  # type: ignore[attr-defined]
        missing = cli(app, "audit", "export", "--heads")
        assert missing.exit_code == 1 and "DUI_AUDIT_HEADS_FILE is not set" in missing.output
        # The service's JSON log (production's default) serves as the heads file.
        log = tmp_path / "dui.log"
        formatter = JsonFormatter()
        log.write_text("".join(formatter.format(r) + "\n" for r in caplog.records))
        checked = verify(app, "--heads", str(log))
        assert checked.exit_code == 0 and f"heads of {log} matched" in checked.output, checked.output
        with as_owner(app) as conn:
            conn.execute(text("DELETE FROM audit_event_patient WHERE seq IN "
                              "(SELECT seq FROM audit_event WHERE chain_pos = 2)"))
            conn.execute(text("DELETE FROM audit_event WHERE chain_pos = 2"))
        assert "names position 2" in failure(verify(app, "--heads", str(log)))
    finally:
        app.extensions["dui"].dispose()


# -- 3. numbers that cannot go missing unexplained ---------------------------------------------------------------


@pytest.mark.parametrize("which", ["middle", "newest"])
def test_an_entry_deleted_before_its_seal_leaves_a_gap_that_verify_names(app: Flask, client: FhirClient,
                                                                         backend: str, which: str) -> None:
    record_entries(client, 3)
    gone = 2 if which == "middle" else 3
    with as_owner(app) as conn:
        conn.execute(text(f"DELETE FROM audit_event_patient WHERE seq = {gone}"))
        conn.execute(text(f"DELETE FROM audit_event WHERE seq = {gone}"))
    record_entries(client, 2)  # the newest number is never given again (SQLite: AUTOINCREMENT)
    assert [r["seq"] for r, _ in rows(app)] == [s for s in (1, 2, 3, 4, 5) if s != gone]
    line = failure(verify(app, "--grace", "0"))
    assert line.startswith(f"audit trail ALTERED: seq {gone} missing from the trail (between seq {gone - 1} and "
                           f"{gone + 1}): deleted before being sealed, or lost without a void; after investigating, "
                           f"`dui audit acknowledge-gap {gone} --reason TEXT`"), line
    if backend == "postgresql":  # by default a recent gap waits: its transaction may still record a void
        pending = verify(app)
        assert pending.exit_code == 0 and "1 missing numbers too recent to judge" in pending.output
    else:  # SQLite leaves no gap of its own: every gap is judged at once
        assert failure(verify(app)) == line
    refused = cli(app, "audit", "acknowledge-gap", "1", "--reason", "crash")
    assert refused.exit_code == 1 and "seq 1: 1 of these entries are in the trail" in refused.output
    acknowledged = cli(app, "audit", "acknowledge-gap", str(gone), "--reason", "incident 42: restored from backup")
    assert acknowledged.exit_code == 0, acknowledged.output
    result = verify(app, "--grace", "0")
    assert result.exit_code == 0 and "1 missing numbers explained" in result.output, result.output
    last, residents = rows(app)[-1]
    assert (last["action"], last["actor_kind"], last["gap_first"], last["gap_last"], last["purpose"]) == (
        "acknowledge-gap", "cli", gone, gone, "incident 42: restored from backup")
    assert last["chain_pos"] is not None and residents == []  # itself an entry of the chain
    exported = cli(app, "audit", "export")  # as an AuditEvent like any other entry
    assert exported.exit_code == 0, exported.output
    events = [json.loads(line) for line in exported.stdout.splitlines()]
    validator = Validator()
    for event in events:
        validator.check(event)
    assert events[-1]["purposeOfEvent"] == [{"text": "incident 42: restored from backup"}]


def test_a_transaction_that_fails_after_recording_voids_its_number(app: Flask, client: FhirClient,
                                                                   backend: str) -> None:
    svc: Services = app.extensions["dui"]
    record_entries(client, 1)
    entry = trail.AuditEntry("create", "success", Actor("staff", "ide.audit"), "Observation", patients=("p1",))
    with pytest.raises(RuntimeError), svc.unit_of_work(write=True) as session:
        lost = trail.record(session, entry, svc.clock())
        raise RuntimeError("the commit failed")
    record_entries(client, 1)
    if backend == "postgresql":  # the sequence does not go back: the number is missing
        assert "missing from the trail" in failure(verify(app, "--grace", "0"))
    with svc.unit_of_work(write=True) as session:  # what the web layer calls, in a transaction of its own
        void = trail.void(session, lost, svc.clock(), request_id="req-0042")
    result = verify(app, "--grace", "0")
    assert result.exit_code == 0, result.output
    if backend == "postgresql":
        assert "1 missing numbers explained" in result.output
    else:  # SQLite gave the number again to the next entry: the void explains nothing and harms nothing
        assert lost == 2 and "explained" not in result.output
    recorded = {r["seq"]: r for r, _ in rows(app)}[void]
    assert (recorded["action"], recorded["actor_kind"], recorded["gap_first"], recorded["request_id"]) == (
        "void", "system", lost, "req-0042")


def test_an_explanation_recorded_before_a_number_does_not_excuse_it(app: Flask, client: FhirClient) -> None:
    svc: Services = app.extensions["dui"]
    record_entries(client, 1)
    with svc.unit_of_work(write=True) as session:  # voids for numbers not given yet, and a wide acknowledgement
        trail.void(session, 4, svc.clock())
        with session.begin_nested():
            session.execute(text("INSERT INTO audit_event (recorded, actor_kind, actor_id, roles, action, outcome, "
                                 "gap_first, gap_last) VALUES (:now, 'cli', 'cli', '', 'acknowledge-gap', "
                                 "'success', 1, 1000)"), {"now": svc.clock().replace(tzinfo=None)})
    record_entries(client, 2)  # seqs 3 and 4
    with as_owner(app) as conn:
        conn.execute(text("DELETE FROM audit_event_patient WHERE seq = 4"))
        conn.execute(text("DELETE FROM audit_event WHERE seq = 4"))
    record_entries(client, 1)
    assert failure(verify(app, "--grace", "0")).startswith("audit trail ALTERED: seq 4 missing")


# -- 4. no bypass for the service's role -------------------------------------------------------------------------


def test_preset_chain_columns_and_xid_never_block_or_skew_sealing(app: Flask, client: FhirClient,
                                                                   backend: str) -> None:
    svc: Services = app.extensions["dui"]
    record_entries(client, 2)
    forged = {"hash": "f" * 64, "prev_hash": "e" * 64, "key_id": "audit:forged", "xid": 2**62}
    columns = "recorded, actor_kind, actor_id, roles, action, outcome, hash, prev_hash, key_id, xid"
    values = ":now, 'staff', 'x', '', 'read', 'success', :hash, :prev_hash, :key_id, :xid"
    now = svc.clock() if backend == "postgresql" else svc.clock().replace(tzinfo=None)
    with svc.engine.begin() as conn:  # the service's own connection
        if backend == "postgresql":  # a number and a chain position given at insert are replaced
            conn.execute(text(f"INSERT INTO audit_event (seq, chain_pos, {columns}) VALUES (999, 1, {values})"),
                         {**forged, "now": now})
            xid = conn.execute(text("SELECT pg_current_xact_id()::text::bigint")).scalar_one()
        else:
            with pytest.raises(DBAPIError, match="a new entry cannot come with a chain position"), \
                    conn.begin_nested():
                conn.execute(text(f"INSERT INTO audit_event (chain_pos, {columns}) VALUES (1, {values})"),
                             {**forged, "now": now})
            conn.execute(text(f"INSERT INTO audit_event ({columns}) VALUES ({values})"), {**forged, "now": now})
            with pytest.raises(DBAPIError, match="a new entry takes the next number"), conn.begin_nested():
                conn.execute(text(f"INSERT INTO audit_event (seq, {columns}) VALUES (0, {values})"),
                             {**forged, "now": now})
    record_entries(client, 1)
    seal_all(app)
    result = verify(app, "--grace", "0")
    assert result.exit_code == 0 and "4 entries chained" in result.output, result.output
    third = rows(app)[2][0]
    key_id = audit_keys(svc.settings).current.key_id
    assert (third["seq"], third["chain_pos"], third["key_id"]) == (3, 3, key_id) and third["hash"] != "f" * 64
    if backend == "postgresql":
        assert third["xid"] == xid


def test_no_session_setting_lets_the_service_change_the_trail(app: Flask, client: FhirClient, backend: str) -> None:
    record_entries(client, 2)
    seal_all(app)
    record_entries(client, 1)
    engine = app.extensions["dui"].engine
    if backend == "postgresql":
        escape = "SET LOCAL dui.audit_maintenance = 'on'"
    else:  # the flag table of revision 0009 is gone
        with pytest.raises(DBAPIError, match="no such table"), engine.begin() as conn:
            conn.execute(text("INSERT INTO audit_maintenance (id) VALUES (1)"))
        escape = "SELECT 1"
    for statement in ("UPDATE audit_event SET actor_id = 'someone-else' WHERE seq = 3",  # unsealed: content
                      "UPDATE audit_event SET hash = NULL, chain_pos = NULL WHERE seq = 1",  # unseal
                      "UPDATE audit_event SET chain_pos = 9, hash = 'x' WHERE seq = 2",  # seal again
                      "DELETE FROM audit_event WHERE seq = 3", "DELETE FROM audit_event_patient",
                      "INSERT INTO audit_event_patient (seq, patient_id) VALUES (1, 'another')",  # a sealed entry
                      *(["TRUNCATE audit_event CASCADE", "TRUNCATE audit_event_patient"]
                        if backend == "postgresql" else [])):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(escape))
            conn.execute(text(statement))
    assert len(rows(app)) == 3
    assert verify(app, "--grace", "0").exit_code == 0


def _documented_grants(schema: str, role: str) -> str:
    """The grants of docs/security.md ("Two database roles"), for this test's schema and role."""
    doc = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    block = doc.split("<!-- service role grants -->", 1)[1].split("```sql", 1)[1].split("```", 1)[0]
    return block.replace("SCHEMA public", f'SCHEMA "{schema}"').replace("dui_service", role)


def test_the_service_role_of_the_documented_deployment(database_url: str, app: Flask, client: FhirClient,
                                                       backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("database roles are PostgreSQL's (a SQLite file's owner can do anything to it)")
    url = make_url(database_url)
    schema = str(url.query["options"]).removeprefix("-csearch_path=")
    role = f"dui_service_{uuid.uuid4().hex[:8]}"
    owner = app.extensions["dui"].engine
    with owner.begin() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        conn.execute(text(_documented_grants(schema, role)))
    service = create_app(settings_for(url.set(username=role, password=None).render_as_string(hide_password=False)))
    try:
        web = FhirClient(service.test_client())
        pid = web.create(patient())["id"]
        assert web.get(f"Patient/{pid}").status_code == 200
        seal_all(service)
        assert verify(service).exit_code == 0
        for statement, refusal in (
                ("SET LOCAL dui.audit_maintenance = 'on'; UPDATE audit_event SET actor_id = 'x'", "permission denied"),
                ("DELETE FROM audit_event", "permission denied"), ("TRUNCATE audit_event CASCADE", "permission denied"),
                ("UPDATE audit_event SET chain_pos = NULL, hash = NULL WHERE seq = 1", "append-only"),
                ("SET LOCAL session_replication_role = replica", "permission denied"),
                ("ALTER TABLE audit_event DISABLE TRIGGER audit_event_guard", "must be owner"),
                ("DROP TRIGGER audit_event_guard ON audit_event", "must be owner")):
            with pytest.raises(DBAPIError, match=refusal), service.extensions["dui"].engine.begin() as conn:
                for part in statement.split("; "):
                    conn.execute(text(part))
    finally:
        service.extensions["dui"].dispose()
        with owner.begin() as conn:
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))


# -- 5. an entry is never dropped --------------------------------------------------------------------------------


def test_an_entry_is_never_dropped_for_what_it_holds(app: Flask, client: FhirClient) -> None:
    svc: Services = app.extensions["dui"]
    assert client.get("Patient/ab%00cd").status_code == 400  # a resource id with NUL in the URL
    assert client.get("Patient/$" + "x" * 9999).status_code == 404  # a 10,000-character operation name
    long = "y" * 10_000
    entry = trail.AuditEntry("read", "success", Actor("staff", "a\x00" + long, frozenset({"r\x01", long})),
                             "Patient", "p\x00" + long, detail=long, status=200, source="\x7f" + long,
                             request_id="\x00" + long, purpose="\x1b" + long, patients=("q\x00r", long))
    with svc.unit_of_work(write=True) as session:
        trail.record(session, entry, svc.clock())
    recorded = rows(app)
    assert [(r["resource_id"], r["detail"]) for r, _ in recorded[:2]] == [("ab\ufffdcd", "Invalid"),
                                                                         (None, "$" + "x" * 63)]
    row, residents = recorded[2]
    assert row["actor_id"] == "a\ufffd" + "y" * 126 and row["resource_id"] == "p\ufffd" + "y" * 62
    assert row["detail"] == "y" * 64 and row["source"] == "\ufffd" + "y" * 63 and len(row["purpose"]) == 255
    assert row["roles"].startswith("r\ufffd,") and len(row["roles"]) == 255
    assert sorted(residents) == ["q\ufffdr", "y" * 64]
    seal_all(app)
    assert verify(app, "--grace", "0").exit_code == 0


# -- keys: development and production ----------------------------------------------------------------------------


def test_the_development_audit_key_is_made_once_with_a_warning_and_refused_in_prod(tmp_path: Path) -> None:
    from dui.audit.keys import AuditKeyError, DevAuditKeyWarning, development_audit_keys
    from dui.keyfiles import KeyFilePermissionError
    from dui.settings import EncryptionSettings, Settings

    dev_dir = tmp_path / "keys"
    with pytest.warns(DevAuditKeyWarning, match="development audit key"):
        first = development_audit_keys(str(dev_dir), prod=False)
    path = dev_dir / "audit-key.dev"
    assert path.read_text().startswith("# DUI DEVELOPMENT AUDIT KEY") and "\ndev:" in path.read_text()
    assert first.current.key_id.startswith("audit-dev:")
    with pytest.warns(DevAuditKeyWarning):
        assert development_audit_keys(str(dev_dir), prod=False).current.key_id == first.current.key_id
    prod = Settings(env="prod", base_url="https://dui.example.org",
                    encryption=EncryptionSettings(dev_key_dir=str(dev_dir)))
    with pytest.raises(AuditKeyError, match="DUI_ENV=prod requires an audit key"):
        audit_keys(prod)
    copy = tmp_path / "elsewhere" / "audit.key"
    copy.parent.mkdir()
    shutil.copy(path, copy)
    copy.chmod(0o600)
    with pytest.raises(AuditKeyError, match="is a development key generated by `dui`"):
        audit_keys(prod.with_(audit=AuditSettings(key_file=str(copy))))
    with pytest.raises(AuditKeyError, match="lies in the development key folder"):
        audit_keys(prod.with_(audit=AuditSettings(key_file=str(path))))
    good = tmp_path / "audit.key"
    write_key_file(good, os.urandom(KEY_BYTES), what="audit key")
    assert audit_keys(prod.with_(audit=AuditSettings(key_file=str(good)))).current.key_id.startswith("audit:")
    good.chmod(0o640)
    with pytest.raises(KeyFilePermissionError, match="has mode 0640: production requires that only its owner"):
        audit_keys(prod.with_(audit=AuditSettings(key_file=str(good))))
    assert audit_keys(prod.with_(env="dev", audit=AuditSettings(key_file=str(good)))).previous == ()  # dev: not checked


def test_audit_settings_from_the_environment() -> None:
    from dui.settings import Settings, SettingsError

    dev = Settings.from_env({})
    assert dev.audit == AuditSettings(heads_file="var/audit-heads.jsonl")
    prod_env = {"DUI_ENV": "prod", "DUI_DOCUMENT_OID": "1.2.250.1.999.1",
               "DUI_BASE_URL": "https://dui.example.org", "DUI_MASTER_KEY_FILE": "/etc/m.key",
                "DUI_AUDIT_KEY_FILE": "/etc/dui/audit.key"}
    assert Settings.from_env(prod_env).audit == AuditSettings(key_file="/etc/dui/audit.key")  # heads: the log
    named = Settings.from_env({**prod_env, "DUI_AUDIT_KEY_PREVIOUS_FILE": "/etc/dui/audit-2026.key, /etc/a-2025.key",
                               "DUI_AUDIT_HEADS_FILE": "/srv/anchors/heads.jsonl"}).audit
    assert named.previous_key_files == ("/etc/dui/audit-2026.key", "/etc/a-2025.key")
    assert named.heads_file == "/srv/anchors/heads.jsonl"
    with pytest.raises(SettingsError, match="DUI_AUDIT_KEY_PREVIOUS_FILE needs DUI_AUDIT_KEY_FILE"):
        Settings.from_env({"DUI_AUDIT_KEY_PREVIOUS_FILE": "/etc/dui/audit-2026.key"})
    assert TEST_AUDIT.heads_file == str(TEST_HEADS_FILE)


def test_the_worker_seals_the_audit_trail(app: Flask, client: FhirClient) -> None:
    """Nothing else need schedule ``dui audit seal``: each pass of ``dui worker`` (at most once a minute, and
    always with --once) seals what has settled."""
    seal_all(app)
    record_entries(client, 3)
    assert unsealed(app) >= 3
    deadline = time.monotonic() + 30
    sealed = 0
    while unsealed(app):  # PostgreSQL: only entries older than every running transaction settle
        result = CliRunner().invoke(dui_cli, ["worker", "--once"], obj=ScriptInfo(create_app=lambda: app))
        assert result.exit_code == 0, result.output
        line = next(x for x in result.output.splitlines() if x.startswith("dui worker: audit trail: "))
        sealed += int(line.split(": ")[2].split()[0])
        assert time.monotonic() < deadline, "entries still unsealed"
    assert sealed >= 3
    assert cli(app, "audit", "verify").exit_code == 0


def test_entries_restored_from_another_servers_dump_are_sealed(app: Flask, client: FhirClient, backend: str) -> None:
    """A dump carries its entries' transaction ids, not the server's counter: restored on a new server, they hold
    ids that server has not given yet. They were committed where they were written, so they are settled."""
    if backend != "postgresql":
        pytest.skip("transaction ids are PostgreSQL's")
    record_entries(client, 3)
    with as_owner(app) as conn:  # as pg_restore leaves them: unsealed, with the other server's (greater) ids
        conn.execute(text("UPDATE audit_event SET xid = pg_current_xact_id()::text::bigint + 1000000 "
                          "WHERE chain_pos IS NULL"))
    result = cli(app, "audit", "seal")
    assert result.exit_code == 0, result.output
    assert unsealed(app) == 0
    result = cli(app, "audit", "verify", "--grace", "0")
    assert result.exit_code == 0 and "3 entries chained" in result.output, result.output
