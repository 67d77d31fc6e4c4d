"""The Redis rate limiter (dui.ratelimit.redis): the ``limits`` library's moving window, counted in a real
redis-server shared by every thread, process and server that names it (``DUI_REDIS_URL``).

A token bucket of ``per_minute`` and ``burst`` is approximated by a moving window of ``burst`` requests per
``60 * burst / per_minute`` seconds (docs/security.md, "Rate limits"): the same burst and the same average,
never more than the bucket allows.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import redis

from dui.ratelimit import Rate, SharedRateLimiter
from dui.ratelimit.redis import RedisRateLimiter, window
from tests.ratelimit_workers import Job, allowed_in_processes, allowed_in_threads
from tests.redisserver import RedisServer


def test_the_window_that_stands_for_a_bucket() -> None:
    assert window(Rate(per_minute=1200, burst=200)) == (200, 10)  # DUI_RATE_LIMIT defaults
    assert window(Rate(per_minute=30, burst=10)) == (10, 20)  # DUI_AUTH_RATE_LIMIT defaults
    assert window(Rate(per_minute=1, burst=3)) == (3, 180)
    assert window(Rate(per_minute=7, burst=2)) == (2, 18)  # rounded up to whole seconds: never more than asked
    assert window(Rate(per_minute=6000, burst=1)) == (100, 1)  # at least a second: a second's worth at once


def test_a_burst_then_nothing_until_the_window_moves(redis_url: str) -> None:
    limiter = RedisRateLimiter(redis_url)
    rate = Rate(per_minute=60, burst=3)  # three every three seconds
    assert [limiter.take("a", rate) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("a", rate)
    assert 2.5 < wait <= 3.0
    assert 0.0 < limiter.take("a", rate) <= wait  # a refusal takes nothing
    time.sleep(wait + 0.05)
    assert [limiter.take("a", rate) == 0.0 for _ in range(4)] == [True, True, True, False]


def test_keys_have_their_own_counts_which_expire(redis_url: str) -> None:
    limiter = RedisRateLimiter(redis_url)
    rate = Rate(per_minute=6, burst=1)
    assert limiter.take("client:a", rate) == 0.0
    assert 9.5 < limiter.take("client:a", rate) <= 10.0
    assert limiter.take("client:b", rate) == 0.0
    assert limiter.take("addr:10.0.0.1", rate) == 0.0
    client = redis.Redis.from_url(redis_url)
    keys = sorted(k.decode() for k in client.keys("*"))
    assert len(keys) == 3 and all(k.startswith("dui:") for k in keys), keys  # one prefix for the service's keys
    assert all(0 < client.ttl(k) <= 10 for k in keys)  # gone once the window has passed: Redis purges itself
    client.close()


def test_zero_per_minute_is_no_limit_and_writes_nothing(redis_url: str) -> None:
    limiter = RedisRateLimiter(redis_url)
    assert all(limiter.take("a", Rate(0, 0)) == 0.0 for _ in range(100))
    client = redis.Redis.from_url(redis_url)
    assert client.dbsize() == 0
    client.close()


def test_threads_never_exceed_the_burst(redis_url: str) -> None:
    limiter = RedisRateLimiter(redis_url)
    rate = Rate(per_minute=1, burst=50)
    results = allowed_in_threads(limiter, rate)
    assert len(results) == 200 and results.count(True) == 50


def test_processes_share_one_count(redis_url: str) -> None:
    rate = Rate(per_minute=1, burst=50)
    counts = allowed_in_processes([Job("redis", redis_url, "shared", rate, 30) for _ in range(4)])
    assert sum(counts) == 50, counts  # counted alone, each process would allow its 30: 120 in all


def test_an_outage_falls_back_to_this_process_then_recovers(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """Redis stopped: the service keeps answering, each process counting on its own, with one log line (and
    one a minute at most while it lasts); Redis back: counted there again, and said so."""
    caplog.set_level(logging.INFO, logger="dui.ratelimit")
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        limiter = SharedRateLimiter(RedisRateLimiter(server.url), retry_interval=0.2)
        rate = Rate(per_minute=1, burst=3)
        assert [limiter.take("addr:203.0.113.7", rate) for _ in range(2)] == [0.0, 0.0]  # in Redis
        server.stop()
        started = time.monotonic()
        answers = [limiter.take("addr:203.0.113.7", rate) for _ in range(50)]
        assert time.monotonic() - started < 5  # no request waits on a dead Redis for long
        # Counted in this process from a full bucket: three more, then refused.
        assert answers[:3] == [0.0] * 3 and all(wait > 0 for wait in answers[3:])
        lines = [r for r in caplog.records if r.name == "dui.ratelimit"]
        assert [r.getMessage() for r in lines] == ["rate limiter unavailable"]
        assert lines[0].levelname == "WARNING" and vars(lines[0])["store"] == "Redis"
        assert "counted by each process" in vars(lines[0])["meanwhile"]
        assert "203.0.113.7" not in str(vars(lines[0]))
        server.start()
        time.sleep(0.25)
        assert limiter.take("addr:203.0.113.7", rate) == 0.0  # Redis again (restarted empty: a full bucket)
        assert [r.getMessage() for r in caplog.records if r.name == "dui.ratelimit"][-1] == \
            "rate limiter available again"
        assert server.command("DBSIZE") == ":1"
    finally:
        server.stop()


def test_the_url_is_never_in_a_log_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dui.ratelimit")
    server = RedisServer(tmp_path / "redis")  # not started: nothing listens on its port
    limiter = SharedRateLimiter(RedisRateLimiter(f"redis://:s3cret-password@127.0.0.1:{server.port}/0"))
    assert limiter.take("k", Rate(per_minute=1, burst=1)) == 0.0
    assert caplog.records and all("s3cret" not in str(vars(r)) for r in caplog.records)
