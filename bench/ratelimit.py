"""Cost of the rate limiters: memory (each process), PostgreSQL (the database's UNLOGGED table) and Redis (``limits``).

    python bench/ratelimit.py [--seconds 2] [--threads 8] [--rounds 50]

Starts its own ``redis-server`` (on a free port, no persistence) and works in a PostgreSQL schema of its own on
``BENCH_PG_ADMIN`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``), migrated, dropped at the end.
Three measures, each limiter built as the service builds it (``dui.ratelimit.limiter_for``), each printed with its
ratio to the memory limiter:

1. one ``take`` in one thread: an allowed request (keys spread over 1,000 addresses) and a refused one (one key
   past its limit), microseconds per call (best of 5 runs);
2. 8 threads taking at once, from 1,000 keys and from one hot key (a client whose requests all land at once):
   takes per second;
3. requests through the Flask test client, one thread, on ``GET /fhir/Patient/{id}`` (a read of a stored
   resident, which goes through authentication, the limit, authorization, the read and an audit entry), on the
   PostgreSQL database, with the limit counted in memory, in PostgreSQL and in Redis, and with no limit at all:
   rounds of 40 requests with each, back to back, and the median of each one's ratio to the memory batch of its
   round (on a shared machine the load swings within seconds; ``BENCH_VERBOSE=1`` prints every batch).

The database and Redis run on the same host as the benchmark: a round trip over the loopback. Over a network,
add its round trip to each figure of PostgreSQL and Redis.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PG_ADMIN = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
LIMITERS = ("memory", "PostgreSQL", "Redis")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis(folder: Path) -> tuple[str, subprocess.Popen[bytes]]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = _free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                                "no", "--dir", str(folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return f"redis://127.0.0.1:{port}/0", process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("redis-server did not start")


def _schema() -> tuple[str, Callable[[], None]]:
    from sqlalchemy import text

    from dui import migrations
    from dui.db import make_engine, normalize_url

    schema = f"bench_limits_{uuid.uuid4().hex[:8]}"
    admin = make_engine(PG_ADMIN)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = normalize_url(PG_ADMIN) + f"?options={quote(f'-csearch_path={schema}')}"
    migrations.upgrade(url)

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    return url, drop


def _per_call(fn: Callable[[], Any], seconds: float) -> float:
    """Microseconds per call: best of 5 runs of about ``seconds`` / 5 each."""
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < 0.1:
        fn()
        count += 1
    per_run = max(1, int(count * seconds / 5 / 0.1))
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(per_run):
            fn()
        runs.append((time.perf_counter() - t0) / per_run)
    return min(runs) * 1e6


def _threaded(fn: Callable[[int], Any], threads: int, seconds: float) -> float:
    """Calls per second, ``threads`` threads calling ``fn(thread index)`` for ``seconds``."""
    stop = time.perf_counter() + seconds
    counts = [0] * threads
    barrier = threading.Barrier(threads)

    def run(index: int) -> None:
        barrier.wait()
        n = 0
        while time.perf_counter() < stop:
            fn(index)
            n += 1
        counts[index] = n

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    started = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / (time.perf_counter() - started)


def _row(name: str, values: dict[str, float], unit: str, lower_is_better: bool) -> str:
    base = values["memory"]
    cells = []
    for limiter in LIMITERS:
        value = values[limiter]
        ratio = value / base if lower_is_better else base / value
        cells.append(f"{value:,.1f} {unit}" + ("" if limiter == "memory" else f" ({ratio:.1f}x)"))
    return f"| {name} | " + " | ".join(cells) + " |"


def takes(redis_url: str, database_url: str, seconds: float, threads: int) -> None:
    from dui.db import make_engine
    from dui.ratelimit import Rate, limiter_for
    from dui.settings import Settings

    engine = make_engine(database_url, 30, hide_parameters=True)
    built = {
        "memory": limiter_for(Settings(database_url="sqlite://"), make_engine("sqlite://")),
        "PostgreSQL": limiter_for(Settings(database_url=database_url), engine),
        "Redis": limiter_for(Settings(redis_url=redis_url), engine),
    }
    wide = Rate(per_minute=10**9, burst=10**6)  # never refused
    low = Rate(per_minute=1, burst=1)  # refused from the second take on
    one, refused, spread, hot = {}, {}, {}, {}
    for name, limiter in built.items():
        counter = iter(range(10**12))
        one[name] = _per_call(lambda lim=limiter, c=counter: lim.take(f"addr:10.0.{next(c) % 1000}", wide), seconds)
        limiter.take("refused", low)
        refused[name] = _per_call(lambda lim=limiter: lim.take("refused", low), seconds)
        spread[name] = _threaded(lambda i, lim=limiter: lim.take(f"addr:10.1.{i}.{time.perf_counter_ns() % 125}",
                                                                 wide), threads, seconds)
        hot[name] = _threaded(lambda i, lim=limiter: lim.take("client:hot", wide), threads, seconds)
    print("| one thread, µs per take (x memory) | " + " | ".join(LIMITERS) + " |")
    print("|---|---:|---:|---:|")
    print(_row("allowed (1,000 keys)", one, "µs", True))
    print(_row("refused (one key past its limit)", refused, "µs", True))
    print()
    print(f"| {threads} threads, takes per second (memory / x) | " + " | ".join(LIMITERS) + " |")
    print("|---|---:|---:|---:|")
    print(_row("1,000 keys", spread, "/s", False))
    print(_row("one hot key", hot, "/s", False))
    print()
    engine.dispose()


def requests(redis_url: str, database_url: str, rounds: int) -> None:
    from bench import data
    from dui.app import create_app
    from dui.ratelimit import limiter_for
    from dui.settings import RateLimits, Settings

    logging.getLogger("dui").setLevel(logging.ERROR)  # the demo records' profile warnings, the access log
    limits = RateLimits(per_minute=10**9, burst=10**6, auth_per_minute=10**9, auth_burst=10**6)
    workdir = Path(tempfile.mkdtemp(prefix="bench-ratelimit-"))
    settings = Settings(database_url=database_url, rate=limits, log_level="WARNING",
                        encryption=_encryption(workdir))
    app = create_app(settings)
    client = app.test_client()
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    bundle = next(data.resident_bundles(0, 1))
    assert client.post("/fhir", data=json.dumps(bundle), headers=headers).status_code == 200
    path = f"/fhir/Patient/{data.resident_id(0)}"
    svc = app.extensions["dui"]
    names = (*LIMITERS, "no limit")
    limiters: dict[str, Any] = {
        "memory": limiter_for(Settings(database_url="sqlite://"), _sqlite_engine()),
        "PostgreSQL": limiter_for(Settings(database_url=database_url), svc.engine),
        "Redis": limiter_for(Settings(database_url=database_url, redis_url=redis_url), svc.engine),
        "no limit": _NoLimit(),
    }

    def read() -> None:
        answer = client.get(path, headers=headers, environ_base={"REMOTE_ADDR": "203.0.113.7"})
        assert answer.status_code == 200

    batch = 40  # requests per batch; a round is one batch per limiter, back to back, in a rotated order
    times: dict[str, list[float]] = {name: [] for name in names}
    try:
        for name in names:  # warm up: connections, prepared statements, caches
            app.extensions["dui.ratelimit"] = limiters[name]
            for _ in range(batch):
                read()
        for r in range(rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                app.extensions["dui.ratelimit"] = limiters[name]
                t0 = time.perf_counter()
                for _ in range(batch):
                    read()
                times[name].append((time.perf_counter() - t0) / batch)
    finally:
        svc.dispose()
        shutil.rmtree(workdir, ignore_errors=True)
    # The load of a shared machine swings by a factor of 3 within seconds: each limiter is compared with the memory
    # batch of the same round, and the median of those ratios is kept.
    ratio = {name: statistics.median(m / t for m, t in zip(times["memory"], times[name], strict=True))
             for name in names}
    memory_us = statistics.median(times["memory"]) * 1e6
    if os.environ.get("BENCH_VERBOSE"):
        print({name: [round(t * 1e6) for t in values] for name, values in times.items()})
    print(f"| GET /fhir/Patient/{{id}}, one thread, {rounds} rounds of {batch} requests each | "
          + " | ".join(names) + " |")
    print("|---|---:|---:|---:|---:|")
    cells = [f"{memory_us:,.0f} µs" if n == "memory" else f"{ratio[n]:.2f}x" for n in names]
    print("| time per request (memory), requests per second against memory (median of the rounds' ratios) | "
          + " | ".join(cells) + " |")
    for name in ("PostgreSQL", "Redis"):
        added = statistics.median(t - m for m, t in zip(times["memory"], times[name], strict=True)) * 1e6
        print(f"{name}: {added:+.0f} µs per request against memory (median of the rounds' differences)")


class _NoLimit:
    def take(self, key: str, rate: Any) -> float:
        return 0.0


def _sqlite_engine() -> Any:
    from dui.db import make_engine

    return make_engine("sqlite://")


def _encryption(workdir: Path) -> Any:
    from dui.crypto.master import KEY_BYTES, write_key_file
    from dui.settings import EncryptionSettings

    key = workdir / "master.key"
    write_key_file(key, os.urandom(KEY_BYTES))
    return EncryptionSettings(master_key_file=str(key))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measure")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=50, help="rounds of the request measure")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-redis-"))
    redis_url, redis = _redis(folder)
    database_url, drop = _schema()
    try:
        takes(redis_url, database_url, args.seconds, args.threads)
        requests(redis_url, database_url, args.rounds)
    finally:
        drop()
        redis.terminate()
        redis.wait()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
