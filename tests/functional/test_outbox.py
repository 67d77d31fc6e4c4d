"""The transactional outbox (docs/outbox.md): enqueue in the caller's transaction, idempotent on kind and key;
the runner's outcomes, back-off, leases and dead letters; two workers never run a job twice; the CLI."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from dui.audit.tables import audit_event
from dui.errors import Conflict, NotFound
from dui.outbox import queue, runner
from dui.outbox.queue import Job
from dui.outbox.runner import Backoff, Outcome, delivered, permanent, run_due, transient
from dui.outbox.tables import outbox_job
from dui.services import Services
from tests.conftest import empty_database

T0 = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
KIND = "test.send"
NO_JITTER = Backoff(base=30, cap=3600, max_attempts=3, jitter=lambda ceiling: ceiling)


@pytest.fixture
def svc(app: Flask) -> Iterator[Services]:
    empty_database(app)
    services: Services = app.extensions["dui"]
    wired = dict(services.outbox_handlers)
    yield services
    services.outbox_handlers.clear()  # the handlers the tests added go; the app's own stay for later modules
    services.outbox_handlers.update(wired)


def enqueue(svc: Services, key: str, target: str = "DocumentReference/doc-1", kind: str = KIND,
            now: datetime = T0) -> Job:
    with svc.unit_of_work() as session:
        return queue.enqueue(session, kind, target, key, now)


def job(svc: Services, job_id: int) -> Job:
    with svc.unit_of_work(write=False) as session:
        found = queue.get(session, job_id)
    assert found is not None
    return found


def audit(svc: Services) -> list[tuple[Any, ...]]:
    c = audit_event.c
    with svc.unit_of_work(write=False) as session:
        return [tuple(r) for r in session.execute(
            select(c.action, c.outcome, c.resource_type, c.resource_id, c.detail, c.actor_kind)
            .where(c.action == "outbox-attempt").order_by(c.seq))]


def run(svc: Services, handler: runner.Handler, now: datetime, backoff: Backoff = NO_JITTER,
        worker: str = "w1", **kwargs: Any) -> runner.RunReport:
    return run_due(svc.unit_of_work, {KIND: handler}, now, worker, backoff=backoff, **kwargs)


def test_a_job_commits_with_the_change_that_causes_it_or_not_at_all(svc: Services) -> None:
    with pytest.raises(RuntimeError), svc.unit_of_work() as session:
        queue.enqueue(session, KIND, "DocumentReference/doc-1", "uid-1", T0)
        raise RuntimeError("the change failed")
    with svc.unit_of_work(write=False) as session:
        assert queue.list_jobs(session) == []
    made = enqueue(svc, "uid-1")
    assert (made.state, made.attempts, made.next_attempt_at, made.target) == ("due", 0, T0, "DocumentReference/doc-1")
    with svc.unit_of_work(write=False) as session:
        assert [j.id for j in queue.list_jobs(session)] == [made.id]


def test_enqueue_is_idempotent_on_kind_and_key_while_a_job_is_live(svc: Services) -> None:
    first = enqueue(svc, "uid-1")
    assert enqueue(svc, "uid-1", now=T0 + timedelta(seconds=5)).id == first.id
    with svc.unit_of_work() as session:  # twice in one transaction too
        assert queue.enqueue(session, KIND, "DocumentReference/doc-1", "uid-1", T0).id == first.id
    other_kind = enqueue(svc, "uid-1", kind="other.send")
    assert other_kind.id != first.id
    run(svc, lambda s, j: delivered("reg-1"), T0)
    assert enqueue(svc, "uid-1").id == first.id  # done: the delivery is not asked for again
    assert job(svc, first.id).state == "done"
    with svc.unit_of_work() as session:
        queue.cancel(session, other_kind.id, T0)
    again = enqueue(svc, "uid-1", kind="other.send")  # cancelled: the same delivery may be asked for anew
    assert again.id not in (first.id, other_kind.id) and again.state == "due"


def test_two_concurrent_enqueues_of_the_same_delivery_give_one_job(svc: Services) -> None:
    """The second waits for the first's transaction (row lock of the unique index on PostgreSQL, the write lock on
    SQLite), then finds its job: the database decides, not a check made before the insert."""
    enqueued = threading.Event()
    ids: dict[str, int] = {}

    def first() -> None:
        with svc.unit_of_work() as session:
            ids["first"] = queue.enqueue(session, KIND, "DocumentReference/doc-1", "uid-1", T0).id
            enqueued.set()
            time.sleep(0.3)  # the change goes on; the second enqueue is under way meanwhile

    thread = threading.Thread(target=first)
    thread.start()
    assert enqueued.wait(10)
    ids["second"] = enqueue(svc, "uid-1").id
    thread.join(10)
    assert ids["first"] == ids["second"]
    with svc.unit_of_work(write=False) as session:
        assert len(queue.list_jobs(session)) == 1


def test_a_delivered_job_is_done_with_its_result_and_audited(svc: Services) -> None:
    made = enqueue(svc, "uid-1", target="DocumentReference/doc-7")
    seen: list[tuple[int, str, str]] = []

    def handler(session: Session, current: Job) -> Outcome:
        seen.append((current.id, current.state, current.leased_by or ""))
        return delivered("registry id 42\nsecond line")

    report = run(svc, handler, T0 + timedelta(seconds=1))
    assert (report.delivered, report.retried, report.dead) == (1, 0, 0)
    assert seen == [(made.id, "running", "w1")]
    done = job(svc, made.id)
    assert (done.state, done.attempts, done.result, done.done_at, done.leased_by, done.lease_until) == (
        "done", 1, "registry id 42 second line", T0 + timedelta(seconds=1), None, None)
    assert audit(svc) == [("outbox-attempt", "success", "DocumentReference", "doc-7", f"{KIND} delivered", "system")]
    assert run(svc, handler, T0 + timedelta(hours=5)).attempted == 0  # never run again


def test_the_runner_also_takes_a_session_factory(svc: Services) -> None:
    made = enqueue(svc, "uid-1")
    report = run_due(svc.session_factory, {KIND: lambda s, j: delivered("ok")}, T0, "w1")
    assert report.delivered == 1 and job(svc, made.id).state == "done"


def test_a_transient_failure_is_tried_again_after_a_growing_delay_then_dead(svc: Services) -> None:
    made = enqueue(svc, "uid-1")
    fail = lambda session, current: transient("registry unavailable (HTTP 503)")  # noqa: E731
    assert run(svc, fail, T0).retried == 1
    first = job(svc, made.id)
    assert (first.state, first.attempts, first.next_attempt_at) == ("due", 1, T0 + timedelta(seconds=30))
    assert first.last_error == "registry unavailable (HTTP 503)"
    assert run(svc, fail, T0 + timedelta(seconds=29)).attempted == 0  # not yet
    assert run(svc, fail, T0 + timedelta(seconds=30)).retried == 1
    assert job(svc, made.id).next_attempt_at == T0 + timedelta(seconds=30 + 60)  # base * 2
    report = run(svc, fail, T0 + timedelta(seconds=90))
    assert (report.retried, report.dead) == (0, 1)
    dead = job(svc, made.id)
    assert (dead.state, dead.attempts) == ("dead", 3)
    assert dead.last_error == "registry unavailable (HTTP 503) (attempt 3 of 3)"
    assert [row[1] + " " + row[4] for row in audit(svc)] == [
        f"failed {KIND} retry", f"failed {KIND} retry", f"failed {KIND} dead"]
    assert run(svc, fail, T0 + timedelta(days=1)).attempted == 0


def test_the_back_off_has_full_jitter_under_a_cap() -> None:
    ceilings: list[float] = []
    backoff = Backoff(base=30, cap=3600, jitter=lambda ceiling: ceilings.append(ceiling) or ceiling / 2)
    assert [backoff.delay(n).total_seconds() for n in (1, 2, 3, 8, 20)] == [15, 30, 60, 1800, 1800]
    assert ceilings == [30, 60, 120, 3600, 3600]
    spread = {Backoff().delay(4).total_seconds() for _ in range(50)}
    assert len(spread) > 1 and all(0 <= s <= 240 for s in spread)


def test_an_exception_is_transient_and_its_message_is_not_kept(svc: Services) -> None:
    made = enqueue(svc, "uid-1")

    def handler(session: Session, current: Job) -> Outcome:
        raise ValueError("Mme Jeanne Dupont, née le 01/02/1930: allergie à la pénicilline")

    assert run(svc, handler, T0).retried == 1
    failed = job(svc, made.id)
    assert failed.state == "due" and failed.last_error == f"ValueError raised by the {KIND} handler"


def test_a_handler_writes_in_a_transaction_of_its_own_rolled_back_when_it_raises(svc: Services) -> None:
    enqueue(svc, "uid-1")

    def handler(session: Session, current: Job) -> Outcome:
        queue.enqueue(session, "follow.up", current.target, "follow-1", T0)
        raise ConnectionError("network down")

    run(svc, handler, T0)
    with svc.unit_of_work(write=False) as session:
        assert [j.kind for j in queue.list_jobs(session)] == [KIND]


def test_a_permanent_failure_is_dead_at_once(svc: Services) -> None:
    made = enqueue(svc, "uid-1")
    report = run(svc, lambda s, j: permanent("document refused by the registry: bad format code"), T0)
    assert (report.retried, report.dead) == (0, 1)
    dead = job(svc, made.id)
    assert (dead.state, dead.attempts, dead.last_error) == (
        "dead", 1, "document refused by the registry: bad format code")


def test_a_kind_without_handler_is_dead_with_a_clear_error(svc: Services) -> None:
    made = enqueue(svc, "uid-1", kind="mssante.send")
    report = run(svc, lambda s, j: delivered(), T0)
    assert report.dead == 1
    dead = job(svc, made.id)
    assert dead.state == "dead" and dead.last_error == "no handler for the kind 'mssante.send' in this worker"


def _leave_running(svc: Services, job_id: int, lease_until: datetime, attempts: int = 1) -> None:
    with svc.unit_of_work() as session:
        session.execute(update(outbox_job).where(outbox_job.c.id == job_id).values(
            state="running", leased_by="killed-worker", lease_until=lease_until, attempts=attempts))


def test_a_job_whose_lease_expired_is_taken_again(svc: Services) -> None:
    """A worker killed with kill -9 left its job running: once the lease is over, another worker takes it."""
    made = enqueue(svc, "uid-1")
    _leave_running(svc, made.id, lease_until=T0 + timedelta(minutes=5))
    calls: list[int] = []

    def handler(session: Session, current: Job) -> Outcome:
        calls.append(current.attempts)
        return delivered("ok")

    assert run(svc, handler, T0 + timedelta(minutes=4)).attempted == 0  # still leased
    assert run(svc, handler, T0 + timedelta(minutes=5)).delivered == 1
    assert calls == [2]
    assert job(svc, made.id).state == "done"


def test_a_job_whose_worker_died_on_every_attempt_ends_dead(svc: Services) -> None:
    made = enqueue(svc, "uid-1")
    _leave_running(svc, made.id, lease_until=T0, attempts=3)
    report = run(svc, lambda s, j: delivered(), T0 + timedelta(seconds=1))
    assert report.dead == 1
    dead = job(svc, made.id)
    assert dead.state == "dead" and dead.last_error is not None and "lease expired" in dead.last_error


def test_a_worker_whose_lease_was_lost_records_nothing(svc: Services) -> None:
    made = enqueue(svc, "uid-1")

    def slow(session: Session, current: Job) -> Outcome:  # meanwhile its lease expires and w2 delivers the job
        assert run(svc, lambda s, j: delivered("by w2"), T0 + timedelta(minutes=10), worker="w2").delivered == 1
        return delivered("by w1")

    report = run(svc, slow, T0, lease_seconds=60)
    assert (report.delivered, report.lost) == (0, 1)
    done = job(svc, made.id)
    assert (done.state, done.result, done.attempts) == ("done", "by w2", 2)


def test_with_a_clock_each_lease_starts_when_its_job_is_claimed(svc: Services) -> None:
    first, second = enqueue(svc, "uid-1"), enqueue(svc, "uid-2")
    moments = [T0]
    leases: dict[int, datetime | None] = {}

    def handler(session: Session, current: Job) -> Outcome:
        leases[current.id] = current.lease_until
        moments[0] += timedelta(minutes=10)  # a slow call
        return delivered("ok")

    report = run_due(svc.unit_of_work, {KIND: handler}, lambda: moments[0], "w1", lease_seconds=60)
    assert report.delivered == 2
    assert leases == {first.id: T0 + timedelta(seconds=60), second.id: T0 + timedelta(minutes=10, seconds=60)}
    assert job(svc, second.id).done_at == T0 + timedelta(minutes=20)


def test_two_workers_at_once_never_run_a_job_twice(svc: Services) -> None:
    ids = {enqueue(svc, f"uid-{n}", target=f"DocumentReference/doc-{n}").id for n in range(50)}
    calls: Counter[int] = Counter()
    lock = threading.Lock()

    def handler(session: Session, current: Job) -> Outcome:
        with lock:
            calls[current.id] += 1
        time.sleep(0.01)
        return delivered("ok")

    reports: list[runner.RunReport] = []
    barrier = threading.Barrier(2)

    def worker(name: str) -> None:
        barrier.wait()
        reports.append(run(svc, handler, T0, worker=name))

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert set(calls) == ids and set(calls.values()) == {1}
    assert sum(r.delivered for r in reports) == 50 and sum(r.lost for r in reports) == 0
    assert all(r.delivered for r in reports), [r.delivered for r in reports]  # both took part
    assert len(audit(svc)) == 50
    with svc.unit_of_work(write=False) as session:
        assert {j.state for j in queue.list_jobs(session)} == {"done"}


def test_retry_and_cancel(svc: Services) -> None:
    dead = enqueue(svc, "uid-1")
    run(svc, lambda s, j: permanent("refused"), T0)
    later = T0 + timedelta(hours=1)
    with svc.unit_of_work() as session:
        again = queue.retry(session, dead.id, later)
    assert (again.state, again.attempts, again.next_attempt_at) == ("due", 0, later)
    assert run(svc, lambda s, j: delivered("ok"), later).delivered == 1
    with pytest.raises(Conflict), svc.unit_of_work() as session:
        queue.retry(session, dead.id, later)  # done
    with pytest.raises(NotFound), svc.unit_of_work() as session:
        queue.cancel(session, 9999, later)


def test_no_row_lock_is_held_while_the_handler_runs(svc: Services, backend: str) -> None:
    made = enqueue(svc, "uid-1")
    if backend != "postgresql":
        pytest.skip("row locks: PostgreSQL")

    def handler(session: Session, current: Job) -> Outcome:
        with svc.unit_of_work() as other:  # would fail at once if the claim still held the row
            other.execute(text("SET LOCAL lock_timeout = '1s'"))
            other.execute(select(outbox_job.c.id).where(outbox_job.c.id == current.id).with_for_update(nowait=True))
        return delivered("ok")

    assert run(svc, handler, T0).delivered == 1
    assert job(svc, made.id).state == "done"


def cli(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["outbox", *args])


def test_the_outbox_cli(app: Flask, svc: Services) -> None:
    assert cli(app, "list").output.strip() == "no outbox job"
    dead = enqueue(svc, "uid-1", target="DocumentReference/doc-1")
    due = enqueue(svc, "uid-2", target="DocumentReference/doc-2")
    run(svc, lambda s, j: permanent("refused: bad format code"), T0, limit=1)
    listed = cli(app, "list")
    assert listed.exit_code == 0 and len(listed.output.splitlines()) == 3  # a header row, two jobs
    assert listed.output.splitlines()[0].split("\t")[:4] == ["id", "state", "kind", "target"]
    failed = cli(app, "list", "--failed")
    assert failed.output.splitlines()[1:] == [
        f"{dead.id}\tdead\t{KIND}\tDocumentReference/doc-1\tattempts 1\tupdated {T0.isoformat()}"
        "  error: refused: bad format code"]
    assert cli(app, "list", "--state", "due").output.splitlines()[1].startswith(f"{due.id}\tdue\t")
    shown = cli(app, "show", str(dead.id))
    assert shown.exit_code == 0 and "state: dead" in shown.output and "last_error: refused" in shown.output
    unknown = cli(app, "show", "9999")
    assert unknown.exit_code == 1 and unknown.output.strip() == "Error: no outbox job 9999"
    refused = cli(app, "retry", str(due.id))
    assert refused.exit_code == 1 and refused.output.strip() == (
        f"Error: outbox job {due.id} is due: only a dead job can be retried")
    assert cli(app, "retry", "9999").exit_code == 1
    retried = cli(app, "retry", str(dead.id))
    assert retried.exit_code == 0 and retried.output.strip() == (
        f"outbox job {dead.id} ({KIND} DocumentReference/doc-1): due again")
    assert job(svc, dead.id).state == "due"
    _leave_running(svc, due.id, lease_until=T0 + timedelta(minutes=5))
    running = cli(app, "cancel", str(due.id))
    assert running.exit_code == 1 and "is running: only a due or dead job can be cancelled" in running.output
    cancelled = cli(app, "cancel", str(dead.id))
    assert cancelled.exit_code == 0 and cancelled.output.strip().endswith(": cancelled")
    assert job(svc, dead.id).state == "cancelled"


def test_dui_worker_runs_the_jobs_due_with_the_apps_handlers(app: Flask, svc: Services) -> None:
    from click.testing import CliRunner
    from flask.cli import ScriptInfo

    from dui.cli import cli as dui

    now = svc.clock()
    enqueue(svc, "uid-1", now=now)
    enqueue(svc, "uid-2", now=now, kind="other.send")
    svc.outbox_handlers[KIND] = lambda session, current: delivered("ok")
    result = CliRunner().invoke(dui, ["worker", "--once"], obj=ScriptInfo(create_app=lambda: app))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "dui worker: 1 outbox job(s) delivered, 0 to retry, 1 dead"


def test_the_outbox_settings() -> None:
    from dui.settings import OutboxSettings, Settings, SettingsError

    assert Settings.from_env({}).outbox == OutboxSettings(30, 3600, 10, 300)
    env = {"DUI_OUTBOX_BACKOFF_BASE": "5", "DUI_OUTBOX_BACKOFF_CAP": "60", "DUI_OUTBOX_MAX_ATTEMPTS": "3",
           "DUI_OUTBOX_LEASE": "120"}
    assert Settings.from_env(env).outbox == OutboxSettings(5, 60, 3, 120)
    with pytest.raises(SettingsError):
        Settings.from_env({"DUI_OUTBOX_MAX_ATTEMPTS": "0"})


def test_dui_worker_follows_the_outbox_settings(app: Flask, svc: Services) -> None:
    from dui.cli.worker import run_outbox
    from dui.settings import OutboxSettings

    now = svc.clock()
    made = enqueue(svc, "uid-1", now=now)
    svc.outbox_handlers[KIND] = lambda session, current: transient("registry unavailable")
    saved = svc.settings
    svc.settings = saved.with_(outbox=OutboxSettings(backoff_base=5, backoff_cap=5, max_attempts=2, lease=60))
    try:
        assert run_outbox(svc).retried == 1
        retried = job(svc, made.id)
        assert retried.next_attempt_at <= retried.updated_at + timedelta(seconds=5)
        with svc.unit_of_work() as session:  # due again at once
            session.execute(update(outbox_job).values(next_attempt_at=now))
        assert run_outbox(svc).dead == 1
    finally:
        svc.settings = saved
    assert job(svc, made.id).last_error == "registry unavailable (attempt 2 of 2)"
