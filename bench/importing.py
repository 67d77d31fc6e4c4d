"""CPU of the write path: ``dui import --ndjson`` of generated residents into a fresh PostgreSQL database.

    python bench/importing.py --residents 10                       # this checkout
    python bench/importing.py --residents 10 --base ../dui-before  # against another checkout, alternating rounds

Every resource of ``bench/data.py``'s residents (17 weeks each: about 220 resources a resident, nine in ten
Observations of vital signs) is written as NDJSON, one file per type, then put back at its id by
``dui import --ndjson``: a PUT per resource through the FHIR router, under every write rule (model, profiles,
index, encryption), 200 to a transaction. Each round imports into a fresh database (creates), then imports the same
files again (every resource found unchanged). The importer's own CPU (user + system, from ``resource.getrusage`` of
the child) is measured, less that of a run on an empty folder (start-up: the app built, then the refusal), and
divided by the resources put; PostgreSQL's CPU is not counted. With ``--base``, each round runs the other checkout
first (put first on PYTHONPATH), then this one; the median of the rounds is reported.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import data  # noqa: E402
from bench.run import DUI, PG_ADMIN  # noqa: E402

DATABASE = "dui_bench_import"


def write_files(folder: Path, residents: int, weeks: int) -> int:
    """The residents' resources as NDJSON, one file per type; how many."""
    lines: dict[str, list[str]] = {}

    def put(item: dict[str, Any]) -> None:
        lines.setdefault(item["resourceType"], []).append(json.dumps(item, ensure_ascii=False))

    for entry in data.establishment_bundle()["entry"]:
        put(entry["resource"])
    for index in range(residents):
        for bundle in data.resident_bundles(index, weeks):
            for entry in bundle["entry"]:
                item = dict(entry["resource"])
                if "id" not in item:  # a POST entry: its urn:uuid becomes its id
                    item["id"] = str(uuid.UUID(entry["fullUrl"].rsplit(":", 1)[1]))
                put(item)
    for rtype, rows in lines.items():
        (folder / f"{rtype}.ndjson").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return sum(len(rows) for rows in lines.values())


def timed(command: list[str], env: dict[str, str]) -> float:
    """CPU seconds (user + system) of ``command`` run to its end."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def fresh(env: dict[str, str]) -> None:
    for sql in (f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)", f"CREATE DATABASE {DATABASE}"):
        subprocess.run(["psql", PG_ADMIN, "-qc", sql], check=True, capture_output=True)
    subprocess.run([str(DUI), "db", "upgrade"], env=env, check=True, capture_output=True)


def one_round(env: dict[str, str], folder: Path, empty: Path, count: int) -> dict[str, float]:
    fresh(env)
    start_up = timed([str(DUI), "import", "--ndjson", str(empty)], env)
    created = timed([str(DUI), "import", "--ndjson", str(folder)], env)
    again = timed([str(DUI), "import", "--ndjson", str(folder)], env)
    return {"start-up s": start_up, "create ms": (created - start_up) / count * 1000,
            "unchanged ms": (again - start_up) / count * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--residents", type=int, default=10)
    parser.add_argument("--weeks", type=int, default=17)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--base", help="another checkout of DUI, measured in the same rounds")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-import-"))
    folder, empty = work / "ndjson", work / "empty"
    folder.mkdir()
    empty.mkdir()
    count = write_files(folder, args.residents, args.weeks)
    env = {**os.environ, "DUI_DATABASE_URL": PG_ADMIN.rsplit("/", 1)[0] + f"/{DATABASE}", "DUI_LOG_LEVEL": "WARNING",
           "DUI_MASTER_KEY": base64.b64encode(os.urandom(32)).decode()}
    sides = {"this checkout": env}
    if args.base:
        sides = {"base": {**env, "PYTHONPATH": str(Path(args.base).resolve())}, **sides}
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
    for number in range(args.rounds):
        for name, side_env in sides.items():
            rounds[name].append(one_round(side_env, folder, empty, count))
            print(f"round {number + 1} {name}: {rounds[name][-1]}", file=sys.stderr, flush=True)
    subprocess.run(["psql", PG_ADMIN, "-qc", f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"], check=True)
    print(f"{count:,} resources ({args.residents} residents x {args.weeks} weeks), medians of {args.rounds} rounds, "
          f"load average {' / '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print("| checkout | start-up (s CPU) | ms CPU per resource, created | ms CPU per resource, unchanged |")
    print("|---|---|---|---|")
    for name, values in rounds.items():
        medians = {key: statistics.median(v[key] for v in values) for key in values[0]}
        print(f"| {name} | {medians['start-up s']:.2f} | {medians['create ms']:.2f} | {medians['unchanged ms']:.2f} |")


if __name__ == "__main__":
    main()
