"""Shared fixtures.

Every test that touches the database runs twice: on SQLite and on PostgreSQL. PostgreSQL is used
when ``DUI_TEST_DATABASE_URL`` is set (``.ci/run`` sets it); each test session works in a schema of
its own, created by applying the migrations, and dropped at the end. Between tests the tables are
emptied, so every test starts from an empty store and sees real commits and rollbacks.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from flask import Flask
from sqlalchemy import text

import dui.audit.tables
import dui.staff.tables  # noqa: F401  (and the staff alerts tables)
from dui import migrations
from dui.app import create_app
from dui.crypto.master import KEY_BYTES, write_key_file
from dui.db import begin_writing, make_engine, normalize_url
from dui.fhir import tables
from dui.settings import AuditSettings, EncryptionSettings, InsiSettings, Limits, Settings
from tests import logscan
from tests.auditkit import owner_maintenance
from tests.helpers import FhirClient
from tests.redisserver import RedisServer, running_redis

PG_URL = os.environ.get("DUI_TEST_DATABASE_URL")
REQUIRE_PG = os.environ.get("DUI_REQUIRE_POSTGRESQL") == "1"
ROOT = Path(__file__).resolve().parents[1]
CONFORMANCE = Path(os.environ.get("DUI_CONFORMANCE_DIR") or ROOT.parent / "shared" / "conformance")
BASE_URL = "http://testserver"
TEST_LIMITS = Limits(max_request_bytes=2 * 1024 * 1024, max_bundle_entries=200, max_json_depth=64,
                     default_count=20, max_count=200)
# Emptied between tests. Not the data keys: the test app and the `dui serve` of tests/server cache them, and
# a key whose row vanished under a running server is not a situation the service has to handle.
ALL_TABLES = [t.name for t in reversed(tables.metadata.sorted_tables) if t.name != "data_key"]

# Encryption at rest: a master key of this test session, in a temporary folder (never var/keys).
TEST_KEYS = Path(tempfile.mkdtemp(prefix="dui-test-keys-"))
atexit.register(shutil.rmtree, TEST_KEYS, True)
TEST_MASTER_KEY_FILE = TEST_KEYS / "master.key"
write_key_file(TEST_MASTER_KEY_FILE, os.urandom(KEY_BYTES))
TEST_ENCRYPTION = EncryptionSettings(master_key_file=str(TEST_MASTER_KEY_FILE), dev_key_dir=str(TEST_KEYS / "dev"))
# The audit key of this test session, and the heads file its seals append to (emptied with the database).
TEST_AUDIT_KEY_FILE = TEST_KEYS / "audit.key"
write_key_file(TEST_AUDIT_KEY_FILE, os.urandom(KEY_BYTES), what="audit key")
TEST_HEADS_FILE = TEST_KEYS / "audit-heads.jsonl"
TEST_AUDIT = AuditSettings(key_file=str(TEST_AUDIT_KEY_FILE), heads_file=str(TEST_HEADS_FILE))


_SESSION_LOG = pytest.StashKey[logscan.SessionLogHandler]()


def pytest_configure(config: pytest.Config) -> None:
    """Every log record of the session goes to one file, scanned by the last test (tests/zzz/test_log_scan.py)."""
    config.stash[_SESSION_LOG] = logscan.install()


def pytest_unconfigure(config: pytest.Config) -> None:
    logscan.uninstall(config.stash[_SESSION_LOG])


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The skips, one line per reason with how many (``-ra`` would print one line per test: hundreds when
    PostgreSQL is not configured)."""
    reasons: Counter[str] = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
        reasons[str(reason).removeprefix("Skipped: ")] += 1
    if reasons:
        terminalreporter.write_sep("-", "skipped, by reason")
        for reason, count in reasons.most_common():
            terminalreporter.write_line(f"{count:5d}  {reason}")


@pytest.hookimpl(trylast=True)  # after pytest has regrouped the tests by database
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The log scan runs last, once every other test (and every server it started) has logged. Under
    ``DUI_TEST_SHARD`` (scripts/run-tests), only this shard's tests are kept."""
    shard = os.environ.get("DUI_TEST_SHARD")
    if shard:
        kept = [item for item in items if in_shard(item, shard)]
        config.hook.pytest_deselected(items=[item for item in items if not in_shard(item, shard)])
        items[:] = kept
    last = [item for item in items if item.nodeid.startswith("tests/zzz/")]
    if last:
        items[:] = [item for item in items if not item.nodeid.startswith("tests/zzz/")] + last


def in_shard(item: pytest.Item, shard: str) -> bool:
    """``make test`` runs the suite as two processes side by side, one per core (scripts/run-tests), each with
    ``DUI_TEST_SHARD=k/n``: the tests are dealt between the shards by a stable hash of their id, on either database
    (the tests on PostgreSQL cost more than those on SQLite, so dealing each database to a shard of its own left
    one shard waiting for the other), and the log scan (tests/zzz) runs in every shard, each over its own
    process's log. Every test is in exactly one shard (tests/unit/test_shards.py)."""
    index, slash, count = shard.partition("/")
    if not (slash and index.isdigit() and count.isdigit() and 1 <= int(index) <= int(count)):
        raise pytest.UsageError(f"DUI_TEST_SHARD={shard}: expected k/n, e.g. 1/2")
    if item.nodeid.startswith("tests/zzz/"):
        return True
    return zlib.crc32(item.nodeid.encode()) % int(count) == int(index) - 1


def conformance_dir(*parts: str) -> Path:
    """A folder of ../shared/conformance, or a skip that says it is missing."""
    path = CONFORMANCE.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"conformance material absent: {path} (../shared/conformance, or DUI_CONFORMANCE_DIR)")
    return path


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'dui.sqlite'}"
        migrations.upgrade(url)
        yield url
        return
    if not PG_URL:
        if REQUIRE_PG:
            pytest.fail("DUI_REQUIRE_POSTGRESQL=1 but DUI_TEST_DATABASE_URL is not set")
        pytest.skip("PostgreSQL tests need DUI_TEST_DATABASE_URL (see README, 'Tests')")
    with migrated_schema("dui_test") as url:
        yield url


@contextmanager
def migrated_schema(prefix: str) -> Iterator[str]:
    """A PostgreSQL schema of its own (on ``DUI_TEST_DATABASE_URL``), migrated to the head, dropped afterwards."""
    assert PG_URL
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in PG_URL else "?"
    url = normalize_url(PG_URL) + f"{separator}options={quote(f'-csearch_path={schema}')}"
    try:
        migrations.upgrade(url)
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def test_settings(database_url: str, **changes: Any) -> Settings:
    return Settings(database_url=database_url, base_url=BASE_URL, limits=TEST_LIMITS,
                    encryption=TEST_ENCRYPTION, audit=TEST_AUDIT).with_(**changes)


@pytest.fixture(scope="session")
def insi_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Where the INSi simulator keeps its development certificates during the test session."""
    return str(tmp_path_factory.mktemp("insi-simulator"))


@pytest.fixture(scope="session")
def app(database_url: str, insi_dir: str) -> Iterator[Flask]:
    """The app; INSi calls go to the local simulator over mutual TLS (DUI_INSI_URL unset in dev)."""
    application = create_app(test_settings(database_url, insi=InsiSettings(simulator_dir=insi_dir, timeout=3.0)))
    yield application
    application.extensions["dui"].dispose()


# rate_limit: the buckets of the database's rate limiter (PostgreSQL only, outside the metadata)
PG_TABLES = [*ALL_TABLES, "rate_limit"]
# The tables of PG_TABLES that hold a row; those that own a sequence that has handed out a number (its last value is
# NULL until then, and again after RESTART IDENTITY).
_PG_HOLDING = text(" UNION ALL ".join(f"SELECT '{name}' WHERE EXISTS (SELECT 1 FROM {name})" for name in PG_TABLES))
_PG_NUMBERED = text(
    "SELECT t.relname FROM pg_sequences q"
    " JOIN pg_class s ON s.relname = q.sequencename AND s.relnamespace = current_schema()::regnamespace"
    " JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid AND d.deptype IN ('a', 'i')"
    " JOIN pg_class t ON t.oid = d.refobjid"
    " WHERE q.schemaname = current_schema() AND q.last_value IS NOT NULL")


def empty_database(app: Flask) -> None:
    """Empty every table and the session's heads file. The audit trail's guards hold against the service's own
    role whatever its session says; they are lifted here the way only the database's owner can
    (``tests.auditkit.owner_maintenance``)."""
    engine = app.extensions["dui"].engine
    # As a writer from the start: a `dui serve` of tests/server that has just started writes too (its first sync)
    with begin_writing(engine) as conn, owner_maintenance(conn):
        if engine.dialect.name == "postgresql":
            # A TRUNCATE costs some milliseconds a table, empty or not (70 to 90 ms for them all, before each of the
            # thousand tests on PostgreSQL): the same TRUNCATE, on the tables that hold a row or whose numbering has
            # moved. The others are empty with their numbering at 1 already: the end state is the same. The lock a
            # TRUNCATE of every table took is taken first, in the same order: as before, a transaction still
            # writing (a `dui serve` of tests/server) ends before the tables are looked at and emptied.
            conn.execute(text(f"LOCK TABLE {', '.join(PG_TABLES)} IN ACCESS EXCLUSIVE MODE"))
            held = {*conn.execute(_PG_HOLDING).scalars(), *conn.execute(_PG_NUMBERED).scalars()}
            names = [name for name in PG_TABLES if name in held]
            if names:
                conn.execute(text(f"TRUNCATE {', '.join(names)} RESTART IDENTITY CASCADE"))
        else:
            for name in ALL_TABLES:
                conn.execute(text(f"DELETE FROM {name}"))
            conn.execute(text("DELETE FROM sqlite_sequence"))  # numbering starts again at 1, as on PostgreSQL
    TEST_HEADS_FILE.unlink(missing_ok=True)
    app.extensions["dui"].profiles.invalidate()  # the installed packages were emptied too


@pytest.fixture
def client(app: Flask) -> FhirClient:
    empty_database(app)
    return FhirClient(app.test_client())


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server for the session (skips, saying so, where redis-server is not installed)."""
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied: every test starts from no counters."""
    assert redis_server.command("FLUSHALL") == "+OK"
    return redis_server.url


@pytest.fixture
def backend(database_url: str) -> str:
    return "postgresql" if database_url.startswith("postgresql") else "sqlite"
