"""Token buckets in PostgreSQL: one count per key for every process and server on the database.

The table ``rate_limit`` (migration 0012) holds one row per key that is not full: its tokens and when they were
counted, by the database's clock (so servers whose clocks differ agree). A request costs one statement, an
``INSERT ... ON CONFLICT (key) DO UPDATE ... RETURNING``: the row is locked for the statement only, refilled for
the time elapsed, capped at the burst, and a token taken when there is one. Concurrent requests of one key queue
on its row for that instant, so no interleaving of processes lets more through than the bucket holds.

The statement runs on a connection of its own in autocommit mode, never inside the request's transaction: it
holds no lock after it returns, and a request that rolls back does not give its token back.

The table is UNLOGGED (no WAL: an update costs no disk flush; after a crash PostgreSQL empties it, which gives
every key a full bucket, and replicas do not have it) and has no index but its primary key, on a fill factor
that leaves room on each page, so an update is a heap-only update. A row records when its bucket is full again
(``full_at``); past that time it is the same as no row, so ``purge`` deletes such rows, at most once a minute
per process (one scan of a table as large as the keys seen in the last few minutes).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from dui.ratelimit import Rate, StoreUnavailable

# The tokens the bucket holds now, before this request (refilled since ``counted``, capped at the burst).
_REFILLED = "least(%(capacity)s, b.tokens + greatest(0.0, excluded.counted - b.counted) * %(per_second)s)"
_LEFT = f"CASE WHEN {_REFILLED} >= 1 THEN {_REFILLED} - 1 ELSE {_REFILLED} END"
TAKE = f"""
INSERT INTO rate_limit AS b (key, tokens, counted, allowed, full_at)
SELECT %(key)s, %(capacity)s - 1, clock.t, true, clock.t + 1 / %(per_second)s
FROM (SELECT extract(epoch FROM clock_timestamp())::float8 AS t) AS clock
ON CONFLICT (key) DO UPDATE SET
    tokens = {_LEFT},
    allowed = {_REFILLED} >= 1,
    counted = excluded.counted,
    full_at = excluded.counted + (%(capacity)s - {_LEFT}) / %(per_second)s
RETURNING allowed, tokens
"""
PURGE = "DELETE FROM rate_limit WHERE full_at < extract(epoch FROM clock_timestamp())"


class PostgresRateLimiter:
    """Token buckets in the ``rate_limit`` table of ``engine``'s database (PostgreSQL, psycopg 3); thread-safe.

    Raises ``StoreUnavailable`` when the database cannot count (unreachable, the table missing...)."""

    name = "PostgreSQL"

    def __init__(self, engine: Engine, *, purge_interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self.purge_interval = purge_interval
        self._clock = clock
        self._next_purge = 0.0  # the first take of a process purges
        self._lock = threading.Lock()

    def take(self, key: str, rate: Rate) -> float:
        if not rate.enabled:
            return 0.0
        params = {"key": key, "capacity": float(max(1, rate.burst)), "per_second": rate.per_second}
        purge = self._purge_due()

        def work(db: psycopg.Connection[Any]) -> Any:
            if purge:
                db.execute(PURGE)
            return db.execute(TAKE, params).fetchone()

        allowed, tokens = self._run(work)
        return 0.0 if allowed else max(1e-6, (1.0 - float(tokens)) / rate.per_second)

    def purge(self) -> int:
        """Delete the rows of full buckets (the same as no row); the number deleted."""
        return int(self._run(lambda db: db.execute(PURGE).rowcount))

    def _run(self, work: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        """``work`` on a pooled connection of the engine, in autocommit mode, never in a request's transaction.

        The driver's connection is used directly: through SQLAlchemy, switching a connection to autocommit and
        back costs round trips of its own, several times the statement (bench/ratelimit.py)."""
        try:
            pooled = self._engine.raw_connection()  # the pool raises the driver's own errors
        except (SQLAlchemyError, psycopg.Error) as exc:
            raise StoreUnavailable(_reason(exc)) from None
        try:
            db: psycopg.Connection[Any] = pooled.driver_connection  # type: ignore[assignment]
            db.autocommit = True
            try:
                return work(db)
            finally:
                if not db.broken:
                    db.autocommit = False  # as the pool lends it
        except psycopg.Error as exc:
            if isinstance(exc, psycopg.OperationalError):
                pooled.invalidate()  # a broken connection must not go back to the pool
            raise StoreUnavailable(_reason(exc)) from None
        finally:
            pooled.close()

    def _purge_due(self) -> bool:
        with self._lock:
            now = self._clock()
            if now < self._next_purge:
                return False
            self._next_purge = now + self.purge_interval
            return True


def _reason(exc: Exception) -> str:
    """The driver's first line (no statement, no parameters: the key is an address or an actor)."""
    cause = getattr(exc, "orig", None) or exc
    first = (str(cause).strip().splitlines() or [""])[0]
    return f"{type(cause).__name__}: {first}"[:300]
