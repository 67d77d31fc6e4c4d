"""CPU per request, split between the server, PostgreSQL and the load generator.

    python bench/cpu.py dui-postgresql
    python bench/cpu.py sekmet
    python bench/cpu.py dui-postgresql --actor staff --workers 1 --seconds 8 --workloads read,search name,create

Starts the server with 20 residents, drives reads and identifier searches for 15 s each (8 clients), and
divides each group of processes' CPU time by the number of requests served. PostgreSQL's share counts only the
backends serving the benchmark's database (others may share the server). The CPU per request, unlike requests per
second, hardly depends on what else the machine runs: docs/scaling.md sizes hosts from it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import sys
import tempfile
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import run, wrk


def _cpu(processes: list[psutil.Process]) -> dict[int, float]:
    out = {}
    for p in processes:
        try:
            times = p.cpu_times()
        except psutil.Error:
            continue
        out[p.pid] = times.user + times.system
    return out


def _delta(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("server", choices=["dui-postgresql", "dui-sqlite", "sekmet"])
    parser.add_argument("--actor", choices=("anonymous", "staff"), default="anonymous")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of dui serve")
    parser.add_argument("--seconds", type=float, default=15, help="seconds per workload")
    parser.add_argument("--clients", type=int, default=8, help="load-generator processes (python driver)")
    parser.add_argument("--driver", choices=("wrk", "python"), default="wrk" if wrk.available() else "python",
                        help="wrk (16 connections, 2 threads) or the Python driver of bench/run.py")
    parser.add_argument("--connections", type=int, default=16, help="wrk's connections")
    parser.add_argument("--workloads", default="read,search identifier",
                        help="comma-separated, among bench/run.py's (read, search identifier, search name, create...)")
    args = parser.parse_args()
    name = args.server
    workdir = Path(tempfile.mkdtemp(prefix="bench-cpu-"))
    server = run.sekmet_server(18400, workdir) if name == "sekmet" else \
        run.dui_server(name.split("-", 1)[1], 18401, workdir, args.workers)
    server.start()
    try:
        run.ingest(server.base, iter([run.data.establishment_bundle()]), 1)
        run.ingest(server.base, run.bundles(0, 20, 4, heavy=False), 2)
        server.analyze()
        headers = run.staff_headers(server) if args.actor == "staff" and name != "sekmet" else run.JSON
        database = server.database.rsplit("/", 1)[-1] if name == "dui-postgresql" else None
        assert server.process is not None
        workloads = run.workloads(server.base, 20, random.Random(1), [])
        with multiprocessing.Pool(args.clients) as pool:
            root = psutil.Process(server.process.pid)
            own = {root.pid, *(p.pid for p in root.children(recursive=True))}
            clients = [p for p in psutil.Process().children(recursive=True) if p.pid not in own]
            for label in args.workloads.split(","):
                if args.driver == "wrk":
                    groups_ = wrk.CpuGroups(server.process.pid, database if name == "dui-postgresql" else "")
                    w = wrk.drive(workloads[label], headers, args.seconds, args.connections, groups_)
                    print(f"{name} {args.actor} {label}: {w['req_per_s']} req/s (p50 {w['p50_ms']} ms, p99 "
                          f"{w['p99_ms']} ms, {w['errors']} errors); CPU per request: server {w['server_cpu_ms']:.3f} "
                          f"ms, PostgreSQL {w['postgresql_cpu_ms']:.3f} ms, wrk {w['load_generator_cpu_ms']:.3f} ms; "
                          f"load {w['load_average'][0]}", flush=True)
                    continue
                def groups() -> tuple[dict[int, float], ...]:
                    root = psutil.Process(server.process.pid)  # type: ignore[union-attr]
                    postgres = [p for p in psutil.process_iter(["name", "cmdline"]) if p.info["name"] == "postgres"
                                and (database is None or database in " ".join(p.info["cmdline"] or ()))]
                    return _cpu([root, *root.children(recursive=True)]), _cpu(postgres), _cpu(clients)
                before = groups()
                result = run.drive(workloads[label], args.seconds, args.clients, pool, headers)
                after = groups()
                per = [1000 * _delta(b, a) / result["requests"] for b, a in zip(before, after, strict=True)]
                print(f"{name} {args.actor} {label}: {result['req_per_s']} req/s (p50 {result['p50_ms']} ms, "
                      f"{result.get('errors', 0)} errors); CPU per request: server {per[0]:.2f} ms, "
                      f"PostgreSQL {per[1]:.2f} ms, load generator {per[2]:.2f} ms", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
