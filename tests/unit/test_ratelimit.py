"""Token buckets in memory (dui.ratelimit) and the log throttle of refusals (dui.web.throttle.Reports), on a fake
clock; the shared stores have their own files (test_ratelimit_postgresql.py, test_ratelimit_redis.py)."""

from __future__ import annotations

import pytest

from dui.ratelimit import InProcessRateLimiter, Rate, retry_after
from dui.web.throttle import Reports
from tests.ratelimit_workers import Job, allowed_in_processes, allowed_in_threads


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_the_refill_rate() -> None:
    clock = Clock()
    limiter = InProcessRateLimiter(clock)
    rate = Rate(per_minute=60, burst=3)  # one a second, three at once
    assert [limiter.take("a", rate) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a", rate) == pytest.approx(1.0)
    clock.now += 0.5
    assert limiter.take("a", rate) == pytest.approx(0.5)  # a refusal takes nothing
    clock.now += 0.5
    assert limiter.take("a", rate) == 0.0
    assert limiter.take("a", rate) == pytest.approx(1.0)
    clock.now += 3600  # idle for an hour: the bucket is full again, not fuller
    assert [limiter.take("a", rate) for _ in range(4)][-1] == pytest.approx(1.0)


def test_keys_have_their_own_buckets() -> None:
    limiter = InProcessRateLimiter(Clock())
    rate = Rate(per_minute=6, burst=1)
    assert limiter.take("client:a", rate) == 0.0
    assert limiter.take("client:a", rate) == pytest.approx(10.0)
    assert limiter.take("client:b", rate) == 0.0
    assert limiter.take("addr:10.0.0.1", rate) == 0.0


def test_zero_per_minute_is_no_limit() -> None:
    limiter = InProcessRateLimiter(Clock())
    assert all(limiter.take("a", Rate(0, 0)) == 0.0 for _ in range(10_000))
    assert len(limiter) == 0  # nothing kept


def test_at_most_max_keys_buckets_least_recently_used_dropped() -> None:
    limiter = InProcessRateLimiter(Clock(), max_keys=100)
    rate = Rate(per_minute=1, burst=1)
    assert limiter.take("kept", rate) == 0.0
    for i in range(1000):
        limiter.take(f"addr:{i}", rate)
        if i % 50 == 0:
            assert limiter.take("kept", rate) > 0  # used recently: still there, still empty
    assert len(limiter) == 100


def test_concurrent_takes_never_exceed_the_burst() -> None:
    limiter = InProcessRateLimiter(Clock())
    rate = Rate(per_minute=1, burst=50)
    allowed = allowed_in_threads(limiter, rate)
    assert allowed.count(True) == 50


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert retry_after(0.01) == "1"
    assert retry_after(1.0) == "1"
    assert retry_after(1.2) == "2"
    assert retry_after(59.5) == "60"


def test_refusals_are_reported_once_a_minute_with_their_count() -> None:
    clock = Clock()
    reports = Reports(clock, interval=60)
    assert reports.due("k") == 1  # the first refusal is logged
    assert [reports.due("k") for _ in range(5)] == [0] * 5
    assert reports.due("other") == 1
    clock.now += 61
    assert reports.due("k") == 6  # the five silent ones and this one
    assert reports.due("k") == 0


def test_each_process_counts_on_its_own() -> None:
    """The memory limiter's limit, kept on SQLite without DUI_REDIS_URL: four processes (as four gunicorn
    workers) each allow the whole burst, four times the limit in all (docs/security.md, "Rate limits")."""
    rate = Rate(per_minute=1, burst=10)
    assert allowed_in_processes([Job("memory", "", "same", rate, 30) for _ in range(4)]) == [10, 10, 10, 10]
