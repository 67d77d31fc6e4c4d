"""Reads from a PostgreSQL streaming replica, with read-your-writes kept for the writer (``DUI_DATABASE_READ_URL``).

The web edge asks ``ReadRouter.choose`` which database serves a read-only request (``dui.web.context.unit_of_work``,
the one place a request gets its session); everything written (resources, audit entries, outbox, rate limits,
tokens) goes to the primary whatever the answer.

Read-your-writes, across processes and hosts without a sticky load balancer (docs/scaling.md):

- after a unit of work of an actor commits on the primary, ``mark`` keeps ``pg_current_wal_lsn()`` (the WAL
  position the commit is behind) in the primary's UNLOGGED ``read_mark`` table, under the actor's key: every web
  process of every host sees it;
- a read of that actor looks the mark up on the primary (one indexed lookup: the hot path's only added query) and
  goes to the replica when the replica's replay position, as this process last saw it, is at or past the mark; else
  it asks the replica its position once more (only readers who just wrote pay that second query), and reads from
  the primary if the replica is still behind. No waiting: the primary answers at once what the replica would answer
  later.

Each process checks the replica at most every ``DUI_DATABASE_READ_CHECK_INTERVAL`` seconds (its replay position, and
the primary's WAL position to estimate the lag): a replica further behind than ``DUI_DATABASE_READ_MAX_LAG``, or that
fails its check or a read, is left alone until a check finds it well again; its reads go to the primary, counted in
``dui_database_reads`` and logged once per change of state. A client never sees an error for it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from dui.auth.actor import Actor
from dui.db import make_engine, make_session_factory, read_session, unit_of_work
from dui.settings import ReadReplicaSettings

logger = logging.getLogger("dui.replica")
REPLICA, PRIMARY = "replica", "primary"
CONNECT_TIMEOUT = 3  # seconds: a replica host that does not answer must not hold a request for long
_MARK = text("INSERT INTO read_mark (actor, lsn, marked) VALUES (:actor, pg_current_wal_lsn() - '0/0', now()) "
             "ON CONFLICT (actor) DO UPDATE SET lsn = GREATEST(read_mark.lsn, EXCLUDED.lsn), marked = EXCLUDED.marked")
_MARK_OF = text("SELECT lsn FROM read_mark WHERE actor = :actor")
_PRIMARY_POSITION = text("SELECT pg_current_wal_lsn() - '0/0'")
_REPLICA_POSITION = text("SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn() - '0/0'")


@dataclass(frozen=True)
class ReplicaState:
    """What this process last learned of the replica."""

    usable: bool
    reason: str  # replica, lagging, unreachable
    replay: int  # its replay position, in bytes of WAL
    checked: float  # time.monotonic() of the check


def actor_key(actor: Actor) -> str:
    return f"{actor.kind}:{actor.id}"[:200]


class ReadRouter:
    """Which database serves a read, for one process (thread-safe)."""

    def __init__(self, settings: ReadReplicaSettings, primary: sessionmaker[Session], statement_timeout: float = 0,
                 monotonic: Callable[[], float] = time.monotonic, replica_engine: Engine | None = None) -> None:
        assert settings.url, "ReadRouter needs DUI_DATABASE_READ_URL"
        self.settings = settings
        self.primary = primary
        self.engine = replica_engine or make_engine(settings.url, statement_timeout, hide_parameters=True,
                                                    connect_args={"connect_timeout": CONNECT_TIMEOUT})
        self.replica: sessionmaker[Session] = make_session_factory(self.engine)
        self.monotonic = monotonic
        self._checking = threading.Lock()
        self._state = ReplicaState(False, "unreachable", 0, float("-inf"))
        self._samples: deque[tuple[float, int]] = deque()  # (when, the primary's WAL position) of recent checks

    def choose(self, actor: Actor) -> tuple[str, str]:
        """(``replica`` or ``primary``, why) for a read of ``actor``."""
        state = self.state()
        if not state.usable:
            return PRIMARY, state.reason
        mark = self.mark_of(actor)
        if mark is None or mark <= state.replay:
            return REPLICA, REPLICA
        replay = self._replay_now()
        if replay is not None and replay >= mark:
            return REPLICA, REPLICA
        return PRIMARY, "writer"

    def session(self, target: str) -> Session:
        """A read-only unit's session (``dui.db.read_session``) on ``target``."""
        session = read_session(self.replica if target == REPLICA else self.primary)
        session.info[REPLICA] = target == REPLICA
        return session

    def mark(self, actor: Actor) -> None:
        """After ``actor``'s unit of work committed on the primary: its reads wait for the replica to get this far.
        A failure is logged, never raised: the write is done, only the freshness of the actor's next reads is at
        stake."""
        try:
            with unit_of_work(self.primary, write=False) as session:
                session.execute(_MARK, {"actor": actor_key(actor)})
        except Exception as exc:
            logger.warning("read mark not recorded: %s", type(exc).__name__)

    def mark_of(self, actor: Actor) -> int | None:
        with unit_of_work(self.primary, write=False) as session:
            lsn = session.execute(_MARK_OF, {"actor": actor_key(actor)}).scalar()
        return None if lsn is None else int(lsn)

    def failed(self, exc: BaseException) -> None:
        """A read on the replica failed: the replica is left alone until a check finds it well again."""
        self._set(ReplicaState(False, "unreachable", self._state.replay, self.monotonic()),
                  f"a read failed ({type(exc).__name__})")

    def state(self) -> ReplicaState:
        """The replica's state, checked again when older than the check interval (by one thread at a time: the
        others go on with the state they have)."""
        state = self._state
        if self.monotonic() - state.checked >= self.settings.check_interval and self._checking.acquire(blocking=False):
            try:
                state = self._check()
            finally:
                self._checking.release()
        return state

    def _check(self) -> ReplicaState:
        now = self.monotonic()
        try:
            with unit_of_work(self.primary, write=False) as session:
                primary = int(session.execute(_PRIMARY_POSITION).scalar_one())
            with unit_of_work(self.replica, write=False) as session:
                recovering, replay = session.execute(_REPLICA_POSITION).one()
        except Exception as exc:
            return self._set(ReplicaState(False, "unreachable", self._state.replay, now),
                             f"unreachable ({type(exc).__name__})")
        if not recovering or replay is None:
            return self._set(ReplicaState(False, "unreachable", 0, now),
                             "not a standby (pg_is_in_recovery() is false): DUI_DATABASE_READ_URL must name a replica")
        replay = int(replay)
        samples = self._samples
        samples.append((now, primary))
        horizon = now - self.settings.max_lag - 2 * self.settings.check_interval
        while len(samples) > 1 and samples[1][0] < horizon:  # one older than the bound stays: it tells the lag
            samples.popleft()
        # Behind by at least the age of the oldest primary position it has not replayed yet (0 when caught up)
        lag = next((now - when for when, position in samples if position > replay), 0.0)
        if lag > self.settings.max_lag:
            return self._set(ReplicaState(False, "lagging", replay, now), f"lagging by {lag:.0f} s or more")
        return self._set(ReplicaState(True, REPLICA, replay, now), "caught up")

    def _replay_now(self) -> int | None:
        try:
            with unit_of_work(self.replica, write=False) as session:
                replay = session.execute(_REPLICA_POSITION).one()[1]
        except Exception as exc:
            self.failed(exc)
            return None
        if replay is None:
            return None
        state = self._state
        if int(replay) > state.replay:
            self._state = ReplicaState(state.usable, state.reason, int(replay), state.checked)
        return int(replay)

    def _set(self, state: ReplicaState, why: str) -> ReplicaState:
        before = self._state
        self._state = state
        if before.usable != state.usable or (not state.usable and before.reason != state.reason):
            if state.usable:
                logger.info("read replica in use again: %s", why)
            else:
                logger.warning("read replica left alone, reads go to the primary: %s", why)
        return state

    def dispose(self) -> None:
        self.engine.dispose()
