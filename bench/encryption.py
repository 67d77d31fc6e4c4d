"""Cost of encryption at rest: sealing and opening one body, and FHIR throughput through the Flask test client.

    python bench/encryption.py seal
    PYTHONPATH=<tree> python bench/encryption.py api sqlite|postgresql [--rounds 5]

`seal` times ``dui.crypto.envelope.seal`` / ``open_sealed`` on bodies of the demo data's shapes (a Patient, an
Observation, a DocumentReference) and on Binary documents of 100 KB and 1 MB (base64 in the JSON body).

`api` runs, in this process and single-threaded, the same requests against a fresh database: 200 creates
(Observations of 20 residents), 2,000 reads by id, 200 searches returning 50 Observations each. Run it from a
tree of the code before encryption and one after (same machine, same database server, alternately) to compare:
it imports ``dui`` from ``PYTHONPATH``. PostgreSQL comes from ``BENCH_PG_ADMIN`` (a schema of its own, dropped).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

PG_ADMIN = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")


def _per_call(fn: Callable[[], Any], seconds: float = 0.5) -> float:
    """Microseconds per call, best of 5 runs of ~``seconds`` / 5 each."""
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < 0.05:
        fn()
        count += 1
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(count * int(seconds / 0.25) or 1):
            fn()
        runs.append((time.perf_counter() - t0) / (count * int(seconds / 0.25) or 1))
    return min(runs) * 1e6


def seal_costs() -> None:
    from bench import data
    from dui.crypto import envelope
    from dui.crypto.envelope import DataKey
    from dui.fhir import jsontext

    entries = [e["resource"] for b in data.resident_bundles(1, 2) for e in b["entry"]]
    samples: dict[str, bytes] = {}
    for rtype in ("Patient", "Observation", "DocumentReference"):
        resource = next((r for r in entries if r["resourceType"] == rtype), None)
        if resource is not None:
            samples[rtype] = jsontext.dump(resource)
    for size in (100_000, 1_000_000):
        document = base64.b64encode(os.urandom(size)).decode()
        samples[f"Binary {size // 1000} KB"] = jsontext.dump({"resourceType": "Binary",
                                                              "contentType": "application/pdf", "data": document})
    key = DataKey(1, os.urandom(32))
    print("| body | bytes | seal (µs) | open (µs) | parse JSON, for scale (µs) |")
    print("|---|---:|---:|---:|---:|")
    for name, body in samples.items():
        stored = envelope.seal(key, body, "Patient", 123456, 7)
        seal = _per_call(lambda b=body: envelope.seal(key, b, "Patient", 123456, 7))
        opened = _per_call(lambda s=stored: envelope.open_sealed(key, s, "Patient", 123456, 7))
        parse = _per_call(lambda b=body: jsontext.parse(b, max_depth=10_000))
        print(f"| {name} | {len(body):,} | {seal:.1f} | {opened:.1f} | {parse:.1f} |")


def database(kind: str, workdir: Path) -> tuple[str, Callable[[], None]]:
    """A database migrated to the head: a SQLite file in ``workdir``, or a PostgreSQL schema of its own on
    ``BENCH_PG_ADMIN``; and what drops it."""
    from sqlalchemy import text

    from dui import migrations
    from dui.db import make_engine, normalize_url

    if kind == "sqlite":
        url = f"sqlite:///{workdir / 'bench.sqlite'}"
        migrations.upgrade(url)
        return url, lambda: None
    schema = f"bench_enc_{uuid.uuid4().hex[:8]}"
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


def api_throughput(kind: str, rounds: int) -> None:
    import logging

    from bench import data
    from dui.app import create_app
    from dui.settings import Settings

    workdir = Path(tempfile.mkdtemp(prefix="bench-encryption-"))
    url, drop = database(kind, workdir)
    env = {"DUI_DATABASE_URL": url, "DUI_LOG_LEVEL": "WARNING",
           "DUI_MASTER_KEY": base64.b64encode(os.urandom(32)).decode()}  # ignored by code without encryption
    app = create_app(Settings.from_env(env))
    logging.getLogger("dui.access").setLevel(logging.WARNING)
    http = app.test_client()
    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    try:
        patients, observations = [], []
        for index in range(20):
            bundle = next(data.resident_bundles(index, 1))
            response = http.post("/fhir", data=json.dumps(bundle), headers=headers)
            assert response.status_code == 200, response.get_data(as_text=True)[:300]
            patients.append(data.resident_id(index))
            observations += [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
        assert observations
        results: dict[str, list[float]] = {"create": [], "read": [], "search (50 per page)": []}
        created: list[str] = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for i in range(200):
                response = http.post("/fhir/Observation", data=json.dumps(observations[i % len(observations)]),
                                     headers=headers)
                assert response.status_code == 201
                created.append(response.get_json()["id"])
            results["create"].append(200 / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            for i in range(2000):
                assert http.get(f"/fhir/Observation/{created[i % len(created)]}", headers=headers).status_code == 200
            results["read"].append(2000 / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            for i in range(200):
                response = http.get(f"/fhir/Observation?subject=Patient/{patients[i % 20]}&_count=50", headers=headers)
                assert response.status_code == 200
            results["search (50 per page)"].append(200 / (time.perf_counter() - t0))
        with app.extensions["dui"].engine.connect() as conn:
            from sqlalchemy import text

            first = conn.execute(text("SELECT body FROM resource_version LIMIT 1")).scalar_one()
        encrypted = bytes(first)[:1] != b"{"
        print(f"{kind}, bodies {'encrypted' if encrypted else 'plaintext'}: " + ", ".join(
            f"{name} {statistics.median(v):.0f}/s (best {max(v):.0f})" for name, v in results.items()))
    finally:
        app.extensions["dui"].dispose()
        drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["seal", "api"])
    parser.add_argument("backend", nargs="?", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.what == "seal":
        seal_costs()
    else:
        api_throughput(args.backend, args.rounds)


if __name__ == "__main__":
    main()
