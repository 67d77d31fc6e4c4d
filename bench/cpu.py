"""CPU per request, split between the server, PostgreSQL and the load generator; servers compared in one run.

    python bench/cpu.py dui-postgresql
    python bench/cpu.py dui-postgresql,dui-sqlite,sekmet --rounds 3
    python bench/cpu.py dui-postgresql,dui-postgresql@base --base ../dui-before   # against another checkout
    python bench/cpu.py dui-postgresql,dui-postgresql:granian,sekmet --rounds 3  # gunicorn and granian
    python bench/cpu.py dui-postgresql --actor staff --workers 1 --seconds 8 --workloads read,search name,create

Starts every server named (``:granian``: ``dui serve --server granian``; ``@base``: the same server run from the
checkout ``--base`` names), loads each with
the same 20 residents, then drives each workload on each server in turn, for ``--rounds`` alternating rounds, and
reports the median of the rounds. The load generator is wrk (16 connections, 2 threads; ``bench/wrk.py``), or
the Python driver of ``bench/run.py`` (``--driver python``, 8 processes). Each group of processes' CPU time is
divided by the number of requests served. PostgreSQL's share counts only the backends serving the benchmark's
database. The CPU per request, unlike requests per second, hardly depends on what else the machine runs:
docs/scaling.md sizes hosts from it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import run, wrk

KINDS = ("dui-postgresql", "dui-sqlite", "sekmet")
MEASURES = ("req_per_s", "p50_ms", "p99_ms", "server_cpu_ms", "postgresql_cpu_ms", "load_generator_cpu_ms")


def parse(name: str) -> tuple[str, str, str]:
    """``KIND[:granian][@base]``: the server kind, its HTTP server, and "base" when it runs from --base."""
    rest, _, code = name.partition("@")
    kind, _, http = rest.partition(":")
    return kind, http or "gunicorn", code


def start(name: str, number: int, args: argparse.Namespace) -> run.Server:
    kind, http, code = parse(name)
    workdir = Path(tempfile.mkdtemp(prefix="bench-cpu-"))
    port = 18400 + number
    if kind == "sekmet":
        server = run.sekmet_server(port, workdir)
    else:
        server = run.dui_server(kind.split("-", 1)[1], port, workdir, args.workers,
                                code=Path(args.base).resolve() if code == "base" else None, http=http,
                                threads=args.threads)
    server.name = name
    server.start()
    run.ingest(server.base, iter([run.data.establishment_bundle()]), 1)
    run.ingest(server.base, run.bundles(0, 20, 4, heavy=False), 2)
    server.analyze()
    return server


def measure(server: run.Server, label: str, requests: list[Any], headers: dict[str, str],
            args: argparse.Namespace, pool: Any) -> dict[str, Any]:
    assert server.process is not None
    database = server.database.rsplit("/", 1)[-1] if server.database.startswith("postgresql") else ""
    if args.driver == "wrk":
        return wrk.drive(requests, headers, args.seconds, args.connections,
                         wrk.CpuGroups(server.process.pid, database))
    root = psutil.Process(server.process.pid)
    own = {root.pid, *(p.pid for p in root.children(recursive=True))}
    clients = [p for p in psutil.Process().children(recursive=True) if p.pid not in own]
    groups = wrk.CpuGroups(server.process.pid, database)
    before, generator = groups.sample(), wrk.cpu_seconds(clients)
    result = run.drive(requests, args.seconds, args.clients, pool, headers)
    after, generator_after = groups.sample(), wrk.cpu_seconds(clients)
    count = max(result["requests"], 1)
    return {**result, "server_cpu_ms": round(1000 * (after[0] - before[0]) / count, 3),
            "postgresql_cpu_ms": round(1000 * (after[1] - before[1]) / count, 3),
            "load_generator_cpu_ms": round(1000 * (generator_after - generator) / count, 3),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("servers", help=f"comma-separated, among {', '.join(KINDS)}; a DUI one as KIND:granian runs "
                                        "dui serve --server granian, with @base from the checkout --base names")
    parser.add_argument("--base", help="another checkout of DUI (git worktree), for NAME@base")
    parser.add_argument("--actor", choices=("anonymous", "staff"), default="anonymous")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of dui serve")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker of dui serve")
    parser.add_argument("--seconds", type=float, default=15, help="seconds per workload and round")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds; the median is reported")
    parser.add_argument("--driver", choices=("wrk", "python"), default="wrk" if wrk.available() else "python",
                        help="wrk (C; default when installed) or the Python driver of bench/run.py")
    parser.add_argument("--connections", type=int, default=16, help="wrk's connections")
    parser.add_argument("--clients", type=int, default=8, help="the Python driver's processes")
    parser.add_argument("--workloads", default="read,search identifier",
                        help="comma-separated, among bench/run.py's (read, search identifier, search name, create...)")
    args = parser.parse_args()
    names = args.servers.split(",")
    for name in names:
        kind, http, code = parse(name)
        if kind not in KINDS or code not in ("", "base") or http not in ("gunicorn", "granian") or (
                kind == "sekmet" and (code or http != "gunicorn")):
            parser.error(f"unknown server {name}")
        if name.endswith("@base") and not args.base:
            parser.error(f"{name} needs --base DIR")
    servers: list[run.Server] = []
    results: dict[str, dict[str, list[dict[str, Any]]]] = {n: {} for n in names}
    try:
        for number, name in enumerate(names):
            print(f"[{name}] starting and loading", file=sys.stderr, flush=True)
            servers.append(start(name, number, args))
        headers = {s.name: run.staff_headers(s) if args.actor == "staff" and not s.name.startswith("sekmet")
                   else run.JSON for s in servers}
        with multiprocessing.Pool(args.clients) as pool:
            for round_ in range(args.rounds):
                for label in args.workloads.split(","):
                    for server in servers:
                        requests = run.workloads(server.base, 20, random.Random(1), [])[label]
                        w = measure(server, label, requests, headers[server.name], args, pool)
                        results[server.name].setdefault(label, []).append(w)
                        print(f"round {round_ + 1} {server.name} {args.actor} {label}: {w['req_per_s']} req/s (p50 "
                              f"{w['p50_ms']} ms, p99 {w['p99_ms']} ms, {w['errors']} errors); CPU per request: "
                              f"server {w['server_cpu_ms']:.3f} ms, PostgreSQL {w['postgresql_cpu_ms']:.3f} ms, "
                              f"load generator {w['load_generator_cpu_ms']:.3f} ms; load {w['load_average'][0]}",
                              file=sys.stderr, flush=True)
    finally:
        for server in servers:
            server.stop()
    report = {"kind": "cpu", "machine": run.machine(), "driver": args.driver, "actor": args.actor,
              "rounds": args.rounds, "seconds": args.seconds, "workers": args.workers, "results": results,
              "load_average": os.getloadavg()}
    run.RESULTS.mkdir(parents=True, exist_ok=True)
    out = run.RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}-cpu.json"
    out.write_text(json.dumps(report, indent=2))
    print(markdown(results, names))
    print(f"\nload average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; written to {out}",
          file=sys.stderr)


def markdown(results: dict[str, dict[str, list[dict[str, Any]]]], names: list[str]) -> str:
    """Medians of the rounds: per workload, each server's req/s, p50/p99 and CPU per request, and its ratios to the
    first server (throughput and server CPU)."""
    first = names[0]
    lines = ["| workload | server | req/s | p50 / p99 ms | CPU ms/request: server + PostgreSQL | req/s vs "
             f"{first} | server CPU vs {first} |", "|---|---|---|---|---|---|---|"]
    labels = list(results[first])
    for label in labels:
        medians = {n: {m: statistics.median(r.get(m, 0.0) for r in results[n][label]) for m in MEASURES}
                   for n in names}
        for name in names:
            m, ref = medians[name], medians[first]
            lines.append(f"| {label} | {name} | {m['req_per_s']:.0f} | {m['p50_ms']:.1f} / {m['p99_ms']:.1f} | "
                         f"{m['server_cpu_ms']:.2f} + {m['postgresql_cpu_ms']:.2f} | "
                         f"{m['req_per_s'] / ref['req_per_s']:.2f}x | "
                         f"{m['server_cpu_ms'] / ref['server_cpu_ms']:.2f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
