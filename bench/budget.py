"""Cost of the per-request budget (``dui.web.budget``): arming and disarming the watchdog, against no budget.

    python bench/budget.py [--rounds 40] [--reads 250]

1. ``run``: microseconds per ``budget.run(20, fn)`` around an empty function, against calling ``fn`` directly
   (``DUI_REQUEST_BUDGET=0`` takes that path), on one thread and on 8 threads at once (the watchdog's lock shared by
   a gthread worker's threads).
2. ``api``: reads by id through the Flask test client, single-threaded, in one process, on a fresh SQLite
   database; one app with ``DUI_REQUEST_BUDGET=20``, one with 0 (no budget), in alternating rounds (which
   goes first alternates too), so that the load of a shared machine falls on both alike. Everything else
   (parameter count, in-flight registry) is the same in both.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dui.web import budget


def _noop() -> None:
    return None


def per_call(fn: Callable[[], Any], calls: int = 200_000) -> float:
    """Microseconds per call, best of 5."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - started) / calls * 1e6)
    return best


def threaded(fn: Callable[[], Any], threads: int = 8, calls: int = 50_000) -> float:
    """Microseconds per call, wall clock over ``threads`` threads calling at once."""
    barrier = threading.Barrier(threads + 1)

    def work() -> None:
        barrier.wait()
        for _ in range(calls):
            fn()

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for thread in pool:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in pool:
        thread.join()
    return (time.perf_counter() - started) / (threads * calls) * 1e6


def bench_run() -> None:
    direct = per_call(_noop)
    armed = per_call(lambda: budget.run(20, _noop))
    bare = per_call(lambda: budget.run(0, _noop))
    print(f"one thread: direct call {direct:.3f} µs, run(0) {bare:.3f} µs, run(20) {armed:.3f} µs "
          f"-> arm + disarm {armed - bare:.3f} µs")
    direct8 = threaded(_noop)
    armed8 = threaded(lambda: budget.run(20, _noop))
    bare8 = threaded(lambda: budget.run(0, _noop))
    print(f"8 threads at once: direct {direct8:.3f} µs, run(0) {bare8:.3f} µs, run(20) {armed8:.3f} µs per call "
          f"(wall clock / calls) -> arm + disarm {armed8 - bare8:.3f} µs")


def bench_api(rounds: int, reads: int) -> None:
    from dui import migrations
    from dui.app import create_app
    from dui.crypto.master import KEY_BYTES, write_key_file
    from dui.settings import EncryptionSettings, Settings

    tmp = Path(tempfile.mkdtemp(prefix="dui-bench-budget-"))
    url = f"sqlite:///{tmp / 'dui.sqlite'}"
    migrations.upgrade(url)
    import os

    write_key_file(tmp / "master.key", os.urandom(KEY_BYTES))
    encryption = EncryptionSettings(master_key_file=str(tmp / "master.key"), dev_key_dir=str(tmp / "dev"))
    apps = {seconds: create_app(Settings(database_url=url, encryption=encryption, request_budget=seconds,
                                         log_level="WARNING"))
            for seconds in (0.0, 20.0)}
    client = apps[0.0].test_client()
    created = client.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "female",
                                                 "name": [{"family": "Bench", "given": ["Anne"]}]},
                          headers={"Content-Type": "application/fhir+json"})
    pid = created.get_json()["id"]
    rates: dict[float, list[float]] = {0.0: [], 20.0: []}
    ratios = []
    clients = {seconds: app.test_client() for seconds, app in apps.items()}
    for index in range(rounds):
        order = (0.0, 20.0) if index % 2 == 0 else (20.0, 0.0)  # neither always runs first
        for seconds in order:
            test = clients[seconds]
            started = time.perf_counter()
            for _ in range(reads):
                assert test.get(f"/fhir/Patient/{pid}").status_code == 200
            rates[seconds].append(reads / (time.perf_counter() - started))
        ratios.append(rates[20.0][-1] / rates[0.0][-1])
    none, armed = statistics.median(rates[0.0]), statistics.median(rates[20.0])
    print(f"reads by id, SQLite, {rounds} alternating rounds of {reads}: median no budget {none:.0f}/s "
          f"({1e3 / none:.3f} ms each), budget 20 s {armed:.0f}/s ({1e3 / armed:.3f} ms each); median of the "
          f"rounds' ratios {statistics.median(ratios):.3f} (quartiles {statistics.quantiles(ratios, n=4)[0]:.3f}"
          f"-{statistics.quantiles(ratios, n=4)[2]:.3f})")
    for app in apps.values():
        app.extensions["dui"].dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--reads", type=int, default=250)
    args = parser.parse_args()
    bench_run()
    bench_api(args.rounds, args.reads)


if __name__ == "__main__":
    main()
