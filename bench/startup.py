"""Start-up of ``dui serve``: seconds from the command to the first answered request, gunicorn and granian.

    python bench/startup.py --rounds 5

For each round and each HTTP server: ``dui serve`` on a migrated PostgreSQL database (a fresh one per run), polled
every 20 ms until ``GET /fhir/metadata`` answers 200 (every worker has then built the app: each warms its profiles
before it takes a request), then stopped with SIGTERM. Prints the median and the slowest of the rounds.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import run


def first_answer(server: run.Server) -> float:
    import subprocess

    started = time.perf_counter()
    log = open(server.workdir / f"{server.name}.log", "ab")  # noqa: SIM115 (closed below)
    server.process = subprocess.Popen(server.command, env=server.env, cwd=server.workdir, stdout=log, stderr=log,
                                      start_new_session=True)
    try:
        while time.perf_counter() - started < 60:
            try:
                if requests.get(f"{server.base}/metadata", timeout=5).status_code == 200:
                    return time.perf_counter() - started
            except requests.RequestException:
                pass
            time.sleep(0.02)
        raise RuntimeError(f"{server.name} did not answer within 60 s")
    finally:
        server.stop()
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    times: dict[str, list[float]] = {"gunicorn": [], "granian": []}
    servers = {http: run.dui_server("postgresql", 18600 + n, workdir, args.workers, http=http)
               for n, http in enumerate(times)}
    for _ in range(args.rounds):
        for http, server in servers.items():
            times[http].append(first_answer(server))
    print("| HTTP server | first answer: median | slowest |\n|---|---|---|")
    for http, seconds in times.items():
        print(f"| {http} ({args.workers} workers) | {statistics.median(seconds):.2f} s | {max(seconds):.2f} s |")


if __name__ == "__main__":
    main()
