"""Database engine, sessions and the shared ``MetaData``.

SQLite (development, small sites) and PostgreSQL (production) are both supported. On SQLite, a unit
of work that writes starts with ``BEGIN IMMEDIATE`` (see ``begin_write``): SQLite then serialises
writers up front, which is what makes conditional create race-free there; readers are not blocked
(WAL mode). On PostgreSQL the default READ COMMITTED isolation is kept and races are closed by
unique constraints, row locks and transaction-scoped advisory locks (see ``dui.fhir.sql``).
"""

from __future__ import annotations

import hashlib
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, DateTime, Dialect, Engine, MetaData, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores naive UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)

_WRITE_OPTION = "dui_write"


def normalize_url(url: str) -> str:
    """Use psycopg 3 for ``postgresql://`` URLs (SQLAlchemy would otherwise pick psycopg2)."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str, statement_timeout: float = 0, **kwargs: Any) -> Engine:
    """Create an engine with the settings this service relies on for each backend.

    ``statement_timeout`` (seconds, PostgreSQL) stops a statement that runs longer: a runaway query
    must not keep a core busy after its client gave up.
    """
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        _configure_sqlite(engine)
        return engine
    # No pre-ping: it costs a round trip on every checkout (13 % of a read's time, measured). A
    # connection found dead raises a disconnect error instead; the pool then discards every
    # connection of that generation, and the web layer retries a read once (dui.web.fhir).
    kwargs.setdefault("pool_pre_ping", False)
    # psycopg prepares a statement run 5 times on one connection; behind pgbouncer in transaction mode (before 1.21,
    # which tracks them) the next transaction may run on another server connection that does not have it:
    # ``?prepare_threshold=none`` turns preparing off (docs/scaling.md). Read here: psycopg wants a number or None.
    url, threshold = _prepare_threshold(url)
    if threshold is not _UNSET:
        kwargs["connect_args"] = {**kwargs.get("connect_args", {}), "prepare_threshold": threshold}
    if "poolclass" not in kwargs:  # a NullPool (dui.metrics.database) takes no size
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 20)
    # Added to the URL's own libpq options (a deployment may already set some there). No parallel plans: a request
    # is one backend among many concurrent ones, and the planner chose parallel scans for the per-row scope of a
    # staff member's searches that ran 3 to 4 times slower than the plain index scans (docs/benchmarks.md).
    settings = ["-c max_parallel_workers_per_gather=0"]
    if statement_timeout:
        settings.append(f"-c statement_timeout={round(statement_timeout * 1000)}")
    parsed = make_url(url)
    options = " ".join([parsed.query.get("options", ""), *settings]).strip()  # type: ignore[list-item]
    url = parsed.update_query_dict({"options": options}).render_as_string(hide_password=False)
    return create_engine(url, **kwargs)


_UNSET: Any = object()


def _prepare_threshold(url: str) -> tuple[str, Any]:
    """``url`` without its ``prepare_threshold`` query parameter, and its value (an int, None for ``none``)."""
    parsed = make_url(url)
    raw = parsed.query.get("prepare_threshold")
    if raw is None:
        return url, _UNSET
    value = raw[-1] if isinstance(raw, tuple) else raw
    rest = parsed.difference_update_query(["prepare_threshold"]).render_as_string(hide_password=False)
    if value.strip().lower() in ("none", ""):
        return rest, None
    try:
        return rest, int(value)
    except ValueError:
        raise ValueError("prepare_threshold in a database URL must be a whole number or none") from None


def _configure_sqlite(engine: Engine) -> None:
    # pysqlite's own transaction handling issues BEGIN lazily and cannot do BEGIN IMMEDIATE or
    # savepoints reliably; take it over (SQLAlchemy documents this recipe).
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    lock_path = _write_lock_path(engine.url.database)

    @event.listens_for(engine, "begin")
    def on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get(_WRITE_OPTION)
        if immediate and lock_path is not None:
            _take_write_lock(conn.connection.info, lock_path)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    if lock_path is not None:
        # Released when the connection goes back to the pool (after its COMMIT or ROLLBACK), or is closed.
        @event.listens_for(engine, "checkin")
        def on_checkin(_dbapi_connection: Any, record: Any) -> None:
            if record is not None:
                _release_write_lock(record.info)

        @event.listens_for(engine, "close")
        def on_close(_dbapi_connection: Any, record: Any) -> None:
            if record is not None:
                _close_write_lock(record.info)

        @event.listens_for(engine, "invalidate")
        def on_invalidate(_dbapi_connection: Any, record: Any, _exc: Any) -> None:
            if record is not None:
                _close_write_lock(record.info)


# SQLite's writers queue on a file lock of their own (flock, next to the database): a writer waits in the kernel and
# is woken the moment the one before it is done. Left to SQLite's busy handler, a waiter sleeps and retries at 25,
# 50 then 100 ms steps, whatever the lock's holder does: a read's audit entry behind a create waited up to a second
# (p99 of reads 0.7-1 s at 16 connections, docs/benchmarks.md). The same order as before, SQLite's lock taken after
# it; a deferred transaction that comes to write still waits on SQLite's own.
_WRITE_LOCK_FD = "dui.sqlite_write_lock"
_WRITE_LOCK_HELD = "dui.sqlite_write_lock_held"


def _write_lock_path(database: str | None) -> str | None:
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return f"{database}-writers.lock"


_this_thread = threading.local()  # how many write locks this thread holds (through its connections)


def _take_write_lock(info: dict[str, Any], path: str) -> None:
    import fcntl

    if info.get(_WRITE_LOCK_HELD) or getattr(_this_thread, "held", 0):
        # This thread writes already, on another connection: waiting here would wait for itself, for ever. SQLite's
        # own lock decides, as before (its busy timeout ends the wait with an error).
        return
    fd = info.get(_WRITE_LOCK_FD)
    if fd is None:
        fd = info[_WRITE_LOCK_FD] = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # the GIL is released while it waits
    info[_WRITE_LOCK_HELD] = True
    _this_thread.held = getattr(_this_thread, "held", 0) + 1


def _release_write_lock(info: dict[str, Any]) -> None:
    if info.pop(_WRITE_LOCK_HELD, False):
        import fcntl

        _this_thread.held = max(0, getattr(_this_thread, "held", 0) - 1)
        fcntl.flock(info[_WRITE_LOCK_FD], fcntl.LOCK_UN)


def _close_write_lock(info: dict[str, Any]) -> None:
    if info.pop(_WRITE_LOCK_HELD, False):
        _this_thread.held = max(0, getattr(_this_thread, "held", 0) - 1)
    fd = info.pop(_WRITE_LOCK_FD, None)
    if fd is not None:
        os.close(fd)  # closing the file releases its lock


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, autoflush=False, expire_on_commit=False)


def begin_write(session: Session) -> None:
    """Start the session's transaction as a writer. Call first, before any statement."""
    session.connection(execution_options={_WRITE_OPTION: True})


@contextmanager
def begin_writing(engine: Engine) -> Iterator[Connection]:
    """A connection of ``engine`` in a transaction begun as a writer (``engine.begin()`` otherwise): on SQLite the
    write lock is taken first, so that a transaction that reads before it writes waits for another writer instead of
    failing at once when that one wrote in between (SQLite's "database is locked" on a stale read snapshot)."""
    with engine.connect() as plain:
        conn = plain.execution_options(**{_WRITE_OPTION: True})
        with conn.begin():
            yield conn


# In ``Session.info``: set on the session of a read-only unit of work (``read_session``); on PostgreSQL, the engine
# its hot statements may run on directly (``dui.direct_sql``).
READ_ONLY = "dui.read_only"
DIRECT_ENGINE = "dui.direct_engine"
_AUTOCOMMIT: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()


def read_session(factory: sessionmaker[Session]) -> Session:
    """The session of a read-only unit of work. It checks nothing out until a statement needs a connection, and a
    read served by ``dui.direct_sql`` never does (the unit then costs no ORM work at all). On PostgreSQL the
    connection it takes runs in autocommit: no BEGIN/COMMIT round trips, each statement sees the committed state at
    its own start."""
    bind = factory.kw.get("bind")
    if isinstance(bind, Engine) and bind.dialect.name == "postgresql":
        autocommit = _AUTOCOMMIT.get(bind)
        if autocommit is None:
            autocommit = _AUTOCOMMIT[bind] = bind.execution_options(isolation_level="AUTOCOMMIT")
        session = factory(bind=autocommit)
        session.info[DIRECT_ENGINE] = bind
    else:
        session = factory()
    session.info[READ_ONLY] = True
    return session


@contextmanager
def unit_of_work(session_factory: sessionmaker[Session], write: bool = True) -> Iterator[Session]:
    """A session in a transaction, committed if the block ends normally, else rolled back. A writing unit starts
    with ``begin_write`` (BEGIN IMMEDIATE on SQLite); a reading one is a ``read_session``."""
    session = session_factory() if write else read_session(session_factory)
    try:
        if write:
            begin_write(session)
        yield session
        if write or session.in_transaction():  # a read that never took a connection has nothing to end
            session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def is_postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def advisory_lock(session: Session, key: str) -> None:
    """Serialise transactions that work on the same ``key`` until they end (PostgreSQL).

    On SQLite, writers are already serialised by ``BEGIN IMMEDIATE``, so this does nothing.
    """
    if not is_postgresql(session):
        return
    session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": advisory_key(key)})


def advisory_key(key: str) -> int:
    """The 64-bit number PostgreSQL's advisory locks know ``key`` by."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def analyze(engine: Engine) -> None:
    """Refresh the query planner's statistics after a bulk load (``dui demo load``): until autovacuum gets to a
    table just filled, PostgreSQL plans as if it were nearly empty, and the nested loops it then picks for scoped
    searches (``_has`` on a large compartment) can run for seconds. SQLite keeps its statistics the same way."""
    with engine.connect() as connection:
        connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
