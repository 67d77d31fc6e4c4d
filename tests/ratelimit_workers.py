"""The rate-limit concurrency tests: threads taking from one limiter at once, and what each process runs (imported
by ``spawn``ed processes: keep it light).

Every process builds its own limiter, as each gunicorn worker does, connects, waits on a barrier until all are
ready so that they take at once, and reports how many requests it was allowed."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

from dui.ratelimit import InProcessRateLimiter, Rate, RateLimiter


@dataclass(frozen=True)
class Job:
    backend: str  # memory, postgresql or redis
    target: str  # the database or Redis URL ("" for memory)
    key: str
    rate: Rate
    takes: int


def limiter(backend: str, target: str) -> RateLimiter:
    if backend == "memory":
        return InProcessRateLimiter()
    if backend == "postgresql":
        from dui.db import make_engine
        from dui.ratelimit.postgres import PostgresRateLimiter

        return PostgresRateLimiter(make_engine(target))
    from dui.ratelimit.redis import RedisRateLimiter

    return RedisRateLimiter(target)


def _allowed(job: Job, barrier: Any, results: Any) -> None:
    buckets = limiter(job.backend, job.target)
    buckets.take("warm-up", job.rate)  # connect before the start
    barrier.wait(timeout=60)
    results.put(sum(1 for _ in range(job.takes) if buckets.take(job.key, job.rate) == 0.0))


def allowed_in_processes(jobs: list[Job]) -> list[int]:
    """Run each job in a process of its own (spawned, as gunicorn's workers are separate); the counts allowed."""
    context = get_context("spawn")
    barrier, results = context.Barrier(len(jobs)), context.Queue()
    processes = [context.Process(target=_allowed, args=(job, barrier, results)) for job in jobs]
    for process in processes:
        process.start()
    counts = [results.get(timeout=120) for _ in jobs]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0, process.exitcode
    return sorted(counts)


def allowed_in_threads(limiter: RateLimiter, rate: Rate, threads: int = 20, each: int = 10) -> list[bool]:
    """``threads`` threads released at once, each taking ``each`` times from one key: whether each take was allowed."""
    results: list[bool] = []
    barrier = threading.Barrier(threads)

    def worker() -> None:
        barrier.wait()
        for _ in range(each):
            results.append(limiter.take("same", rate) == 0.0)

    started = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join()
    return results
