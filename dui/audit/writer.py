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

A batch that fails is written again entry by entry, each in a transaction of its own: an entry the database
refuses fails alone, and a connection lost with a database restart is replaced by the pool. Entries are never
queued past their request: a clean shutdown (the server waits for requests in flight) loses none, and ``kill -9``
loses only entries whose response was never sent.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime

from sqlalchemy.orm import Session

from dui.audit import trail
from dui.clock import Clock

logger = logging.getLogger("dui.audit")
MAX_BATCH = 256  # entries in one statement; the rest wait for the next


class _Pending:
    __slots__ = ("done", "entry", "error", "lead", "now")

    def __init__(self, entry: trail.AuditEntry, now: datetime) -> None:
        self.entry, self.now = entry, now
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.lead = False  # woken to write the next batch, not because its own entry is written


class AuditWriter:
    """Writes audit entries in group commits (see the module). One per process; safe for any number of threads.

    ``transaction(alone)``: a unit of work on the primary database that commits what it holds as one transaction;
    ``alone``: it will hold one entry, which on PostgreSQL is one statement, atomic by itself (autocommit: no
    BEGIN and COMMIT round trips)."""

    def __init__(self, transaction: Callable[[bool], AbstractContextManager[Session]], clock: Clock,
                 max_batch: int = MAX_BATCH) -> None:
        self._transaction, self._clock, self._max_batch = transaction, clock, max_batch
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
            with self._transaction(len(batch) == 1) as session:
                trail.record_many(session, [(p.entry, p.now) for p in batch])
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
                with self._transaction(True) as session:
                    trail.record_many(session, [(pending.entry, pending.now)])
                self.batches += 1
                self.entries += 1
            except Exception as exc:
                pending.error = exc
