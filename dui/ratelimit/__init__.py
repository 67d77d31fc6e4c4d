"""Rate limits: a token bucket per key (docs/security.md, "Hardening").

A bucket holds at most ``burst`` tokens and gains ``per_minute / 60`` tokens a second; each request
takes one, and a request that finds less than one is refused with the seconds until one is there.
The web edge chooses the keys (the actor, or the remote address) and says what a refusal looks like;
this package knows neither Flask nor who the keys are.

``RateLimiter`` is the interface, one method. Three stores fit it; ``limiter_for`` picks one from the settings:

- ``DUI_REDIS_URL`` set: Redis (``dui.ratelimit.redis``), one count per key for every process and server
  that names it, through the ``limits`` library (a moving window that stands for the bucket);
- otherwise on PostgreSQL: the database (``dui.ratelimit.postgres``), one atomic statement per request on an
  UNLOGGED table, one count per key for every process and server on the database;
- otherwise (SQLite): ``InProcessRateLimiter``, this process's memory, so each gunicorn worker counts on its own.

A shared store is wrapped in ``SharedRateLimiter``: when it cannot be reached, requests are counted in the
process's memory instead (neither all let through nor all refused), one log line says so, and the store is
tried again every few seconds.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from dui.settings import Settings

logger = logging.getLogger("dui.ratelimit")


@dataclass(frozen=True)
class Rate:
    """``per_minute`` requests a minute on average, ``burst`` at once; 0 per minute means no limit."""

    per_minute: int
    burst: int

    @property
    def enabled(self) -> bool:
        return self.per_minute > 0

    @property
    def per_second(self) -> float:
        return self.per_minute / 60.0


class RateLimiter(Protocol):
    def take(self, key: str, rate: Rate) -> float:
        """Take one request from ``key``'s bucket: 0.0 when it is allowed, otherwise the seconds until one
        would be (the request is then refused and takes nothing)."""
        ...


class SharedStore(RateLimiter, Protocol):
    """A store shared by processes: its ``take`` raises ``StoreUnavailable`` when it cannot count."""

    name: str  # for log lines: "PostgreSQL", "Redis"


class StoreUnavailable(Exception):
    """A shared store could not count this request. The message is one line, without secrets (no URL, no
    password) and without the key."""


def retry_after(seconds: float) -> str:
    """The ``Retry-After`` value (whole seconds, at least 1) for a refusal."""
    return str(max(1, math.ceil(seconds)))


class InProcessRateLimiter:
    """Token buckets in this process's memory; thread-safe. Each process (each gunicorn worker) counts on its own.

    At most ``max_keys`` buckets are kept: past that, the least recently used are dropped, which gives
    their keys a full bucket again (a flood from more addresses than that is the proxy's or the
    firewall's to stop)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_keys: int = 50_000) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, key: str, rate: Rate) -> float:
        if not rate.enabled:
            return 0.0
        capacity = float(max(1, rate.burst))
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.pop(key, (capacity, now))
            tokens = min(capacity, tokens + max(0.0, now - at) * rate.per_second)
            wait = 0.0
            if tokens >= 1.0:
                tokens -= 1.0
            else:
                wait = (1.0 - tokens) / rate.per_second
            self._buckets[key] = (tokens, now)  # most recently used last
            while len(self._buckets) > self._max_keys:
                self._buckets.popitem(last=False)
            return wait

    def __len__(self) -> int:
        return len(self._buckets)


class SharedRateLimiter:
    """A shared store, and this process's memory while the store cannot be reached.

    The service never stops for its limiter, and neither lets every request through nor refuses them all
    during an outage: requests are counted by each process on its own, as on SQLite (the buckets start full).
    The first failure logs a ``WARNING`` (``rate limiter unavailable``, the store and the reason), then at most
    one line per ``report_interval`` while it lasts, with the requests counted in the process meanwhile; the
    recovery logs ``rate limiter available again``. While the store is out, one request every
    ``retry_interval`` seconds tries it again; the others do not wait on it."""

    def __init__(self, store: SharedStore, *, fallback: RateLimiter | None = None, retry_interval: float = 5.0,
                 report_interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.fallback: RateLimiter = fallback or InProcessRateLimiter()
        self.retry_interval = retry_interval
        self.report_interval = report_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._next_try = 0.0
        self._next_report = 0.0
        self._counted_here = 0  # requests counted in this process since the last line

    @property
    def name(self) -> str:
        return self.store.name

    def take(self, key: str, rate: Rate) -> float:
        if not rate.enabled:
            return 0.0
        if self._down_since is not None and not self._may_try():
            return self._take_here(key, rate)
        try:
            wait = self.store.take(key, rate)
        except StoreUnavailable as exc:
            self._failed(str(exc))
            return self._take_here(key, rate)
        if self._down_since is not None:
            self._recovered()
        return wait

    def _may_try(self) -> bool:
        """Whether this request tries the store again (one every ``retry_interval``)."""
        with self._lock:
            now = self._clock()
            if now < self._next_try:
                return False
            self._next_try = now + self.retry_interval
            return True

    def _take_here(self, key: str, rate: Rate) -> float:
        with self._lock:
            self._counted_here += 1
        return self.fallback.take(key, rate)

    def _failed(self, reason: str) -> None:
        with self._lock:
            now = self._clock()
            self._next_try = now + self.retry_interval
            if self._down_since is None:
                self._down_since = now
                self._next_report = now + self.report_interval
                self._counted_here = 0
                logger.warning("rate limiter unavailable", extra={
                    "store": self.name, "reason": reason,
                    "meanwhile": "requests are counted by each process on its own"})
            elif now >= self._next_report:
                self._next_report = now + self.report_interval
                logger.warning("rate limiter still unavailable", extra={
                    "store": self.name, "reason": reason, "since_s": round(now - self._down_since),
                    "counted_here": self._counted_here})
                self._counted_here = 0

    def _recovered(self) -> None:
        with self._lock:
            if self._down_since is None:
                return
            now = self._clock()
            logger.warning("rate limiter available again", extra={
                "store": self.name, "after_s": round(now - self._down_since, 1), "counted_here": self._counted_here})
            self._down_since = None
            self._counted_here = 0


def limiter_for(settings: Settings, engine: Engine) -> RateLimiter:
    """The limiter the settings call for: Redis when ``DUI_REDIS_URL`` is set, else the database on PostgreSQL,
    else this process's memory (SQLite)."""
    if settings.redis_url:
        from dui.ratelimit.redis import RedisRateLimiter

        return SharedRateLimiter(RedisRateLimiter(settings.redis_url))
    if engine.dialect.name == "postgresql":
        from dui.ratelimit.postgres import PostgresRateLimiter

        return SharedRateLimiter(PostgresRateLimiter(engine))
    return InProcessRateLimiter()
