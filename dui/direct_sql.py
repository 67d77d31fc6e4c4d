"""The hottest statements of the store, run on psycopg directly (PostgreSQL).

A read by id, a version, a page of resources by row id, an identifier search: each is one statement that the
service runs thousands of times a second. Through the ORM session each costs about 0.2 ms of CPU (the session, its
connection and transaction bookkeeping, result processing) around a statement that psycopg runs in 0.03 ms
(``bench/inprocess.py``). A ``DirectQuery`` is compiled once, at import, from the same SQLAlchemy statement the
store runs elsewhere, and in a read-only unit on PostgreSQL (``dui.db.read_session``) it borrows a connection from
the engine's own pool for that one statement, in autocommit, and gives back row tuples:

- the same connections as the rest of the service (no second pool: the connection count and the pool gauges of
  ``/metrics`` are unchanged; when the unit's session holds a connection already, the statement runs on that one,
  so that a thread never holds two), the same libpq options (statement timeout, ``prepare_threshold``: psycopg
  prepares a statement it has run 5 times on a connection, or never behind pgbouncer before 1.21);
- the same visibility as the session it stands for: a read-only unit runs each statement in autocommit, seeing the
  committed state at its own start;
- the same errors: a psycopg error becomes SQLAlchemy's ``DBAPIError`` for it, a lost connection invalidates the
  pool as SQLAlchemy does (``connection_invalidated``: the web layer runs the read once more), and a connection left
  in an unknown state (an exception landed mid-statement, ``dui.web.budget``) is closed, never reused.

In a writing unit the same statements, and those of a write itself (the current row of a resource, locked; the
advisory lock that serialises the creators of one id; the insert of a new resource row; its audit entry), take
``DirectQuery.rows_writing``: on the unit's own connection, in its transaction, so that they see and are seen by
everything else the unit does (the repository writes its queued rows before it reads), and commit or roll back with
it. Through the session each cost about 0.15 ms of CPU on top of the statement; nothing in the service writes
through the ORM's own objects, so the session has nothing of its own to flush first.

Each pooled connection keeps one psycopg cursor for these statements (in its pool entry's ``info``): a new cursor
per statement cost about 11 µs of CPU, a seventh of a one-row SELECT. A cursor holds its last result until its next
statement: after a result of more than 8 rows or 64 KiB (a page of a search, a large Binary) the cursor is closed,
freeing it, and the next statement takes a new one.

On SQLite every statement runs through the session.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg.pq import ExecStatus, TransactionStatus
from sqlalchemy import Connection, CursorResult, Engine
from sqlalchemy.dialects.postgresql import psycopg as pg_psycopg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from dui.db import DIRECT_ENGINE

_DIALECT = pg_psycopg.dialect()  # type: ignore[no-untyped-call]
_CURSOR = "dui.direct_sql.cursor"  # in a pooled connection's info: the cursor its direct statements run on
KEEP_ROWS, KEEP_BYTES = 8, 64 * 1024  # the largest result a kept cursor holds on to (``_small``)


class DirectQuery:
    """``statement``, run directly in a read-only unit on PostgreSQL. ``direct``: the form psycopg runs, when the
    statement's own cannot be (an ``IN`` list that SQLAlchemy expands becomes ``= ANY(array)``); it takes the same
    parameters and gives the same columns."""

    def __init__(self, statement: Executable, direct: Executable | None = None) -> None:
        self.statement = statement
        target = direct if direct is not None else statement
        assert isinstance(target, ClauseElement)
        compiled = target.compile(dialect=_DIALECT)
        assert isinstance(compiled, SQLCompiler)
        assert not compiled.literal_execute_params and not compiled.post_compile_params, \
            "a direct statement takes its lists as array parameters (= ANY), not expanding ones"
        sql = str(compiled)  # named placeholders: %(name)s
        # The values the statement holds itself (a comparison with a literal, ``x == "Patient"``): a text written
        # into the SQL, so that the plan PostgreSQL keeps for the prepared statement knows it as the statement built
        # per request did; anything else given with every run, beside the caller's parameters.
        self.values: dict[str, Any] = {}
        for bind, name in compiled.bind_names.items():
            if bind.required:
                continue
            value = bind.effective_value
            if isinstance(value, str):
                sql = sql.replace(f"%({name})s", "'" + value.replace("'", "''").replace("%", "%%") + "'")
            else:
                self.values[name] = value
        self.sql = sql

    def rows(self, session: Session, params: Mapping[str, Any]) -> Sequence[Any]:
        """The rows: tuples when run directly, SQLAlchemy rows (which index the same) otherwise. In a read-only unit
        on PostgreSQL, on a connection of the pool (below); in a writing unit, on its own connection
        (``rows_writing``)."""
        engine: Engine | None = session.info.get(DIRECT_ENGINE)
        if engine is None:
            return self.rows_writing(session, params)
        if self.values:
            params = {**self.values, **params}
        if session.in_transaction():
            # The session holds a connection already (in autocommit: a read-only unit's): the statement runs on it.
            # Borrowing a second one would hold two per thread, past the pool's size, and the pool would open and
            # close connections at that rate.
            return run_on(session.connection(), engine, self.sql, params)
        return run(engine, self.sql, params)

    def rows_writing(self, session: Session, params: Mapping[str, Any]) -> Sequence[Any]:
        """The rows in a writing unit: on PostgreSQL on the unit's own connection, in its transaction; through the
        session elsewhere."""
        bind = session.get_bind()
        if bind.dialect.name != "postgresql":
            result = session.execute(self.statement, params)
            if isinstance(result, CursorResult) and not result.returns_rows:  # an UPDATE or DELETE
                return []
            return result.all()
        engine = bind.engine if isinstance(bind, Connection) else bind
        return run_on(session.connection(), engine, self.sql, {**self.values, **params} if self.values else params)


def run_on(held: Connection, engine: Engine, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """``sql`` on the connection a unit's session holds (a read-only unit's, in autocommit; or a writing unit's, in
    its transaction)."""
    connection: psycopg.Connection[Any] = held.connection.driver_connection  # type: ignore[assignment]
    try:
        return _fetch(held.connection.info, connection, sql, params)
    except psycopg.Error as exc:
        raise _error(engine, held.connection, exc, sql, params) from exc


def run(engine: Engine, sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    """``sql`` on a connection of ``engine``'s pool, in autocommit, for this statement only."""
    fairy = engine.raw_connection()
    connection: psycopg.Connection[Any] = fairy.driver_connection  # type: ignore[assignment]
    clean = False
    try:
        connection.autocommit = True
        rows = _fetch(fairy.info, connection, sql, params)
        clean = True
        return rows
    except psycopg.Error as exc:
        error = _error(engine, fairy, exc, sql, params)
        clean = (not error.connection_invalidated and not connection.broken
                 and connection.info.transaction_status == TransactionStatus.IDLE)
        raise error from exc
    finally:
        if clean:
            connection.autocommit = False  # as the pool lent it
            fairy.close()
        elif fairy.is_valid:
            fairy.invalidate()  # closed and given back: never lent again


def _cursor(info: dict[str, Any], connection: psycopg.Connection[Any]) -> psycopg.Cursor[Any]:
    """The cursor kept for ``connection`` in its pool entry's ``info`` (which lives as long as the pooled
    connection; see the module). A pooled connection serves one thread at a time, so its cursor does too. A
    connection replaced under the same entry gets a cursor of its own."""
    cursor: psycopg.Cursor[Any] | None = info.get(_CURSOR)
    if cursor is None or cursor.connection is not connection or cursor.closed:
        cursor = info[_CURSOR] = connection.cursor()
    return cursor


def _fetch(info: dict[str, Any], connection: psycopg.Connection[Any], sql: str,
           params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    cursor = _cursor(info, connection)
    cursor.execute(sql, params)
    result = cursor.pgresult  # its status, not ``description``, which builds a column object per column each time
    if result is None or result.status != ExecStatus.TUPLES_OK:
        return []
    rows = cursor.fetchall()
    if not _small(rows):  # a kept cursor keeps its last result: a large one is freed now, with its cursor
        cursor.close()
        info.pop(_CURSOR, None)
    return rows


def _small(rows: list[tuple[Any, ...]]) -> bool:
    """Whether a result is small enough to stay in memory with its kept cursor until the connection's next
    statement: at most ``KEEP_ROWS`` rows whose texts and bytes come to ``KEEP_BYTES`` in all (a read by id, an
    identifier search's page of one), so that ten pooled connections never hold more than ten such results."""
    if len(rows) > KEEP_ROWS:
        return False
    size = 0
    for row in rows:
        for value in row:
            if isinstance(value, (str, bytes)):
                size += len(value)
    return size <= KEEP_BYTES


def _error(engine: Engine, fairy: Any, exc: psycopg.Error, sql: str, params: Mapping[str, Any]) -> DBAPIError:
    """SQLAlchemy's error for ``exc``, its parameters hidden. A lost connection invalidates the pool as SQLAlchemy
    does: every connection of the pool's generation is discarded (a database restart took them all), and the web
    layer runs the read once more, on a fresh one."""
    lost = bool(engine.dialect.is_disconnect(exc, fairy, None))  # type: ignore[arg-type]
    if lost:
        engine.pool._invalidate(fairy, exc)
    error = DBAPIError.instance(sql, params, exc, psycopg.Error, hide_parameters=True, connection_invalidated=lost,
                                dialect=engine.dialect)
    assert isinstance(error, DBAPIError)  # a psycopg error is always one of the DB-API's
    return error
