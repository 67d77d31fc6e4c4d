"""``dui serve --server granian`` (two workers), one start for the module: the same app in each worker (FHIR reads
and writes, the body limit answered as FHIR by the app, the process environment kept out of the requests'),
``/metrics`` summing both workers, a killed worker respawned without leaving its gauges, the websocket channel
refused with a clear 501, an over-long request line or header field refused by the app as under gunicorn (414 and
431 as FHIR) and, past granian's own limits, by granian (bare), and SIGTERM: a request in flight finishes, exit 0,
the run's metric files gone. The test that stops the server is the last to use it; one more starts its own server
and kills its main process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from flask import Flask

from dui.audit import trail
from tests.conftest import TEST_MASTER_KEY_FILE, empty_database
from tests.helpers import patient
from tests.server.conftest import serve_process
from tests.server.test_metrics_server import TOKEN, capabilities, pool_pids, reach_both_workers, scrape

pytestmark = pytest.mark.server
MAX_BYTES = 64 * 1024  # DUI_MAX_REQUEST_BYTES of this server
FHIR_JSON = {"Content-Type": "application/fhir+json"}


@dataclass
class Served:
    base: str
    process: subprocess.Popen[bytes]
    metrics_parent: Path


@pytest.fixture(scope="module")
def granian(database_url: str, app: Flask, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    empty_database(app)
    parent = tmp_path_factory.mktemp("granian-metrics")
    env = {"DUI_DATABASE_URL": database_url, "DUI_MASTER_KEY_FILE": str(TEST_MASTER_KEY_FILE),
           "DUI_INSI_SIMULATOR_DIR": str(tmp_path_factory.mktemp("insi-simulator")), "DUI_LOG_LEVEL": "INFO",
           "DUI_METRICS_TOKEN": TOKEN, "DUI_METRICS_DIR": str(parent), "DUI_RATE_LIMIT": "0",
           "DUI_MAX_REQUEST_BYTES": str(MAX_BYTES),
           # granian copies the process environment into each request's: this must not read as a header
           "HTTP_AUTHORIZATION": "Bearer not-a-token"}
    with serve_process(env, tmp_path_factory.mktemp("granian"),
                       ["--server", "granian", "--workers", "2", "--threads", "8"]) as (base, process):
        yield Served(base, process, parent)


def test_the_app_answers_reads_and_writes(granian: Served) -> None:
    fhir = f"{granian.base}/fhir"
    statement = requests.get(f"{fhir}/metadata", timeout=10)
    assert statement.status_code == 200 and statement.json()["resourceType"] == "CapabilityStatement"
    assert statement.headers["X-Request-Id"]  # the app's own headers, whichever server
    # anonymous (allowed in dev): the server's HTTP_AUTHORIZATION variable is no request's header
    assert requests.get(f"{fhir}/Patient", timeout=10).status_code == 200
    created = requests.post(f"{fhir}/Patient", json=patient(family="Granian"), headers=FHIR_JSON, timeout=10)
    assert created.status_code == 201, created.text
    assert created.headers["Location"].startswith(f"{fhir}/Patient/")
    read = requests.get(f"{fhir}/Patient/{created.json()['id']}", timeout=10)
    assert read.status_code == 200 and read.json()["name"][0]["family"] == "Granian"


def test_a_body_above_the_limit_is_answered_413_as_fhir(granian: Served) -> None:
    big = patient(family="Lourde", text={"status": "generated", "div": "x" * (MAX_BYTES + 1)})
    answer = requests.post(f"{granian.base}/fhir/Patient", json=big, headers=FHIR_JSON, timeout=10)
    assert answer.status_code == 413
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "too-costly"
    assert "DUI_MAX_REQUEST_BYTES" in outcome["issue"][0]["diagnostics"]


def test_the_websocket_channel_is_refused_with_a_clear_501(granian: Served) -> None:
    upgrade = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    for headers in (upgrade, {}):
        answer = requests.get(f"{granian.base}/ws/subscriptions", headers=headers, timeout=10)
        assert answer.status_code == 501
        assert answer.headers["Content-Type"] == "application/problem+json"
        assert "--server gunicorn" in answer.json()["title"]


def _raw(base: str, request: bytes) -> bytes:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        with contextlib.suppress(OSError):  # granian may answer and close before it has read everything
            sock.sendall(request)
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
    return answer


def test_an_oversized_request_line_or_header_field_is_refused_as_under_gunicorn(granian: Served, app: Flask) -> None:
    """Past gunicorn's limits (dui.web.limits), the app refuses what granian lets through: 414 and 431 as FHIR."""
    fhir = f"{granian.base}/fhir"
    assert requests.get(f"{fhir}/Patient", params={"name": "a" * 8000}, timeout=10).status_code == 200
    line = requests.get(f"{fhir}/Patient", params={"name": "a" * 9000}, timeout=10)
    assert line.status_code == 414 and line.headers["X-Request-Id"]
    assert line.json()["resourceType"] == "OperationOutcome" and line.json()["issue"][0]["code"] == "too-costly"
    assert "8190 bytes" in line.json()["issue"][0]["diagnostics"]
    field = requests.get(f"{fhir}/metadata", headers={"X-Big": "v" * 9000}, timeout=10)
    assert field.status_code == 431 and field.json()["resourceType"] == "OperationOutcome"
    elsewhere = requests.get(f"{granian.base}/healthz", headers={"X-Big": "v" * 9000}, timeout=10)
    assert elsewhere.status_code == 431 and elsewhere.headers["Content-Type"] == "application/problem+json"
    with app.extensions["dui"].unit_of_work(write=False) as session:  # audited, as every refusal
        refused = [(r["action"], r["outcome"], r["status"], r["detail"]) for r, _ in trail.entries(session)
                   if r["status"] in (414, 431)]
    assert refused == [("request", "failed", 414, "LimitRequestLine"), ("request", "failed", 431,
                                                                         "LimitRequestHeaders"),
                       ("request", "failed", 431, "LimitRequestHeaders")]  # as gunicorn's (test_bounded_work)


def test_granian_answers_past_its_own_limits_itself(granian: Served) -> None:
    """Not as FHIR (the request never reaches the app): a bare status line, an empty body. The limits are hyper's:
    a URI of 64 KiB, 100 header fields, a head of about 400 KiB (docs/scaling.md)."""
    line = _raw(granian.base, b"GET /fhir/Patient?name=" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert line.startswith(b"HTTP/1.1 414 ") and b"content-length: 0\r\n" in line.lower()
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(101))
    many = _raw(granian.base, b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n")
    assert many.startswith(b"HTTP/1.1 431 ") and b"content-length: 0\r\n" in many.lower()
    large = _raw(granian.base, b"GET /fhir/metadata HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 1_000_000 + b"\r\n\r\n")
    assert large.startswith(b"HTTP/1.1 431 ")


def test_metrics_sum_both_workers_and_a_killed_worker_is_respawned(granian: Served) -> None:
    base = granian.base
    runs = [p for p in granian.metrics_parent.iterdir() if p.name.startswith("dui-metrics-")]
    assert len(runs) == 1
    run = runs[0]
    before = capabilities(scrape(base))
    sent = reach_both_workers(base, run, 8)
    for _ in range(4):  # whichever worker answers the scrape, it reports the sum
        assert capabilities(scrape(base)) == before + sent
    workers = pool_pids(scrape(base))
    assert len(workers) == 2
    gone = int(sorted(workers)[0])
    os.kill(gone, signal.SIGKILL)  # a worker that dies: granian spawns another, which removes the dead one's gauges
    deadline = time.monotonic() + 40
    while True:
        found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        with contextlib.suppress(requests.RequestException, AssertionError):
            found = scrape(base)
        if found and str(gone) not in pool_pids(found) and len(pool_pids(found)) == 2:
            break
        assert time.monotonic() < deadline, "no worker took the dead one's place"
        time.sleep(0.3)
    assert capabilities(found) == before + sent  # what the dead worker counted stays in the sum
    assert granian.process.poll() is None


def test_sigterm_lets_a_request_finish_then_exits_0_and_removes_the_metric_files(granian: Served) -> None:
    (run,) = (p for p in granian.metrics_parent.iterdir() if p.name.startswith("dui-metrics-"))
    body = json.dumps(patient(family="Tardive")).encode()
    host, port = granian.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:  # a request in flight: half its body sent
        sock.sendall(b"POST /fhir/Patient HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json\r\n"
                     b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:10])
        time.sleep(0.3)
        granian.process.send_signal(signal.SIGTERM)  # the master only, as systemd's KillMode=mixed
        time.sleep(1)
        sock.sendall(body[10:])
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 201 "), answer[:200]
    assert granian.process.wait(timeout=30) == 0
    assert not run.exists(), "the run's metric files outlived the server"
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{granian.base}/healthz", timeout=5)


def test_the_workers_stop_when_the_main_process_is_killed(database_url: str, app: Flask,
                                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    """gunicorn's workers notice their arbiter is gone; granian's would serve on, orphans, without
    ``dui.web.worker_app``'s parent-death signal."""
    env = {"DUI_DATABASE_URL": database_url, "DUI_MASTER_KEY_FILE": str(TEST_MASTER_KEY_FILE),
           "DUI_INSI_SIMULATOR_DIR": str(tmp_path_factory.mktemp("insi-simulator")),
           "DUI_METRICS_DIR": str(tmp_path_factory.mktemp("granian-killed"))}
    with serve_process(env, tmp_path_factory.mktemp("granian-killed"),
                       ["--server", "granian", "--workers", "1", "--threads", "2"]) as (base, process):
        workers = [stat.parent.name for stat in Path("/proc").glob("[0-9]*/stat")
                   if _field(stat, 1) == str(process.pid)]
        assert len(workers) == 1
        process.kill()
        process.wait()
        deadline = time.monotonic() + 10
        while Path(f"/proc/{workers[0]}").exists() and "Z" not in _state(workers[0]):
            assert time.monotonic() < deadline, "the worker outlived its main process"
            time.sleep(0.1)
        with pytest.raises(requests.ConnectionError):
            requests.get(f"{base}/healthz", timeout=5)


def _state(pid: str) -> str:
    return _field(Path(f"/proc/{pid}/stat"), 0)


def _field(stat: Path, index: int) -> str:
    """A field of /proc/PID/stat after the command: 0 the state, 1 the parent's pid ("" once the process is gone)."""
    with contextlib.suppress(OSError, IndexError):
        return stat.read_text().rpartition(")")[2].split()[index]
    return ""
