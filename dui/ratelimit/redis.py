"""Rate limits counted in Redis (``DUI_REDIS_URL``), through the ``limits`` library: one count per key for every
process and server that names the same Redis.

``limits`` has no token bucket; its moving window is the closest exact strategy. A bucket of ``burst`` at once
and ``per_minute`` on average becomes a window of ``burst`` requests in any ``60 * burst / per_minute`` seconds
(``window``): the same burst, the same average for a steady client, and never more than the bucket allows in
any interval. The difference: after a burst, the bucket lets one request through every ``60 / per_minute``
seconds, the window none until the burst's first request has left it (the auth defaults, 30 a minute and 10 at
once: a 20-second window, so ``Retry-After`` says up to 20 s where the bucket would say 2). The window is rounded
up to whole seconds (a little stricter), and is at least one second.

Each hit is one Lua script run on Redis (``limits``' ``acquire_moving_window``), atomic whatever the
interleaving of clients; a refusal costs a second script for the time the window frees a place. A key is a list
of up to ``burst`` timestamps and expires with its window, so Redis purges itself. Timestamps are the client's
clock: servers sharing a Redis must keep their clocks synchronised (NTP). Keys are ``dui:LIMITER/<key>/...``.

Every Redis call fails fast (a one-second timeout, one retry on a broken connection); a failure raises
``StoreUnavailable``, whose message never holds the URL (it may carry a password).
"""

from __future__ import annotations

import math
import threading
import time

from limits import RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter
from redis import ConnectionPool
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from dui.ratelimit import Rate, StoreUnavailable

PREFIX = "dui"


def window(rate: Rate) -> tuple[int, int]:
    """The moving window that stands for ``rate``'s bucket: (requests, seconds)."""
    burst = max(1, rate.burst)
    seconds = max(1, math.ceil(60 * burst / rate.per_minute))
    return max(burst, math.floor(rate.per_minute * seconds / 60)), seconds


class RedisRateLimiter:
    """Moving windows in Redis; thread-safe (a connection pool per process)."""

    name = "Redis"

    def __init__(self, url: str, *, timeout: float = 1.0) -> None:
        pool = ConnectionPool.from_url(url.replace("redis+unix://", "unix://", 1), socket_timeout=timeout,
                                       socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 1))
        self._storage = RedisStorage(url, connection_pool=pool, key_prefix=PREFIX)
        self._strategy = MovingWindowRateLimiter(self._storage)
        self._items: dict[Rate, RateLimitItemPerSecond] = {}
        self._lock = threading.Lock()

    def take(self, key: str, rate: Rate) -> float:
        if not rate.enabled:
            return 0.0
        item = self._item(rate)
        try:
            if self._strategy.hit(item, key):
                return 0.0
            stats = self._strategy.get_window_stats(item, key)
        except (RedisError, StorageError) as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            raise StoreUnavailable(f"{type(exc).__name__}: {first}"[:300]) from None
        if stats.remaining > 0:  # the window moved between the two calls: a place is free now
            return 1e-3
        return max(1e-3, stats.reset_time - time.time())

    def _item(self, rate: Rate) -> RateLimitItemPerSecond:
        with self._lock:
            item = self._items.get(rate)
            if item is None:
                amount, seconds = window(rate)
                item = self._items[rate] = RateLimitItemPerSecond(amount, seconds)
            return item
