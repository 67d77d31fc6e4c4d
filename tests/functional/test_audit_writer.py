"""The group commit of audit entries (``dui.audit.writer``): every entry committed before ``record`` returns, threads
sharing a transaction, an entry the database refuses failing alone."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select, text

from dui.audit import trail
from dui.audit.tables import audit_event, audit_event_patient
from dui.audit.writer import AuditWriter, Batch, PostgresEntries, SessionEntries
from dui.auth.actor import ANONYMOUS
from dui.services import Services
from tests.conftest import empty_database


@pytest.fixture
def svc(app: Flask) -> Services:
    empty_database(app)
    services: Services = app.extensions["dui"]
    return services


def _entry(request_id: str, status: Any = 200) -> trail.AuditEntry:
    return trail.AuditEntry("read", "success", ANONYMOUS, "Patient", "p1", None, status, "127.0.0.1", request_id,
                            patients=("p1", "p2"))


def _sink(svc: Services) -> Batch:
    """What the service's writer writes batches with (psycopg on PostgreSQL, a unit of work on SQLite)."""
    if svc.engine.dialect.name == "postgresql":
        sink = PostgresEntries(svc.engine)
        _opened.append(sink)
        return sink.write
    return SessionEntries(svc.session_factory).write


_opened: list[PostgresEntries] = []


@pytest.fixture(autouse=True)
def _close_sinks() -> Iterator[None]:
    yield
    while _opened:
        _opened.pop().close()


def _committed(svc: Services, request_ids: list[str]) -> int:
    """How many of these entries another connection sees (committed ones only)."""
    with svc.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(audit_event)
                                .where(audit_event.c.request_id.in_(request_ids))).scalar_one())


def test_each_entry_is_committed_when_record_returns_whatever_the_threads(svc: Services) -> None:
    writer = svc.audit_writer  # the service's own: one statement alone on PostgreSQL, a transaction for more
    written = writer.entries
    threads, each = 12, 15
    unseen: list[str] = []
    start = threading.Barrier(threads)

    def work(n: int) -> None:
        start.wait()
        for i in range(each):
            request_id = f"t{n:02d}-{i:03d}-{uuid.uuid4().hex[:8]}"
            writer.record(_entry(request_id))
            if _committed(svc, [request_id]) != 1:  # seen from another connection the moment record returns
                unseen.append(request_id)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(60)
    assert unseen == []
    assert writer.entries - written == threads * each
    with svc.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(audit_event)).scalar_one() == threads * each
        # each entry's residents were written with it
        assert conn.execute(select(func.count()).select_from(audit_event_patient)).scalar_one() == 2 * threads * each


def test_entries_arriving_while_one_is_written_share_the_next_transaction(svc: Services) -> None:
    first_writing, release = threading.Event(), threading.Event()
    transactions = []

    def gated(entries: list[tuple[trail.AuditEntry, datetime]]) -> None:
        transactions.append(entries)
        if len(transactions) == 1:  # the first batch waits until the others have queued behind it
            first_writing.set()
            assert release.wait(30)
        write(entries)

    write = _sink(svc)
    writer = AuditWriter(gated, svc.clock)
    ids = [f"gate-{n}" for n in range(8)]
    threads = [threading.Thread(target=writer.record, args=(_entry(ids[0]),))]
    threads[0].start()
    assert first_writing.wait(30)
    threads += [threading.Thread(target=writer.record, args=(_entry(i),)) for i in ids[1:]]
    for t in threads[1:]:
        t.start()
    deadline = time.monotonic() + 30
    while writer.waiting < 7 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert writer.waiting == 7
    release.set()
    for t in threads:
        t.join(30)
    assert (writer.batches, writer.entries) == (2, 8)  # the first alone, then the seven that waited, together
    assert _committed(svc, ids) == 8


def test_an_entry_the_database_refuses_fails_alone(svc: Services) -> None:
    block = threading.Event()
    release = threading.Event()
    calls = []

    def held(entries: list[tuple[trail.AuditEntry, datetime]]) -> None:
        calls.append(1)
        if len(calls) == 1:
            block.set()
            assert release.wait(30)
        write(entries)

    write = _sink(svc)
    writer = AuditWriter(held, svc.clock)
    errors: dict[str, BaseException] = {}

    def record(entry: trail.AuditEntry) -> None:
        try:
            writer.record(entry)
        except Exception as exc:
            errors[entry.request_id or ""] = exc

    first = threading.Thread(target=record, args=(_entry("alone-0"),))
    first.start()
    assert block.wait(30)
    # a status no driver can bind: refused by the database driver itself, inside the batch that holds it
    batch = [_entry("good-1"), _entry("bad", status=object()), _entry("good-2")]
    others = [threading.Thread(target=record, args=(e,)) for e in batch]
    for t in others:
        t.start()
        while writer.waiting < others.index(t) + 1:
            time.sleep(0.002)
    release.set()
    for t in [first, *others]:
        t.join(30)
    assert set(errors) == {"bad"}
    assert _committed(svc, ["alone-0", "good-1", "good-2", "bad"]) == 3


def test_after_its_connection_is_cut_the_writer_reconnects_and_loses_nothing(svc: Services) -> None:
    if svc.engine.dialect.name != "postgresql":
        pytest.skip("the writer's own connection is PostgreSQL's (SQLite writes in a unit of work)")
    writer = AuditWriter(_sink(svc), svc.clock)
    writer.record(_entry("before-cut"))
    sink = _opened[-1]
    backend = sink._connection().info.backend_pid
    with svc.engine.connect() as admin:  # what a database restart does to every connection
        assert admin.execute(text("SELECT pg_terminate_backend(:p)"), {"p": backend}).scalar_one() is True
    writer.record(_entry("after-cut"))  # the dead connection is replaced, the entry written once
    assert sink._connection().info.backend_pid != backend
    assert _committed(svc, ["before-cut", "after-cut"]) == 2


def test_what_the_writer_writes_is_cleaned_and_cut_as_any_entry(svc: Services) -> None:
    entry = trail.AuditEntry("read", "success", ANONYMOUS, "Patient", "p\x00q\u0085" + "z" * 80, None, 200,
                             "127.0.0.1", "clean-1", patients=("r\x1bs", "t" * 90))
    svc.audit_writer.record(entry)
    with svc.engine.connect() as conn:
        row = conn.execute(select(audit_event).where(audit_event.c.request_id == "clean-1")).mappings().one()
        residents = sorted(conn.execute(select(audit_event_patient.c.patient_id)
                                        .where(audit_event_patient.c.seq == row["seq"])).scalars())
    assert row["resource_id"] == "p\ufffdq\ufffd" + "z" * 60
    assert residents == ["r\ufffds", "t" * 64]


def test_the_writer_drops_its_cached_plans_after_its_first_entries(svc: Services) -> None:
    if svc.engine.dialect.name != "postgresql":
        pytest.skip("plans cached by a PostgreSQL connection")
    sink = PostgresEntries(svc.engine)
    _opened.append(sink)
    sink.REPLAN_FIRST = sink._replan_at = 2  # after 2 entries here, after 500 in service
    sink.write([(_entry("plans-1"), svc.clock())])
    backend = sink._connection().info.backend_pid

    def last_statement() -> str:
        with svc.engine.connect() as admin:
            return str(admin.execute(text("SELECT query FROM pg_stat_activity WHERE pid = :p"),
                                     {"p": backend}).scalar_one())

    assert last_statement().startswith("WITH e AS (INSERT INTO audit_event")
    sink.write([(_entry("plans-2"), svc.clock())])
    assert last_statement() == "DISCARD PLANS"  # made again at the next entry, with the table's size of now
    sink.write([(_entry("plans-3"), svc.clock())])
    assert last_statement().startswith("WITH e AS (INSERT INTO audit_event")  # 2 + 18: not again before 20
    assert _committed(svc, ["plans-1", "plans-2", "plans-3"]) == 3
