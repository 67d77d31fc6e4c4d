"""The database's rate limiter (dui.ratelimit.postgres): token buckets in an UNLOGGED PostgreSQL table, one
atomic statement per request, shared by every thread, process and server on the database.

PostgreSQL only (SQLite deployments count in each process's memory); on the session's migrated schema, so the
table is the one migration 0012 made. Times come from the database's clock: the tests sleep for real.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from dui import migrations
from dui.db import begin_write, make_engine, make_session_factory
from dui.ratelimit import Rate, SharedRateLimiter
from dui.ratelimit.postgres import PostgresRateLimiter
from tests.ratelimit_workers import Job, allowed_in_processes, allowed_in_threads
from tests.redisserver import _free_port


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    if not database_url.startswith("postgresql"):
        pytest.skip("the database's rate limiter is PostgreSQL's; SQLite deployments count in each process")
    engine = make_engine(database_url)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE rate_limit"))
    yield engine
    engine.dispose()


def rows(engine: Engine) -> dict[str, float]:
    with engine.connect() as conn:
        return {key: tokens for key, tokens in conn.execute(text("SELECT key, tokens FROM rate_limit"))}


def test_a_burst_then_the_refill_rate(engine: Engine) -> None:
    limiter = PostgresRateLimiter(engine)
    rate = Rate(per_minute=60, burst=3)  # one a second, three at once
    assert [limiter.take("a", rate) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("a", rate)
    assert 0.8 < wait <= 1.0
    again = limiter.take("a", rate)
    assert 0.0 < again <= wait  # a refusal takes nothing: the wait only shrinks with time
    time.sleep(wait + 0.05)
    assert limiter.take("a", rate) == 0.0
    assert 0.8 < limiter.take("a", rate) <= 1.0


def test_an_idle_bucket_fills_up_to_the_burst_not_beyond(engine: Engine) -> None:
    limiter = PostgresRateLimiter(engine)
    rate = Rate(per_minute=240, burst=3)  # four a second
    assert limiter.take("a", rate) == 0.0
    time.sleep(1.0)  # four tokens' worth of time; the next four takes run within a quarter of a second
    assert [limiter.take("a", rate) == 0.0 for _ in range(4)] == [True, True, True, False]


def test_keys_have_their_own_buckets(engine: Engine) -> None:
    limiter = PostgresRateLimiter(engine)
    rate = Rate(per_minute=6, burst=1)
    assert limiter.take("client:a", rate) == 0.0
    assert 9.5 < limiter.take("client:a", rate) <= 10.0
    assert limiter.take("client:b", rate) == 0.0
    assert limiter.take("addr:10.0.0.1", rate) == 0.0
    assert set(rows(engine)) == {"client:a", "client:b", "addr:10.0.0.1"}


def test_zero_per_minute_is_no_limit_and_writes_nothing(engine: Engine) -> None:
    limiter = PostgresRateLimiter(engine)
    assert all(limiter.take("a", Rate(0, 0)) == 0.0 for _ in range(100))
    assert rows(engine) == {}


def test_threads_never_exceed_the_burst(engine: Engine) -> None:
    limiter = PostgresRateLimiter(engine)
    rate = Rate(per_minute=1, burst=50)
    results = allowed_in_threads(limiter, rate)
    assert len(results) == 200 and results.count(True) == 50


def test_processes_share_one_count(engine: Engine, database_url: str) -> None:
    """What the memory limiter cannot do: four processes (as four gunicorn workers) take from one bucket."""
    rate = Rate(per_minute=1, burst=50)
    counts = allowed_in_processes([Job("postgresql", database_url, "shared", rate, 30) for _ in range(4)])
    assert sum(counts) == 50, counts  # counted alone, each process would allow its 30: 120 in all


def test_the_statement_runs_outside_the_request_transaction(engine: Engine) -> None:
    """The take commits on its own: it holds no lock once it returns, and a request that rolls back keeps it."""
    limiter = PostgresRateLimiter(engine)
    rate = Rate(per_minute=1, burst=2)
    session = make_session_factory(engine)()
    try:
        begin_write(session)
        session.execute(text("SELECT 1"))  # the request's write transaction is open
        assert limiter.take("k", rate) == 0.0
        with engine.connect() as other:
            locks = other.execute(text(
                "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                "WHERE c.relname = 'rate_limit' AND c.relnamespace = current_schema()::regnamespace "
                "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())")).scalar_one()
            assert locks == 0
            assert other.execute(text("SELECT tokens FROM rate_limit WHERE key = 'k'")).scalar_one() < 1.01
        session.rollback()
    finally:
        session.close()
    assert limiter.take("k", rate) == 0.0
    assert limiter.take("k", rate) > 0  # the token taken inside the rolled-back request stayed taken


def test_the_table_is_unlogged_and_full_buckets_are_purged(engine: Engine) -> None:
    with engine.connect() as conn:
        persistence = conn.execute(text("SELECT relpersistence FROM pg_class WHERE relname = 'rate_limit' "
                                        "AND relnamespace = current_schema()::regnamespace")).scalar_one()
    assert persistence == "u"  # no WAL: a crash empties the buckets, which is harmless
    limiter = PostgresRateLimiter(engine, purge_interval=3600)
    fast, slow = Rate(per_minute=60_000, burst=1), Rate(per_minute=1, burst=5)  # full again after 1 ms / 5 min
    for i in range(100):
        limiter.take(f"addr:{i}", fast)
    limiter.take("slow", slow)
    time.sleep(0.05)
    assert limiter.purge() == 100  # a full bucket is the same as no row
    assert set(rows(engine)) == {"slow"}
    assert limiter.take("slow", slow) == 0.0 and rows(engine)["slow"] == pytest.approx(3.0, abs=0.01)


def test_the_purge_runs_from_take_at_most_once_an_interval(engine: Engine) -> None:
    limiter = PostgresRateLimiter(engine, purge_interval=0.3)
    fast = Rate(per_minute=60_000, burst=1)
    limiter.take("first", fast)  # the first take of a process purges
    for i in range(20):
        limiter.take(f"addr:{i}", fast)
    time.sleep(0.05)
    limiter.take("again", fast)  # within the interval: nothing purged
    assert len(rows(engine)) == 22
    time.sleep(0.3)
    limiter.take("later", fast)
    assert set(rows(engine)) == {"later"}


# -- when the database cannot count -----------------------------------------------------------------------------


def test_an_unreachable_database_falls_back_to_this_process_with_one_log_line(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dui.ratelimit")
    unreachable = make_engine(f"postgresql://postgres@127.0.0.1:{_free_port()}/nowhere")
    limiter = SharedRateLimiter(PostgresRateLimiter(unreachable), retry_interval=0.1)
    rate = Rate(per_minute=1, burst=3)
    started = time.monotonic()
    answers = [limiter.take("addr:203.0.113.7", rate) for _ in range(50)]
    assert time.monotonic() - started < 5  # refused connections, tried again at most every 0.1 s
    assert answers[:3] == [0.0] * 3 and all(wait > 0 for wait in answers[3:])  # still limited, per process
    lines = [r for r in caplog.records if r.name == "dui.ratelimit"]
    assert [r.getMessage() for r in lines] == ["rate limiter unavailable"]
    assert lines[0].levelname == "WARNING" and vars(lines[0])["store"] == "PostgreSQL"
    assert "counted by each process" in vars(lines[0])["meanwhile"]
    assert "203.0.113.7" not in str(vars(lines[0]))
    unreachable.dispose()


def test_a_database_without_the_table_falls_back_then_recovers(
        database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Migration 0012 not applied yet: requests are counted in the process until it is, then in the database."""
    if not database_url.startswith("postgresql"):
        pytest.skip("the database's rate limiter is PostgreSQL's")
    caplog.set_level(logging.INFO, logger="dui.ratelimit")
    schema = f"dui_limits_{uuid.uuid4().hex[:8]}"
    admin = make_engine(database_url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = database_url.split("?")[0] + f"?options=-csearch_path%3D{schema}"
    engine = make_engine(url)
    try:
        limiter = SharedRateLimiter(PostgresRateLimiter(engine), retry_interval=0.1)
        rate = Rate(per_minute=1, burst=1)
        assert limiter.take("k", rate) == 0.0  # counted in the process
        assert limiter.take("k", rate) > 0
        migrations.upgrade(url)
        time.sleep(0.15)
        assert limiter.take("k", rate) == 0.0  # a fresh bucket, in the database this time
        assert rows(engine) == {"k": 0.0}
        messages = [r.getMessage() for r in caplog.records if r.name == "dui.ratelimit"]
        assert messages == ["rate limiter unavailable", "rate limiter available again"]
        unavailable = next(r for r in caplog.records if r.getMessage() == "rate limiter unavailable")
        assert 'relation "rate_limit" does not exist' in vars(unavailable)["reason"]
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_a_connection_cut_under_the_limiter_is_dropped_and_the_next_try_reconnects(
        database_url: str, engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    """The database restarts (here: the limiter's connections are terminated): the broken connection is not lent
    again, the requests of the moment are counted in the process, and the next try counts in the database."""
    caplog.set_level(logging.INFO, logger="dui.ratelimit")
    name = f"dui-limits-{uuid.uuid4().hex[:8]}"
    own = make_engine(f"{database_url}&application_name={name}", pool_size=1, max_overflow=0)
    try:
        limiter = SharedRateLimiter(PostgresRateLimiter(own), retry_interval=0.1)
        rate = Rate(per_minute=1, burst=5)
        assert limiter.take("k", rate) == 0.0  # in the database: 4 left there
        with engine.connect() as admin:
            cut = admin.execute(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                     "WHERE application_name = :n"), {"n": name}).scalar_one()
        assert cut == 1
        assert limiter.take("k", rate) == 0.0  # counted in the process (a full bucket there)
        time.sleep(0.15)
        assert limiter.take("k", rate) == 0.0  # in the database again, on a new connection
        assert rows(engine)["k"] == pytest.approx(3.0, abs=0.01)
        messages = [r.getMessage() for r in caplog.records if r.name == "dui.ratelimit"]
        assert messages == ["rate limiter unavailable", "rate limiter available again"]
    finally:
        own.dispose()
