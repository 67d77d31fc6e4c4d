"""Bulk export at scale: memory of the server and the worker while they export N resources, and the round trip.

    python bench/export.py --resources 50000          # a quick check
    python bench/export.py --resources 1000000        # issue 17: 1 M resources

1. N resources (``bench/data.py``'s residents, 17 weeks each) are loaded into a fresh PostgreSQL database through
   ``dui serve`` (FHIR transactions of 100 entries, as ``bench/run.py`` loads them).
2. ``dui worker --once`` is run until a pass rebuilds no DLU (after a load every resident's DLU is due: rebuilt
   during the export, they would change the store under it and weigh on the worker), then
   ``dui worker`` is started beside the server, both are left idle and sampled (their baseline RSS), then a
   system-level ``$export`` is kicked off, its status polled every second until the manifest, and every file
   downloaded. The RSS of the server (gunicorn's master and workers) and of the worker is sampled every 0.5 s from the
   kick-off to the last byte downloaded.
3. The files are imported into a second, empty database with ``dui import --ndjson`` (its RSS sampled too).
4. Both databases are read back, each by a process of its own (``--digest``), as two streams of
   ``type, id, sha256`` in the same order: the resource's stored JSON with ``meta.versionId`` and
   ``meta.lastUpdated`` left out, canonicalised (keys sorted, no spaces, decimals as written). The streams are
   compared one resource at a time, never held in memory: every type's count and every resource's digest. The
   export runs as the anonymous caller, outside the establishment: a Patient whose identity is not qualified goes
   out without its INS (the sharing gate), so the source side also gives the digest of the Patient as the gate lets
   it out, and a resource equal to that one is counted apart ("equal but the INS withheld").

Results go to ``bench/results/`` as JSON and to stdout as Markdown. The databases are dropped at the end
(``--keep`` keeps them).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import psutil
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import data  # noqa: E402
from bench.run import DUI, PG_ADMIN, RESULTS, Server, bundles, ingest, machine  # noqa: E402

PORT = 18300
MB = 2**20
# One master key for every process of a run (server, worker, importer, digests): each database's data keys are
# wrapped by it. Generated per run, never written to disk.
os.environ.setdefault("DUI_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())


# -- memory sampling ------------------------------------------------------------------------------


def tree_rss(pid: int) -> int:
    """RSS of a process and of all its descendants, in bytes (0 once it is gone)."""
    try:
        parent = psutil.Process(pid)
        procs = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total


class Sampler:
    """Samples the RSS of named process trees every ``period`` seconds, in a thread, until stopped."""

    def __init__(self, pids: dict[str, int], period: float = 0.5) -> None:
        self.pids, self.period = pids, period
        self.samples: dict[str, list[tuple[float, int]]] = {name: [] for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.started = 0.0

    def __enter__(self) -> Sampler:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            now = time.monotonic() - self.started
            for name, pid in self.pids.items():
                rss = tree_rss(pid)
                if rss:
                    self.samples[name].append((now, rss))
            if self._stop.wait(self.period):
                return

    def peak_mb(self, name: str) -> float:
        return round(max((rss for _, rss in self.samples[name]), default=0) / MB, 1)

    def mean_mb(self, name: str) -> float:
        values = [rss for _, rss in self.samples[name]]
        return round(sum(values) / len(values) / MB, 1) if values else 0.0

    def at_mb(self, name: str, seconds: float) -> float:
        """The first sample taken at or after ``seconds``."""
        values = [rss for t, rss in self.samples[name] if t >= seconds] or [rss for _, rss in self.samples[name]]
        return round(values[0] / MB, 1) if values else 0.0


# -- databases and processes ----------------------------------------------------------------------


def fresh_database(name: str) -> str:
    subprocess.run(["psql", PG_ADMIN, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=True)
    subprocess.run(["psql", PG_ADMIN, "-qc", f"CREATE DATABASE {name}"], check=True)
    return PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def drop_database(name: str) -> None:
    subprocess.run(["psql", PG_ADMIN, "-qc", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], check=True)


def dui_env(url: str, workdir: Path) -> dict[str, str]:
    return {**os.environ, "DUI_DATABASE_URL": url, "DUI_BASE_URL": f"http://127.0.0.1:{PORT}",
            "DUI_LOG_LEVEL": "WARNING", "DUI_RATE_LIMIT": "0", "DUI_AUTH_RATE_LIMIT": "0",
            "DUI_EXPORT_DIR": str(workdir / "exports")}


def upgrade(env: dict[str, str]) -> None:
    subprocess.run([str(DUI), "db", "upgrade"], env=env, check=True, capture_output=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the process group this script started, then SIGKILL if it lingers."""
    import signal

    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def drain(env: dict[str, str], workdir: Path, most: int = 200) -> dict[str, Any]:
    """``dui worker --once`` until a pass rebuilds no DLU: after a load, every resident's DLU is due (100 a pass),
    and rebuilding them while the export runs would change the store under it and weigh on the worker's memory."""
    started = time.monotonic()
    rebuilt = passes = 0
    while passes < most:
        passes += 1
        done = subprocess.run([str(DUI), "worker", "--once"], env=env, cwd=workdir, capture_output=True, text=True)
        line = next((x for x in done.stdout.splitlines() if "DLU rebuilt" in x), "")
        count = int(line.split()[2]) if line else 0
        rebuilt += count
        if done.returncode != 0 or count == 0:
            break
    return {"passes": passes, "DLU rebuilt": rebuilt, "seconds": round(time.monotonic() - started, 1)}


# -- the export -----------------------------------------------------------------------------------


def run_export(server: Server, worker_pid: int, download: Path, idle: float) -> dict[str, Any]:
    """Kick-off, status until complete, every file downloaded; RSS of both processes sampled throughout."""
    pids = {"server": server.process.pid, "worker": worker_pid}  # type: ignore[union-attr]
    with Sampler(pids) as before:
        time.sleep(idle)
    headers = {"Accept": "application/fhir+json", "Prefer": "respond-async"}
    session = requests.Session()
    polls = 0
    with Sampler(pids) as during:
        started = time.monotonic()
        kick = session.get(f"{server.base}/$export", headers=headers, timeout=60)
        if kick.status_code != 202:
            raise RuntimeError(f"kick-off answered {kick.status_code}: {kick.text[:300]}")
        status_url = kick.headers["Content-Location"]
        while True:
            answer = session.get(status_url, headers={"Accept": "application/fhir+json"}, timeout=60)
            polls += 1
            if answer.status_code == 200:
                break
            if answer.status_code != 202:
                raise RuntimeError(f"status answered {answer.status_code}: {answer.text[:300]}")
            time.sleep(1)
        completed = time.monotonic()
        manifest = answer.json()
        files = []
        for output in manifest["output"]:
            name = output["url"].rsplit("/", 1)[1]
            size = lines = 0
            with session.get(output["url"], stream=True, timeout=600) as got, open(download / name, "wb") as out:
                if got.status_code != 200:
                    raise RuntimeError(f"{name}: {got.status_code}")
                for chunk in got.iter_content(MB):
                    out.write(chunk)
                    size += len(chunk)
                    lines += chunk.count(b"\n")
            files.append({"type": output["type"], "name": name, "manifest count": output["count"], "lines": lines,
                          "bytes": size})
        downloaded = time.monotonic()
    session.delete(status_url, timeout=60)
    resources = sum(f["manifest count"] for f in files)
    return {
        "resources": resources, "files": len(files), "bytes": sum(f["bytes"] for f in files),
        "export seconds": round(completed - started, 1),
        "export resources/s": round(resources / (completed - started)),
        "download seconds": round(downloaded - completed, 1),
        "status polls": polls,
        "lines equal to manifest counts": all(f["lines"] == f["manifest count"] for f in files),
        "rss mb": {name: {"baseline": before.mean_mb(name), "baseline peak": before.peak_mb(name),
                          "peak": during.peak_mb(name), "samples": len(during.samples[name])} for name in pids},
        "file list": files,
    }


def run_import(env: dict[str, str], folder: Path, workdir: Path) -> dict[str, Any]:
    with open(workdir / "import.log", "wb") as log:
        started = time.monotonic()
        process = subprocess.Popen([str(DUI), "import", "--ndjson", str(folder)], env=env, cwd=workdir,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        with Sampler({"importer": process.pid}) as sampler:
            code = process.wait()
        elapsed = time.monotonic() - started
    tail = (workdir / "import.log").read_text(errors="replace").strip().splitlines()[-1:]
    if code != 0:
        raise RuntimeError(f"dui import failed ({code}): {tail}")
    return {"seconds": round(elapsed, 1), "summary": tail[0] if tail else "",
            "rss mb": {"after start-up (5 s)": sampler.at_mb("importer", 5.0), "peak": sampler.peak_mb("importer"),
                       "samples": len(sampler.samples["importer"])}}


# -- the comparison -------------------------------------------------------------------------------


def digest_stream(url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DUI_DATABASE_URL": url, "DUI_LOG_LEVEL": "WARNING"}
    return subprocess.Popen([sys.executable, __file__, "--digest"], env=env, stdout=subprocess.PIPE,
                            start_new_session=True)


def _records(stream: IO[bytes]) -> Iterator[tuple[tuple[str, str], str, str]]:
    last: tuple[str, str] | None = None
    for line in stream:
        rtype, rid, digest, shared = line.decode().rstrip("\n").split("\t")
        key = (rtype, rid)
        if last is not None and key <= last:
            raise RuntimeError(f"digest stream out of order at {rtype}/{rid}")
        last = key
        yield key, digest, shared


def compare(url_a: str, url_b: str) -> dict[str, Any]:
    """Merge the two ordered digest streams: counts per type, resources missing on a side, resources different."""
    a, b = digest_stream(url_a), digest_stream(url_b)
    assert a.stdout is not None and b.stdout is not None
    counts: dict[str, list[int]] = {}
    only_a: list[str] = []
    only_b: list[str] = []
    different: list[str] = []
    withheld: list[str] = []  # equal once the INS the sharing gate withholds from an external requester is left out
    equal = 0
    left, right = _records(a.stdout), _records(b.stdout)
    x, y = next(left, None), next(right, None)
    while x is not None or y is not None:
        if y is None or (x is not None and x[0] < y[0]):
            counts.setdefault(x[0][0], [0, 0])[0] += 1  # type: ignore[index]
            only_a.append("/".join(x[0]))  # type: ignore[index]
            x = next(left, None)
        elif x is None or y[0] < x[0]:
            counts.setdefault(y[0][0], [0, 0])[1] += 1
            only_b.append("/".join(y[0]))
            y = next(right, None)
        else:
            pair = counts.setdefault(x[0][0], [0, 0])
            pair[0] += 1
            pair[1] += 1
            if x[1] == y[1]:
                equal += 1
            elif x[2] == y[1]:
                withheld.append("/".join(x[0]))
            else:
                different.append("/".join(x[0]))
            x, y = next(left, None), next(right, None)
    if a.wait() or b.wait():
        raise RuntimeError("a digest process failed")
    return {"counts": {t: {"source": n[0], "imported": n[1]} for t, n in sorted(counts.items())},
            "counts equal": all(n[0] == n[1] for n in counts.values()),
            "equal": equal, "equal but the INS withheld": len(withheld), "withheld examples": withheld[:3],
            "only in source": len(only_a), "only in imported": len(only_b),
            "different": len(different), "examples": (only_a + only_b + different)[:10],
            "same": not only_a and not only_b and not different}


def _canonical_decimal(text: str) -> dict[str, str]:
    return {"$decimal": text}


def canonical(body: bytes) -> bytes:
    """The resource without its version and update time, keys sorted, decimals as written."""
    resource = json.loads(body, parse_float=_canonical_decimal, parse_int=_canonical_decimal)
    meta = resource.get("meta")
    if isinstance(meta, dict):
        meta.pop("versionId", None)
        meta.pop("lastUpdated", None)
        if not meta:
            del resource["meta"]
    return json.dumps(resource, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest_main() -> None:
    """Write ``type, id, sha256`` of every current resource of DUI_DATABASE_URL, ordered by type and id."""
    from sqlalchemy import select, tuple_

    from dui.app import create_app
    from dui.auth.actor import CLI
    from dui.fhir.tables import resource
    from dui.residents.sharing import gate_version

    app = create_app()
    out = sys.stdout.buffer
    with app.app_context():
        svc = app.extensions["dui"]
        last: tuple[str, str] | None = None
        while True:
            with svc.unit_of_work(write=False) as session:
                ctx = svc.fhir_context(session, CLI)
                query = select(resource.c.rid, resource.c.res_type, resource.c.res_id).where(
                    resource.c.deleted.is_(False))
                if last is not None:
                    query = query.where(tuple_(resource.c.res_type, resource.c.res_id) > last)
                rows = session.execute(query.order_by(resource.c.res_type, resource.c.res_id).limit(2000)).all()
                if not rows:
                    break
                versions = ctx.repo.fetch([row.rid for row in rows])
                for row, version in zip(rows, versions, strict=True):
                    assert version.id == row.res_id and version.body is not None
                    digest = hashlib.sha256(canonical(version.body)).hexdigest()
                    # as it may leave the system for an external requester (a partner, the anonymous caller)
                    gated = gate_version(version)
                    shared = digest if gated.body == version.body else \
                        hashlib.sha256(canonical(gated.body)).hexdigest()  # type: ignore[arg-type]
                    out.write(f"{row.res_type}\t{row.res_id}\t{digest}\t{shared}\n".encode())
                last = (rows[-1].res_type, rows[-1].res_id)
    out.flush()


# -- driver ---------------------------------------------------------------------------------------


def load_average() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resources", type=int, default=1_000_000, help="about how many resources to load")
    parser.add_argument("--weeks", type=int, default=17, help="weeks of vital signs per resident")
    parser.add_argument("--ingest-clients", type=int, default=4, help="bundles posted at once")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers of dui serve")
    parser.add_argument("--file-bytes", type=int, default=16 * MB,
                        help="DUI_EXPORT_FILE_BYTES of the run (default 16 MiB, a quarter of the service's default, so "
                             "that the large types are split into several files at 100,000 resources already)")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of baseline sampling before the kick-off")
    parser.add_argument("--keep", action="store_true", help="keep the databases and the files")
    parser.add_argument("--digest", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.digest:
        digest_main()
        return

    residents = max(1, math.ceil(args.resources / data.resources_per_resident(args.weeks)))
    tag = f"dui_bench_export_{args.resources}"
    report: dict[str, Any] = {"kind": "export", "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine(),
                              "python": platform.python_version(), "residents": residents, "weeks": args.weeks,
                              "load average": {"start": load_average()}}
    os.environ["DUI_EXPORT_FILE_BYTES"] = str(args.file_bytes)
    report["file bytes"] = args.file_bytes
    workdir = Path(tempfile.mkdtemp(prefix="bench-export-"))
    download = workdir / "download"
    download.mkdir()
    source_db, target_db = f"{tag}_a", f"{tag}_b"
    try:
        source_url = fresh_database(source_db)
        env = dui_env(source_url, workdir)
        upgrade(env)
        server = Server("dui-postgresql", [str(DUI), "serve", "--port", str(PORT), "--workers", str(args.workers),
                                           "--threads", "8"], env, PORT, workdir, source_url)
        server.start()
        worker = None
        try:
            print(f"loading {residents} residents", file=sys.stderr, flush=True)
            ingest(server.base, iter([data.establishment_bundle()]), 1)
            report["ingest"] = ingest(server.base, bundles(0, residents, args.weeks, heavy=False),
                                      args.ingest_clients)
            server.analyze()
            print(f"loaded: {report['ingest']}", file=sys.stderr, flush=True)
            report["drain"] = drain(env, workdir)
            print(f"drained: {report['drain']}", file=sys.stderr, flush=True)
            with open(workdir / "worker.log", "wb") as log:
                worker = subprocess.Popen([str(DUI), "worker", "--interval", "1"], env=env, cwd=workdir,
                                          stdout=log, stderr=log, start_new_session=True)
            time.sleep(3)
            report["load average"]["before export"] = load_average()
            report["export"] = run_export(server, worker.pid, download, args.idle)
            report["load average"]["after export"] = load_average()
            print(f"exported: { {k: v for k, v in report['export'].items() if k != 'file list'} }",
                  file=sys.stderr, flush=True)
        finally:
            if worker is not None:
                stop(worker)
            server.stop()
        target_url = fresh_database(target_db)
        target_env = dui_env(target_url, workdir)
        upgrade(target_env)
        report["import"] = run_import(target_env, download, workdir)
        report["import"]["resources/s"] = round(report["export"]["resources"] / report["import"]["seconds"])
        report["load average"]["after import"] = load_average()
        print(f"imported: {report['import']}", file=sys.stderr, flush=True)
        started = time.monotonic()
        report["comparison"] = compare(source_url, target_url)
        report["comparison"]["seconds"] = round(time.monotonic() - started, 1)
        report["load average"]["end"] = load_average()
    finally:
        if not args.keep:
            drop_database(source_db)
            drop_database(target_db)
            shutil.rmtree(workdir, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{time.strftime('%Y%m%d-%H%M%S')}-export-{args.resources}.json"
    out.write_text(json.dumps(report, indent=2))
    print(markdown(report))
    print(f"\nwritten to {out}" + (f"; kept {workdir}, {source_db}, {target_db}" if args.keep else ""),
          file=sys.stderr)


def markdown(report: dict[str, Any]) -> str:
    e, i, c = report["export"], report["import"], report["comparison"]
    rss = e["rss mb"]
    early, late = i["rss mb"]["after start-up (5 s)"], i["rss mb"]["peak"]

    def ratio(peak: float, base: float) -> str:
        return f"{peak / base:.2f}x" if base else "n/a"

    rows = [
        ("resources exported (files, bytes)", f"{e['resources']:,} ({e['files']} files, {e['bytes'] / MB:,.0f} MiB)"),
        ("export: kick-off to manifest", f"{e['export seconds']} s, {e['export resources/s']:,} resources/s"),
        ("download of every file", f"{e['download seconds']} s"),
        ("server RSS: idle -> peak", f"{rss['server']['baseline']} -> {rss['server']['peak']} MB "
                                     f"({ratio(rss['server']['peak'], rss['server']['baseline'])})"),
        ("worker RSS: idle -> peak", f"{rss['worker']['baseline']} -> {rss['worker']['peak']} MB "
                                     f"({ratio(rss['worker']['peak'], rss['worker']['baseline'])})"),
        ("import (`dui import --ndjson`)", f"{i['seconds']} s, {i['resources/s']:,} resources/s"),
        ("importer RSS: after start-up -> peak", f"{early} -> {late} MB ({ratio(late, early)})"),
        ("round trip", ("same resources" if c["same"] else "DIFFERENT")
         + f": {c['equal']:,} digests equal, {c['equal but the INS withheld']:,} equal but for the INS the sharing "
           f"gate withholds, {c['different']} different, {c['only in source']} missing, "
           f"{c['only in imported']} extra; counts per type equal: {c['counts equal']}"),
        ("load average (1/5/15 min) before export / end", f"{report['load average']['before export']} / "
                                                          f"{report['load average']['end']}"),
    ]
    lines = [f"N = {report['ingest']['resources'] + 1:,} resources loaded ({report['residents']} residents, "
             f"ingest {report['ingest']['resources_per_s']:,} resources/s)", "", "| measure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
