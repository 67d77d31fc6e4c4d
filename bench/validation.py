"""Cost of profile validation on writes, in process: the checks every write runs (base R4 structure and the
fhir.resources model: the baseline), then the same plus the profile validator (default profile dui-resident for
Patients, the base definition for other types, FR Core 2.1.0 profiles when claimed).

    .venv/bin/python bench/validation.py [--rounds N]

Prints a Markdown table (microseconds per resource and the ratio to the baseline) for docs/benchmarks.md.
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=300)
    rounds = parser.parse_args().rounds
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
