"""Benchmark driver: the same data and the same requests against DUI (PostgreSQL, SQLite) and a baseline.

    python bench/run.py compare --residents 500 --weeks 17          # DUI vs the baseline, ~110,000 resources
    python bench/run.py scale --from-residents 46 --to-residents 4600   # DUI on PostgreSQL, 10,000 -> 1,000,000

Each server is started here (``dui serve`` with gunicorn, 2 workers; the baseline ``sekmet serve``),
loaded through FHIR transactions of 100 entries, then driven by a closed-loop load generator (several
processes, one keep-alive connection each) for a fixed time per workload. Results are written as JSON in
``bench/results/`` and printed as Markdown. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import data  # noqa: E402
from ins import InsKind  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DUI = Path(sys.executable).with_name("dui")
PG_ADMIN = os.environ.get("BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
HEAVY = 999_999  # the resident with ~10,000 resources
JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


# -- servers --------------------------------------------------------------------------------------


class Server:
    def __init__(self, name: str, command: list[str], env: dict[str, str], port: int, workdir: Path,
                 database: str = "") -> None:
        self.name, self.command, self.env, self.port, self.workdir = name, command, env, port, workdir
        self.database = database  # a PostgreSQL URL or an SQLite file, for ANALYZE
        self.base = f"http://127.0.0.1:{port}/fhir"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.workdir / f"{self.name}.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(self.command, env=self.env, cwd=self.workdir, stdout=log, stderr=log,
                                        start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.base}/metadata", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} did not start; see {self.workdir / (self.name + '.log')}")

    def analyze(self) -> None:
        """Refresh the planner statistics after a bulk load, as autovacuum would (off on some machines)."""
        if self.database.startswith("postgresql"):
            subprocess.run(["psql", self.database, "-qc", "VACUUM ANALYZE"], check=True)
        elif self.database:
            import sqlite3

            with sqlite3.connect(self.database) as db:
                db.execute("ANALYZE")

    def rss_mb(self) -> float:
        assert self.process is not None
        parent = psutil.Process(self.process.pid)
        return sum(p.memory_info().rss for p in [parent, *parent.children(recursive=True)]) / 2**20

    def stop(self) -> None:
        """Stop the server and every process it started (gunicorn workers included)."""
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


def dui_server(kind: str, port: int, workdir: Path, workers: int, code: Path | None = None,
               http: str = "gunicorn", threads: int = 8) -> Server:
    """``dui serve --server HTTP`` on ``kind`` (postgresql, a fresh database; sqlite), from this checkout or from
    ``code`` (another checkout of the project, put first on PYTHONPATH: a before/after comparison in one run)."""
    if kind == "postgresql":
        name = f"dui_bench_{port}"
        subprocess.run(["psql", PG_ADMIN, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=True)
        subprocess.run(["psql", PG_ADMIN, "-qc", f"CREATE DATABASE {name}"], check=True)
        url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    else:
        url = f"sqlite:///{workdir / 'dui.sqlite'}"
    env = {**os.environ, "DUI_DATABASE_URL": url, "DUI_BASE_URL": f"http://127.0.0.1:{port}",
           "DUI_LOG_LEVEL": "WARNING", "DUI_MAX_COUNT": "1000",
           # every load-generator process calls from 127.0.0.1: per-address rate limits would throttle the run
           "DUI_RATE_LIMIT": "0", "DUI_AUTH_RATE_LIMIT": "0",
           "DUI_AUTH_TOKEN_LIFETIME": "3600"}  # one staff token for the whole run (--actor staff)
    if code is not None:
        env["PYTHONPATH"] = str(code)
    # in the server's own folder: the development keys (var/keys) are relative to it
    subprocess.run([str(DUI), "db", "upgrade"], env=env, cwd=workdir, check=True, capture_output=True)
    database = url if kind == "postgresql" else str(workdir / "dui.sqlite")
    server = ["--server", http] if http != "gunicorn" else []  # a checkout from before the option: gunicorn
    return Server(f"dui-{kind}", [str(DUI), "serve", "--port", str(port), "--workers", str(workers),
                                  "--threads", str(threads), *server], env, port, workdir, database)


def sekmet_server(port: int, workdir: Path) -> Server:
    venv = ROOT / "bench" / ".venv-baseline"
    if not (venv / "bin" / "sekmet").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "sekmet-fhir==0.1.1"], check=True)
    settings = workdir / "settings.yaml"
    settings.write_text(
        f"base_url: http://127.0.0.1:{port}/fhir\nhost: 127.0.0.1\nport: {port}\ndata_dir: {workdir / 'data'}\n"
        "log_inbound: false\nsimulator:\n  enabled: false\nvalidation:\n  inbound: strict\n"
    )
    return Server("sekmet", [str(venv / "bin" / "sekmet"), "serve", "-c", str(settings)], dict(os.environ), port,
                  workdir, str(workdir / "data" / "sekmet.db"))


# -- loading --------------------------------------------------------------------------------------


def bundles(first: int, last: int, weeks: int, heavy: bool) -> Iterator[dict[str, Any]]:
    for index in range(first, last):
        yield from data.resident_bundles(index, weeks)
    if heavy:
        yield from data.resident_bundles(HEAVY, 820)  # 820 weeks x 12 = 9,840 observations + the rest


def ingest(base: str, items: Iterator[dict[str, Any]], clients: int) -> dict[str, Any]:
    """POST every bundle, ``clients`` at a time; resources per second and per-request latencies."""
    sessions: dict[int, requests.Session] = {}
    latencies: list[float] = []
    failures: list[str] = []

    def post(bundle: dict[str, Any]) -> int:
        import threading

        session = sessions.setdefault(threading.get_ident(), requests.Session())
        started = time.perf_counter()
        response = session.post(base, data=json.dumps(bundle), headers={**JSON, "Prefer": "return=minimal"},
                                timeout=600)
        latencies.append(time.perf_counter() - started)
        if response.status_code != 200:
            failures.append(f"{response.status_code}: {response.text[:300]}")
        return len(bundle["entry"])

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        count = sum(pool.map(post, items))
    elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"{len(failures)} bundles failed, e.g. {failures[0]}")
    return {"resources": count, "seconds": round(elapsed, 1), "resources_per_s": round(count / elapsed),
            **_percentiles(latencies)}


# -- workloads ------------------------------------------------------------------------------------


def workloads(base: str, residents: int, rng: random.Random, everything_urls: list[str]) -> dict[str, list[Any]]:
    picks = [rng.randrange(residents) for _ in range(500)]
    families = sorted({data.identity(random.Random(7 * 1_000_003 + i), i).family for i in picks})
    out: dict[str, list[Any]] = {
        "read": [("GET", f"{base}/Patient/{data.resident_id(i)}", None) for i in picks],
        "search identifier": [("GET", f"{base}/Patient?identifier={InsKind.TEST.system}|{data.ins_of(i)}", None)
                              for i in picks],
        "search name": [("GET", f"{base}/Patient?family={f[:4]}", None) for f in families],
        "search code + date range": [
            ("GET", f"{base}/Observation?code=http://loinc.org|{code}"
                    f"&date=ge2026-{m:02d}-01&date=lt2026-{m + 1:02d}-01", None)
            for code in ("29463-7", "8867-4", "8310-5") for m in range(7, 11)],
        "search with _include": [
            ("GET", f"{base}/Observation?subject=Patient/{data.resident_id(i)}&code=http://loinc.org|29463-7"
                    "&_include=Observation:subject", None) for i in picks],
        "create": [("POST", f"{base}/Observation", json.dumps(_observation(i, rng))) for i in picks],
    }
    if everything_urls:
        out["$everything page (10,000 resources)"] = [("GET", url, None) for url in everything_urls]
    return out


def _observation(index: int, rng: random.Random) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": f"Patient/{data.resident_id(index)}"},
            "effectiveDateTime": "2026-11-02T08:00:00+01:00",
            "valueQuantity": {"value": rng.randint(55, 100), "unit": "/min", "system": "http://unitsofmeasure.org",
                              "code": "/min"}}


def staff_headers(server: Server) -> dict[str, str]:
    """A médecin of the residents' EHPAD: every request then goes through role authorization and establishment
    scoping (an anonymous caller, allowed in dev, is not restricted)."""
    login, password = "bench.medecin", "Banc-d-essai-2026!"
    subprocess.run([str(DUI), "users", "create", login, "--role", "medecin", "--establishment",
                    data.ESTABLISHMENT_FINESS, "--password-stdin"], env=server.env, cwd=server.workdir,
                   input=password.encode(), check=True, capture_output=True)
    answer = requests.post(server.base.removesuffix("/fhir") + "/auth/token", timeout=30,
                           data={"grant_type": "password", "username": login, "password": password})
    answer.raise_for_status()
    return {**JSON, "Authorization": f"Bearer {answer.json()['access_token']}"}


def everything_pages(base: str, pages: int = 100, headers: dict[str, str] | None = None) -> list[str]:
    """URLs of the first ``pages`` 100-entry pages of the heavy resident's $everything."""
    url = f"{base}/Patient/{data.resident_id(HEAVY)}/$everything?_count=100"
    urls = []
    while url and len(urls) < pages:
        response = requests.get(url, headers=headers or JSON, timeout=120)
        if response.status_code != 200:
            return []
        urls.append(url)
        url = next((lk["url"] for lk in response.json().get("link", []) if lk["relation"] == "next"), None)
    return urls


def _client(args: tuple[list[Any], float, int, dict[str, str]]) -> list[tuple[float, int]]:
    requests_, seconds, seed, headers = args
    rng = random.Random(seed)
    session = requests.Session()
    out = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        method, url, body = rng.choice(requests_)
        started = time.perf_counter()
        try:
            status = session.request(method, url, data=body, headers=headers, timeout=120).status_code
        except requests.RequestException:
            status = 599
        out.append((time.perf_counter() - started, status))
    return out


def drive(requests_: list[Any], seconds: float, clients: int, pool: Any,
          headers: dict[str, str] | None = None) -> dict[str, Any]:
    results = pool.map(_client, [(requests_, seconds, n, headers or JSON) for n in range(clients)])
    samples = [s for r in results for s in r]
    errors = sum(1 for _, status in samples if status >= 400)
    return {"requests": len(samples), "errors": errors, "req_per_s": round(len(samples) / seconds, 1),
            **_percentiles([t for t, _ in samples])}


def _percentiles(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        return {}
    ordered = sorted(latencies)
    q = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else [ordered[0]] * 99
    return {"p50_ms": round(q[49] * 1000, 1), "p95_ms": round(q[94] * 1000, 1), "p99_ms": round(q[98] * 1000, 1)}


# -- commands -------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1), "python": platform.python_version(),
            "system": platform.platform()}


def compare(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"kind": "compare", "machine": machine(), "residents": args.residents,
                              "weeks": args.weeks, "duration_s": args.duration, "clients": args.clients,
                              "servers": {}}
    with multiprocessing.Pool(args.clients) as pool:
        for number, name in enumerate(args.servers.split(",")):
            workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
            port = 18100 + number
            server = sekmet_server(port, workdir) if name == "sekmet" else \
                dui_server(name.split("-", 1)[1], port, workdir, args.workers)
            server.start()
            try:
                print(f"[{name}] loading", file=sys.stderr, flush=True)
                ingest(server.base, iter([data.establishment_bundle()]), 1)
                loaded = ingest(server.base, bundles(0, args.residents, args.weeks, heavy=args.heavy),
                                args.ingest_clients)
                server.analyze()
                headers = staff_headers(server) if args.actor == "staff" and name != "sekmet" else JSON
                result: dict[str, Any] = {"ingest": loaded, "workloads": {}, "actor": args.actor}
                urls = everything_pages(server.base, headers=headers)
                for label, reqs in workloads(server.base, args.residents, random.Random(1), urls).items():
                    print(f"[{name}] {label}", file=sys.stderr, flush=True)
                    result["workloads"][label] = drive(reqs, args.duration, args.clients, pool, headers)
                result["rss_mb"] = round(server.rss_mb(), 1)
                report["servers"][name] = result
            finally:
                server.stop()
                shutil.rmtree(workdir, ignore_errors=True)
    return report


def scale(args: argparse.Namespace) -> dict[str, Any]:
    """Identifier search latency and server memory at two sizes of the same store (DUI on PostgreSQL)."""
    report: dict[str, Any] = {"kind": "scale", "machine": machine(), "weeks": args.weeks, "steps": []}
    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    server = dui_server("postgresql", 18200, workdir, args.workers)
    server.start()
    try:
        with multiprocessing.Pool(args.clients) as pool:
            loaded_to = 0
            ingest(server.base, iter([data.establishment_bundle()]), 1)
            for target in (args.from_residents, args.to_residents):
                ingested = ingest(server.base, bundles(loaded_to, target, args.weeks, heavy=False),
                                  args.ingest_clients)
                server.analyze()
                loaded_to = target
                count = requests.get(f"{server.base}/Observation?_summary=count", timeout=600).json()["total"]
                mix = workloads(server.base, target, random.Random(2), [])
                warm = [r for label in ("read", "search identifier", "search with _include") for r in mix[label]]
                drive(warm, args.duration, args.clients, pool)  # the same warm-up at every size
                step = {"residents": target, "observations": count, "ingest": ingested,
                        "search identifier": drive(mix["search identifier"], args.duration, args.clients, pool),
                        "rss_mb": round(server.rss_mb(), 1)}
                report["steps"].append(step)
                print(json.dumps(step), file=sys.stderr, flush=True)
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = []
    if report["kind"] == "compare":
        servers = list(report["servers"])
        lines.append("| workload | " + " | ".join(f"{s} req/s (p50 / p95 / p99 ms)" for s in servers) + " |")
        lines.append("|---|" + "---|" * len(servers))
        labels = list(next(iter(report["servers"].values()))["workloads"])
        for label in labels:
            cells = []
            for s in servers:
                w = report["servers"][s]["workloads"].get(label)
                cells.append("n/a" if not w else f"{w['req_per_s']} ({w['p50_ms']} / {w['p95_ms']} / {w['p99_ms']})"
                             + (f", {w['errors']} errors" if w["errors"] else ""))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("| transaction ingest, resources/s | " + " | ".join(
            str(report["servers"][s]["ingest"]["resources_per_s"]) for s in servers) + " |")
        lines.append("| server memory after the run, MB | " + " | ".join(
            str(report["servers"][s]["rss_mb"]) for s in servers) + " |")
    else:
        lines.append("| residents | Observations | ingest res/s | identifier req/s | p50 / p95 / p99 ms | RSS MB |")
        lines.append("|---|---|---|---|---|---|")
        for step in report["steps"]:
            w = step["search identifier"]
            lines.append(f"| {step['residents']} | {step['observations']} | {step['ingest']['resources_per_s']} | "
                         f"{w['req_per_s']} | {w['p50_ms']} / {w['p95_ms']} / {w['p99_ms']} | {step['rss_mb']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("compare", "scale"):
        p = sub.add_parser(name)
        p.add_argument("--weeks", type=int, default=17, help="weeks of vital signs per resident")
        p.add_argument("--duration", type=float, default=20, help="seconds per workload")
        p.add_argument("--clients", type=int, default=8, help="load-generator processes")
        p.add_argument("--ingest-clients", type=int, default=4, help="bundles posted at once")
        p.add_argument("--workers", type=int, default=2, help="gunicorn workers of dui serve")
    sub.choices["compare"].add_argument("--residents", type=int, default=500)
    sub.choices["compare"].add_argument("--servers", default="dui-postgresql,dui-sqlite,sekmet")
    sub.choices["compare"].add_argument("--no-heavy", dest="heavy", action="store_false",
                                        help="leave out the resident with 10,000 resources")
    sub.choices["compare"].add_argument("--actor", choices=("anonymous", "staff"), default="anonymous",
                                        help="who DUI's requests come from: anonymous (development), or a médecin "
                                             "of the residents' EHPAD (authorization and scoping on every request)")
    sub.choices["scale"].add_argument("--from-residents", type=int, default=46)
    sub.choices["scale"].add_argument("--to-residents", type=int, default=4600)
    args = parser.parse_args()
    report = compare(args) if args.command == "compare" else scale(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}-{args.command}.json"
    out.write_text(json.dumps(report, indent=2))
    print(markdown(report))
    print(f"\nwritten to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
