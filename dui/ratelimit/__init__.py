"""Rate limits: a token bucket per key (docs/security.md, "Hardening").

A bucket holds at most ``burst`` tokens and gains ``per_minute / 60`` tokens a second; each request
takes one, and a request that finds less than one is refused with the seconds until one is there.
The web edge chooses the keys (the actor, or the remote address) and says what a refusal looks like;
this module knows neither Flask nor who the keys are.

``RateLimiter`` is the interface. ``InProcessRateLimiter`` keeps its buckets in the process, so each
server process (each gunicorn worker) counts on its own. A limiter backed by a shared store (Redis,
the database) would give one count per key across workers and servers, at the price of a round trip per
request; it fits the same one method.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


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


def retry_after(seconds: float) -> str:
    """The ``Retry-After`` value (whole seconds, at least 1) for a refusal."""
    return str(max(1, math.ceil(seconds)))


class InProcessRateLimiter:
    """Token buckets in this process's memory; thread-safe.

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
