"""Group commit of the audit entries that have no transaction of their own to ride in: reads, refusals, answers
no handler recorded (a write's entry commits in the write's own transaction, ``trail.record``).

The durability rule (docs/security.md, "Audit trail"): **an entry is committed before the response it describes
is sent.** ``AuditWriter.record`` returns only once the entry's transaction has committed, and raises if it could
not be written, so that nothing is served unrecorded.

What it saves is the cost of one transaction per request. The threads of a process that record at the same time
share one: the first to arrive writes (the leader), with one statement for all that are waiting; those that
arrive while it writes queue up, and when it is done the oldest of them writes the next batch. Nothing waits for
a timer: a request alone is written at once, as before; under load, one commit (and on PostgreSQL one WAL flush)
serves a batch. On SQLite, where each write takes the database's one write lock, the threads of a process take it
once per batch instead of once per read.

A batch that fails is written again entry by entry: an entry the database refuses fails alone. Entries are never
queued past their request: a clean shutdown (the server waits for requests in flight) loses none, and ``kill -9``
loses only entries whose response was never sent.

How a batch is written (``Batch``): on PostgreSQL by ``PostgresEntries``, psycopg on a connection of the writer's own
(one per process, autocommit): an entry alone is one statement, atomic by itself; a batch is one transaction whose
statements go as one pipeline. A connection lost (a database restart) is replaced and the batch tried once more. On
SQLite by ``SessionEntries``, in a writing unit of work.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from dui.audit import trail
from dui.clock import Clock
from dui.db import unit_of_work

logger = logging.getLogger("dui.audit")
MAX_BATCH = 256  # entries in one statement; the rest wait for the next
Batch = Callable[[list[tuple[trail.AuditEntry, datetime]]], None]  # writes entries and commits them, or raises


class _Pending:
    __slots__ = ("done", "entry", "error", "lead", "now")

    def __init__(self, entry: trail.AuditEntry, now: datetime) -> None:
        self.entry, self.now = entry, now
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.lead = False  # woken to write the next batch, not because its own entry is written


class AuditWriter:
    """Writes audit entries in group commits (see the module). One per process; safe for any number of threads.

    ``write``: commits a batch of entries (with the times they were recorded) as one transaction, or raises."""

    def __init__(self, write: Batch, clock: Clock, max_batch: int = MAX_BATCH) -> None:
        self._write_batch, self._clock, self._max_batch = write, clock, max_batch
        self._lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._writing = False  # a leader is writing; while it is, the queue fills and waits for the next leader
        self.batches = 0  # how many transactions wrote entries (tests, benchmarks)
        self.entries = 0

    @property
    def waiting(self) -> int:
        """Entries queued behind the one being written."""
        with self._lock:
            return len(self._queue)

    def record(self, entry: trail.AuditEntry, now: datetime | None = None) -> None:
        """Write ``entry`` (recorded at ``now``, else the clock's time); return once it is committed. Raises what
        writing it raised."""
        pending = _Pending(entry, now if now is not None else self._clock())
        with self._lock:
            self._queue.append(pending)
            lead = not self._writing
            self._writing = True
        if not lead:
            pending.done.wait()
            if not pending.lead:
                if pending.error is not None:
                    raise pending.error
                return
        self._lead()
        if pending.error is not None:
            raise pending.error

    def _lead(self) -> None:
        """Write one batch, the leader's own entry first among it (the queue's oldest), then hand over."""
        with self._lock:
            batch = self._queue[:self._max_batch]
            del self._queue[:self._max_batch]
        try:
            self._write(batch)
        except BaseException as exc:  # not an error of the database (an interruption): nothing is known written
            for pending in batch:
                pending.error = pending.error or exc
            raise
        finally:
            with self._lock:
                successor = self._queue[0] if self._queue else None
                if successor is None:
                    self._writing = False
                else:
                    successor.lead = True
            for pending in batch[1:]:
                pending.done.set()
            if successor is not None:
                successor.done.set()

    def _write(self, batch: list[_Pending]) -> None:
        try:
            self._write_batch([(p.entry, p.now) for p in batch])
            self.batches += 1
            self.entries += len(batch)
            return
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
                return
            logger.warning("audit batch not written; writing its entries one by one",
                           extra={"entries": len(batch), "error": type(exc).__name__})
        for pending in batch:
            try:
                self._write_batch([(pending.entry, pending.now)])
                self.batches += 1
                self.entries += 1
            except Exception as exc:
                pending.error = exc

    def close(self) -> None:
        closing = getattr(self._write_batch, "__self__", None)
        if isinstance(closing, PostgresEntries):
            closing.close()


class SessionEntries:
    """Writes a batch in a writing unit of work of ``session_factory`` (SQLite; any database)."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    def write(self, entries: list[tuple[trail.AuditEntry, datetime]]) -> None:
        with unit_of_work(self._session_factory, True) as session:
            trail.record_many(session, entries)


class PostgresEntries:
    """Writes a batch with psycopg on a connection of its own, opened by ``engine`` (its connect options,
    ``statement_timeout`` included, apply), detached from its pool and kept in autocommit. Only the writer's leader
    calls it: one thread at a time."""

    # The plans PostgreSQL keeps for this connection's statements and for the triggers and foreign-key checks they
    # fire are made once, with the table sizes of that moment: a connection opened on a new, near-empty audit table
    # would keep a sequential scan while the table grows (its cost per entry grew 7-fold in 30 s of reads measured
    # with autovacuum off). The plans are dropped after the first entries, then now and then: made again with the
    # table's size of the day, they stay good as it grows.
    REPLAN_FIRST, REPLAN_FACTOR, REPLAN_MOST = 500, 10, 500_000  # after 500, 5,000, 50,000, then every 500,000

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection_: Any = None  # psycopg's
        self._cursor: Any = None  # the connection's, for single entries
        self._statements = 0
        self._replan_at = self.REPLAN_FIRST

    def write(self, entries: list[tuple[trail.AuditEntry, datetime]]) -> None:
        import psycopg

        rows = [trail.pg_parameters(entry, now) for entry, now in entries]
        for attempt in (1, 2):
            connection = self._connection()
            try:
                if len(rows) == 1:  # on the connection's one cursor: a new cursor costs a third of the statement
                    self._cursor.execute(trail.PG_RECORD_SQL, rows[0])
                else:
                    with connection.transaction(), connection.cursor() as cursor:
                        cursor.executemany(trail.PG_RECORD_SQL, rows)
            except psycopg.OperationalError:
                # The connection is gone (a restart): a fresh one, once. An entry whose commit was done but not
                # acknowledged is then written twice: a duplicate, never a loss.
                self.close()
                if attempt == 2:
                    raise
                continue
            self._statements += len(rows)
            if self._statements >= self._replan_at:
                self._replan(connection)
            return

    def _replan(self, connection: Any) -> None:
        step = min(self._replan_at * (self.REPLAN_FACTOR - 1), self.REPLAN_MOST)
        self._replan_at = self._statements + step
        try:
            connection.execute("DISCARD PLANS")
        except Exception:  # the entries are written; a connection that fails here is replaced at the next batch
            logger.warning("audit writer: cached plans not dropped")
            self.close()

    def _connection(self) -> Any:
        if self._connection_ is None:
            fairy = self._engine.raw_connection()
            fairy.detach()  # the engine's connect options, outside its pool: the requests keep all of it
            connection: Any = fairy.dbapi_connection
            connection.autocommit = True
            self._connection_ = connection
            self._cursor = connection.cursor()
        return self._connection_

    def close(self) -> None:
        connection, self._connection_, self._cursor = self._connection_, None, None
        if connection is not None:
            try:
                connection.close()
            except Exception:
                logger.warning("audit writer connection not closed cleanly")


def writer_for(engine: Engine, session_factory: sessionmaker[Session], clock: Clock) -> AuditWriter:
    """The writer of a process: psycopg on a connection of its own on PostgreSQL, a unit of work on SQLite."""
    if engine.dialect.name == "postgresql":
        return AuditWriter(PostgresEntries(engine).write, clock)
    return AuditWriter(SessionEntries(session_factory).write, clock)
