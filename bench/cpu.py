"""CPU per request, split between the server, PostgreSQL and the load generator.

    python bench/cpu.py dui-postgresql
    python bench/cpu.py sekmet

Starts the server with 20 residents, drives reads and identifier searches for 15 s each (8 clients), and
divides each group of processes' CPU time by the number of requests served.
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

from bench import run


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
    name = parser.parse_args().server
    workdir = Path(tempfile.mkdtemp(prefix="bench-cpu-"))
    server = run.sekmet_server(18400, workdir) if name == "sekmet" else \
        run.dui_server(name.split("-", 1)[1], 18401, workdir, 2)
    server.start()
    try:
        run.ingest(server.base, run.bundles(0, 20, 4, heavy=False), 2)
        server.analyze()
        assert server.process is not None
        workloads = run.workloads(server.base, 20, random.Random(1), [])
        with multiprocessing.Pool(8) as pool:
            root = psutil.Process(server.process.pid)
            own = {root.pid, *(p.pid for p in root.children(recursive=True))}
            clients = [p for p in psutil.Process().children(recursive=True) if p.pid not in own]
            for label in ("read", "search identifier"):
                def groups() -> tuple[dict[int, float], ...]:
                    root = psutil.Process(server.process.pid)  # type: ignore[union-attr]
                    postgres = [p for p in psutil.process_iter(["name"]) if p.info["name"] == "postgres"]
                    return _cpu([root, *root.children(recursive=True)]), _cpu(postgres), _cpu(clients)
                before = groups()
                result = run.drive(workloads[label], 15, 8, pool)
                after = groups()
                per = [1000 * _delta(b, a) / result["requests"] for b, a in zip(before, after, strict=True)]
                print(f"{name} {label}: {result['req_per_s']} req/s; CPU per request: server {per[0]:.2f} ms, "
                      f"PostgreSQL {per[1]:.2f} ms, load generator {per[2]:.2f} ms", flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
