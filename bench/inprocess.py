"""CPU per request inside one process, without an HTTP server: the app's WSGI callable on a prebuilt environ.

    python bench/inprocess.py                      # PostgreSQL (BENCH_PG_ADMIN), 3,000 requests a round
    python bench/inprocess.py --backend sqlite --requests 2000

What the HTTP server, the load generator and the other threads add is left out, so that what the app itself spends
can be seen change by a few microseconds. One thread, one process; CPU time of the process (``time.process_time``).
Every workload runs in alternating rounds with the hot reads on psycopg directly (``dui.direct_sql``, the
service as it runs) and, as the baseline of the same run, through the ORM session (``DirectQuery.rows`` replaced by
its session path for those rounds); the best round of each is reported, with their ratio. A third variant builds
each search's page statement per request (``sql._simple_token`` and ``sql._simple_string`` off), as every search
did before those statements were prebuilt. Then the bare statements
alone: a read's SELECT through a read-only unit of work's session and on psycopg directly, on the same database.
"""

from __future__ import annotations

import argparse
import base64
import io
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

INS_SYSTEM = "urn:oid:1.2.250.1.213.1.4.8"


@contextmanager
def database(backend: str) -> Iterator[str]:
    from bench.encryption import database as migrated

    url, drop = migrated(backend, Path(tempfile.mkdtemp(prefix="bench-inprocess-")))
    try:
        yield url
    finally:
        drop()


def environ(method: str, path: str, query: str = "") -> dict[str, Any]:
    return {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "SERVER_NAME": "bench",
            "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(),
            "wsgi.errors": sys.stderr, "HTTP_HOST": "bench", "HTTP_ACCEPT": "application/fhir+json",
            "REMOTE_ADDR": "127.0.0.1", "wsgi.multithread": True, "wsgi.multiprocess": True, "wsgi.run_once": False,
            "wsgi.version": (1, 0)}


def per_request(app: Any, environs: list[dict[str, Any]], count: int) -> float:
    """Milliseconds of CPU per request over ``count`` requests (the environs in turn)."""
    def answered(status: str, _headers: Any, _exc: Any = None) -> None:
        assert status.startswith("200"), status

    call = app.wsgi_app
    started = time.process_time()
    for index in range(count):
        env = dict(environs[index % len(environs)])
        env["wsgi.input"] = io.BytesIO()
        b"".join(call(env, answered))
    return (time.process_time() - started) / count * 1000


def session_path() -> Callable[[], None]:
    """Send every ``DirectQuery`` through the session (the baseline); returns what puts it back."""
    from dui import direct_sql

    direct = direct_sql.DirectQuery.rows

    def through_session(self: direct_sql.DirectQuery, session: Any, params: Any) -> Any:
        return session.execute(self.statement, params).all()

    direct_sql.DirectQuery.rows = through_session  # type: ignore[method-assign]

    def restore() -> None:
        direct_sql.DirectQuery.rows = direct  # type: ignore[method-assign]
    return restore


def built_per_request() -> Callable[[], None]:
    """Build every search's page statement per request (no prebuilt token or string page); returns what puts the
    prebuilt ones back."""
    from dui.fhir import sql

    prebuilt = sql._simple_token, sql._simple_string
    sql._simple_token = sql._simple_string = lambda plan: None  # type: ignore[assignment]

    def restore() -> None:
        sql._simple_token, sql._simple_string = prebuilt
    return restore


def statements(app: Any, rid: str, count: int) -> dict[str, float]:
    """µs of CPU for a read's SELECT alone: through a read-only unit's session, and on psycopg directly."""
    from dui import direct_sql
    from dui.db import unit_of_work
    from dui.fhir import sql

    svc = app.extensions["dui"]
    params = {"rtype": "Patient", "id": rid}
    out: dict[str, float] = {}
    started = time.process_time()
    for _ in range(count):
        with unit_of_work(svc.session_factory, write=False) as session:
            session.execute(sql._READ.statement, params).all()
    out["session"] = (time.process_time() - started) / count * 1e6
    if svc.engine.dialect.name == "postgresql":
        started = time.process_time()
        for _ in range(count):
            direct_sql.run(svc.engine, sql._READ.sql, params)
        out["direct"] = (time.process_time() - started) / count * 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--requests", type=int, default=3000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each variant, alternating")
    args = parser.parse_args()
    os.environ.setdefault("DUI_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())

    from dui.app import create_app
    from dui.settings import Settings

    with database(args.backend) as url:
        app = create_app(Settings.from_env({"DUI_DATABASE_URL": url, "DUI_LOG_LEVEL": "WARNING",
                                            "DUI_RATE_LIMIT": "0", "DUI_MASTER_KEY": os.environ["DUI_MASTER_KEY"]}))
        logging.getLogger("dui.access").setLevel(logging.WARNING)
        try:
            http = app.test_client()
            ids = []
            for index in range(50):
                created = http.post("/fhir/Patient", json={
                    "resourceType": "Patient", "name": [{"family": f"Martin{index % 10}", "given": ["Jeanne"]}],
                    "identifier": [{"system": INS_SYSTEM, "value": f"2{index:014d}"}], "birthDate": "1938-04-02"},
                    headers={"Content-Type": "application/fhir+json"})
                assert created.status_code == 201, created.get_data(as_text=True)[:300]
                ids.append(created.get_json()["id"])
            workloads = {
                "read by id": [environ("GET", f"/fhir/Patient/{rid}") for rid in ids],
                "search by identifier": [environ("GET", "/fhir/Patient", f"identifier={INS_SYSTEM}|2{i:014d}")
                                         for i in range(50)],
                "search by family name (5 a page)": [environ("GET", "/fhir/Patient", f"family=Martin{i}")
                                                     for i in range(10)],
                "GET /healthz (the app's floor)": [environ("GET", "/healthz")],
            }
            print(f"{args.backend}, {args.requests} requests a round, best of {args.rounds} alternating rounds, "
                  f"load average {os.getloadavg()[0]:.2f}\n")
            print("| workload | direct reads (ms CPU) | through the session (ms CPU) | ratio | page statement built "
                  "per request (ms CPU) | ratio |")
            print("|---|---:|---:|---:|---:|---:|")
            for name, environs in workloads.items():
                per_request(app, environs, min(300, args.requests))  # warm: caches, prepared statements
                direct, session, built = [], [], []
                for _ in range(args.rounds):
                    direct.append(per_request(app, environs, args.requests))
                    for variant, kept in ((session_path, session), (built_per_request, built)):
                        restore = variant()
                        try:
                            kept.append(per_request(app, environs, args.requests))
                        finally:
                            restore()
                print(f"| {name} | {min(direct):.3f} | {min(session):.3f} | {min(direct) / min(session):.2f} | "
                      f"{min(built):.3f} | {min(direct) / min(built):.2f} |")
            bare = statements(app, ids[0], args.requests)
            print("\nA read's SELECT alone: " + ", ".join(f"{k} {v:.0f} µs" for k, v in bare.items()))
            print(f"load average after: {os.getloadavg()[0]:.2f}")
        finally:
            app.extensions["dui"].dispose()


if __name__ == "__main__":
    main()
