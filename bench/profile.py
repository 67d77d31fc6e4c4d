"""Where a worker's CPU goes under load: py-spy samples of one ``dui serve`` worker while wrk drives a workload.

Only the thread holding the GIL is sampled (the CPU the interpreter spends, not the waits), grouped by library (the
file of the innermost frame) and by phase (the first of a few functions a sample passes through).

    python bench/profile.py --workload read --seconds 15
    python bench/profile.py --workload "search identifier" --server dui-sqlite --actor staff

Needs py-spy (``pip install py-spy``; root, or ptrace allowed) and wrk. One worker, 8 threads, 16 connections; the
raw collapsed stacks are kept in ``bench/results/`` for a flame graph (``py-spy``'s or any collapsed-stack viewer).
"""

from __future__ import annotations

import argparse
import collections
import random
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import run, wrk  # noqa: E402

# Phases: a sample counts for the first of these whose function appears in its stack (innermost first).
PHASES = (
    ("audit entry", re.compile(r"\b(record_fhir|record_fhir_read|record_api_read|record_apart|ensure_recorded)\b")),
    ("authentication", re.compile(r"\bactor_for\b")),
    ("FHIR interaction", re.compile(r"\b(handle|route)\b \(dui/fhir/router\.py")),
    ("answer encoding", re.compile(r"\b(_to_flask|_encoded)\b")),
    ("database connection / transaction", re.compile(r"\bunit_of_work\b")),
    ("request context (Flask)", re.compile(r"\b(full_dispatch_request|wsgi_app)\b")),
    ("HTTP server (gunicorn)", re.compile(r"gunicorn/")),
)


SITE = {p.name.removesuffix(".py") for p in Path(sysconfig.get_paths()["purelib"]).iterdir()}
OWN = ("dui", "ins", "mssante", "fhir_profiles")


def library(frame: str) -> str:
    """The library a frame's file belongs to: an installed package, the project's own, or the standard library
    (py-spy names files relative to their ``sys.path`` entry)."""
    match = re.search(r"\(([^()]*?)(?::\d+)?\)$", frame)
    path = match.group(1) if match else frame
    path = path.split("site-packages/", 1)[-1]
    top = path.split("/", 1)[0].removesuffix(".py")
    if top in OWN:
        return top
    if top in SITE:
        return top
    if path.startswith("<"):
        return "interpreter"
    return "python (stdlib)"


def summarise(stacks: dict[str, int]) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    total = sum(stacks.values()) or 1
    by_library: collections.Counter[str] = collections.Counter()
    by_phase: collections.Counter[str] = collections.Counter()
    for stack, count in stacks.items():
        frames = stack.split(";")
        by_library[library(frames[-1])] += count
        inner_first = list(reversed(frames))
        phase = next((name for name, pattern in PHASES if any(pattern.search(f) for f in inner_first)), "other")
        by_phase[phase] += count
    return ([(k, 100 * v / total) for k, v in by_library.most_common()],
            [(k, 100 * v / total) for k, v in by_phase.most_common()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=("dui-postgresql", "dui-sqlite"), default="dui-postgresql")
    parser.add_argument("--workload", default="read")
    parser.add_argument("--actor", choices=("anonymous", "staff"), default="anonymous")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--stacks", type=Path, help="summarise these raw stacks (a former run's) instead")
    args = parser.parse_args()
    if not args.stacks and shutil.which("py-spy") is None and not Path(sys.executable).with_name("py-spy").exists():
        sys.exit("py-spy is not installed: pip install py-spy")
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    raw = args.stacks or record(args, spy)
    report(args, raw)


def record(args: argparse.Namespace, spy: str) -> Path:
    workdir = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    server = run.dui_server(args.server.split("-", 1)[1], 18500, workdir, 1)
    server.start()
    try:
        run.ingest(server.base, iter([run.data.establishment_bundle()]), 1)
        run.ingest(server.base, run.bundles(0, 20, 4, heavy=False), 2)
        server.analyze()
        headers = run.staff_headers(server) if args.actor == "staff" else run.JSON
        requests = run.workloads(server.base, 20, random.Random(1), [])[args.workload]
        assert server.process is not None
        workers = psutil.Process(server.process.pid).children()
        raw = run.RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}-profile-{args.workload.replace(' ', '-')}.txt"
        run.RESULTS.mkdir(parents=True, exist_ok=True)
        wrk.drive(requests, headers, 3, 16)  # warm-up
        load = threading.Thread(target=wrk.drive, args=(requests, headers, args.seconds + 4, 16))
        load.start()
        time.sleep(1)
        subprocess.run([spy, "record", "--pid", str(workers[0].pid), "--duration", str(int(args.seconds)),
                        "--rate", str(args.rate), "--format", "raw", "--output", str(raw), "--nonblocking", "--gil"],
                       check=True, capture_output=True)
        load.join()
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return raw


def report(args: argparse.Namespace, raw: Path) -> None:
    stacks: dict[str, int] = {}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] = stacks.get(stack, 0) + int(count)
    libraries, phases = summarise(stacks)
    print(f"{args.server} {args.actor} {args.workload}: {sum(stacks.values())} samples of one worker")
    print("\n| library (innermost frame) | share |\n|---|---|")
    for name, share in libraries:
        if share >= 0.5:
            print(f"| {name} | {share:.1f} % |")
    print("\n| phase | share |\n|---|---|")
    for name, share in phases:
        print(f"| {name} | {share:.1f} % |")
    print(f"\nraw stacks: {raw}", file=sys.stderr)


if __name__ == "__main__":
    main()
