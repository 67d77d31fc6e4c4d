"""Cost of profile validation on writes.

    .venv/bin/python bench/validation.py [--rounds N]                 # per resource, in process
    .venv/bin/python bench/validation.py api sqlite|postgresql [--rounds N]

The first compares, per resource, the checks every write ran before profiles (base R4 structure and the
fhir.resources model: the baseline) with the same plus the profile validator (default profile dui-resident for
Patients, the base definition for other types, FR Core 2.1.0's blood-pressure profile when claimed).
`api` creates, through the Flask test client and single-threaded, 200 Observations and 50 Patients with
``DUI_VALIDATION=off`` (the baseline) and ``warn`` (the default), alternately, on a fresh database each.
Both print Markdown tables for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dui.demo.data import resident_bundle  # noqa: E402
from dui.fhir import jsontext  # noqa: E402
from dui.fhir.validation import Validator  # noqa: E402
from fhir_profiles.context import Context  # noqa: E402
from fhir_profiles.package import read_package  # noqa: E402
from fhir_profiles.validator import ProfileValidator  # noqa: E402

RESIDENT = "https://dui.example.org/fhir/StructureDefinition/dui-resident"
FR_CORE = ROOT.parent / "shared" / "conformance" / "ans" / "fr-core" / "2.1.0"


def per_call(fn: Callable[[], object], rounds: int) -> float:
    """Median of 5 runs of ``rounds`` calls, in microseconds per call (after a warm-up run)."""
    fn()
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(rounds):
            fn()
        runs.append((time.perf_counter() - start) / rounds * 1e6)
    return statistics.median(runs)


def samples() -> list[tuple[str, dict[str, Any]]]:
    bundle = resident_bundle(1, date(2026, 1, 15))
    by_type: dict[str, dict[str, Any]] = {}
    for entry in bundle["entry"]:
        by_type.setdefault(entry["resource"]["resourceType"], entry["resource"])
    chosen = [(t, by_type[t]) for t in ("Patient", "Observation", "Encounter", "Condition") if t in by_type]
    if (FR_CORE / "package.tgz").exists():
        example = json.loads((FR_CORE / "extracted/package/example/Observation-FRCoreObservationBPExample.json")
                             .read_text(encoding="utf-8"))
        chosen.append(("Observation (fr-core-observation-bp)", example))
    return chosen


def api(kind: str, rounds: int) -> None:
    import json
    import logging
    import tempfile

    from bench import data
    from bench.encryption import database
    from dui.app import create_app
    from dui.settings import Settings

    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    results: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for mode in ("off", "warn"):
            url, drop = database(kind, Path(tempfile.mkdtemp(prefix="bench-validation-")))
            app = create_app(Settings.from_env({"DUI_DATABASE_URL": url, "DUI_LOG_LEVEL": "WARNING",
                                                "DUI_VALIDATION": mode, "DUI_RATE_LIMIT": "0"}))
            logging.getLogger("dui.access").setLevel(logging.WARNING)
            http = app.test_client()
            try:
                bundles = [next(data.resident_bundles(i, 1)) for i in range(50)]
                entries = [e["resource"] for b in bundles for e in b["entry"]]
                for rtype, count in (("Patient", 50), ("Observation", 200)):
                    bodies = [json.dumps(r) for r in entries if r["resourceType"] == rtype][:count]
                    started = time.perf_counter()
                    for body in bodies:
                        response = http.post(f"/fhir/{rtype}", data=body, headers=headers)
                        assert response.status_code == 201, response.get_data(as_text=True)[:300]
                    results.setdefault((rtype, mode), []).append(len(bodies) / (time.perf_counter() - started))
            finally:
                app.extensions["dui"].dispose()
                drop()
    print(f"| create ({kind}, single-threaded) | DUI_VALIDATION=off (/s) | warn (/s) | ratio |")
    print("|---|---:|---:|---:|")
    for rtype in ("Patient", "Observation"):
        off = statistics.median(results[(rtype, "off")])
        warn = statistics.median(results[(rtype, "warn")])
        print(f"| {rtype} | {off:,.0f} | {warn:,.0f} | {warn / off:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", nargs="*", help="api sqlite|postgresql")
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    if args.what[:1] == ["api"]:
        api(args.what[1] if len(args.what) > 1 else "sqlite", args.rounds if args.rounds != 300 else 3)
        return
    rounds = args.rounds
    packages = [read_package((FR_CORE / "package.tgz").read_bytes())] if (FR_CORE / "package.tgz").exists() else []
    profiles = ProfileValidator(Context(packages), {"Patient": [RESIDENT]})
    baseline = Validator()
    print("| resource | base structure + model (us) | + profiles (us) | ratio |")
    print("|---|---:|---:|---:|")
    for name, resource in samples():
        body = jsontext.parse(jsontext.dump(resource))  # as a request body is parsed
        base = per_call(lambda body=body: baseline.check(body), rounds)  # type: ignore[misc]
        full = per_call(lambda body=body: (baseline.check(body), profiles.validate(body)), rounds)  # type: ignore[misc]
        print(f"| {name} | {base:,.0f} | {full:,.0f} | {full / base:.1f}x |")


if __name__ == "__main__":
    main()
