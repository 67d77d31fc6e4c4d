"""Bounded work as `dui serve` runs it: ReDoS patches answered at once (RE2), a CPU-burning request stopped at
DUI_REQUEST_BUDGET while the worker survives and /healthz answers, gunicorn's size limits answered as FHIR, and
an audit entry for a request in flight in a worker that gunicorn aborts."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from flask import Flask

from dui.audit import trail
from tests.conftest import TEST_MASTER_KEY_FILE, empty_database
from tests.server.conftest import running_server

BUDGET = 2.0
SECURITY = {"Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'", "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
BURNING_PATH = ("Patient.name.where(%context.descendants().where(%context.descendants().count() > 0).count() > 0)"
                ".first()")
REDOS_PATH = "Patient.name.where('aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!'.matches('^(a+)+$'))"
FHIR_JSON = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}


def _env(database_url: str, tmp: Path, **extra: str) -> dict[str, str]:
    return {"DUI_DATABASE_URL": database_url, "DUI_MASTER_KEY_FILE": str(TEST_MASTER_KEY_FILE),
            "DUI_INSI_SIMULATOR_DIR": str(tmp / "insi"), "DUI_RATE_LIMIT": "600000",
            "DUI_RATE_LIMIT_BURST": "100000", **extra}


def workers_of(base: str) -> set[int]:
    """The pids of the gunicorn workers of the `dui serve` listening at ``base``."""
    port = str(urlsplit(base).port)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"serve" in argv and b"--port" in argv and argv[argv.index(b"--port") + 1] == port.encode():
            children = (entry / "task" / entry.name / "children").read_text().split()
            return {int(pid) for pid in children}
    raise AssertionError(f"no dui serve on port {port}")


@pytest.fixture(scope="module")
def bounded_server(database_url: str, app: Flask, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("bounded")
    with running_server(_env(database_url, tmp, DUI_REQUEST_BUDGET=str(BUDGET)), tmp, workers=2, threads=8) as base:
        yield base


@pytest.fixture
def base(bounded_server: str, app: Flask) -> str:
    empty_database(app)
    return bounded_server


def create_patient(base: str, names: int = 1) -> str:
    resource = {"resourceType": "Patient", "gender": "female", "birthDate": "1931-05-02",
                "name": [{"family": f"Famille{i}", "given": ["Anne"]} for i in range(names)]}
    answer = requests.post(f"{base}/fhir/Patient", data=json.dumps(resource), headers=FHIR_JSON, timeout=30)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def delete_patch(path: str) -> str:
    return json.dumps({"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "delete"}, {"name": "path", "valueString": path}]}]})


class HealthProbe:
    """/healthz asked every 100 ms in a thread; the slowest answer seen, and any failure."""

    def __init__(self, base: str) -> None:
        self.base, self.slowest, self.failures, self.count = base, 0.0, [], 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                status = requests.get(f"{self.base}/healthz", timeout=5).status_code
                if status != 200:
                    self.failures.append(status)
            except requests.RequestException as exc:
                self.failures.append(repr(exc))
            self.slowest = max(self.slowest, time.perf_counter() - started)
            self.count += 1
            self._stop.wait(0.1)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def test_sixteen_concurrent_redos_patches_answer_within_the_budget(base: str) -> None:
    pid = create_patient(base)
    before = workers_of(base)

    def patch(_: int) -> tuple[int, float]:
        started = time.perf_counter()
        answer = requests.patch(f"{base}/fhir/Patient/{pid}", data=delete_patch(REDOS_PATH), headers=FHIR_JSON,
                                timeout=60)
        return answer.status_code, time.perf_counter() - started

    with HealthProbe(base) as probe, ThreadPoolExecutor(16) as pool:
        results = list(pool.map(patch, range(16)))
    assert [status for status, _ in results] == [200] * 16
    assert max(elapsed for _, elapsed in results) < BUDGET
    assert probe.count > 0 and not probe.failures and probe.slowest < 1
    assert workers_of(base) == before


def test_cpu_burning_request_is_stopped_at_the_budget_and_the_worker_survives(base: str, app: Flask) -> None:
    pid = create_patient(base, names=60)
    before = workers_of(base)
    with HealthProbe(base) as probe:
        started = time.perf_counter()
        answer = requests.patch(f"{base}/fhir/Patient/{pid}", data=delete_patch(BURNING_PATH),
                                headers={**FHIR_JSON, "X-Request-Id": "burning-patch-server-1"}, timeout=60)
        elapsed = time.perf_counter() - started
        time.sleep(0.3)
    assert answer.status_code == 503, answer.text
    assert BUDGET <= elapsed < BUDGET + 2
    assert answer.headers["Retry-After"] and answer.json()["issue"][0]["code"] == "too-costly"
    assert probe.count >= 10 and not probe.failures and probe.slowest < 1
    assert workers_of(base) == before  # no worker was killed or replaced
    assert requests.get(f"{base}/fhir/Patient/{pid}", timeout=10).headers["ETag"] == 'W/"1"'
    with app.extensions["dui"].unit_of_work(write=False) as session:
        entries = [row for row, _ in trail.entries(session) if row["request_id"] == "burning-patch-server-1"]
    assert [(r["action"], r["outcome"], r["status"]) for r in entries] == [("patch", "error", 503)]


def test_size_limits_are_answered_as_fhir_with_the_security_headers(base: str, app: Flask) -> None:
    long_url = f"{base}/fhir/Patient?name=" + "a" * 100_000
    answer = requests.get(long_url, timeout=30)
    assert answer.status_code == 414
    assert answer.headers["Content-Type"].startswith("application/fhir+json")
    assert answer.json()["resourceType"] == "OperationOutcome" and answer.json()["issue"][0]["code"] == "too-costly"
    for name, value in SECURITY.items():
        assert answer.headers[name] == value
    answer = requests.get(f"{base}/fhir/metadata", headers={"X-Padding": "b" * 20_000}, timeout=30)
    assert answer.status_code == 431 and answer.headers["Content-Type"].startswith("application/fhir+json")
    assert answer.json()["issue"][0]["code"] == "too-costly"
    for name, value in SECURITY.items():
        assert answer.headers[name] == value
    answer = requests.get(f"{base}/auth/jwks?x=" + "c" * 100_000, timeout=30)
    assert answer.status_code == 414 and answer.headers["Content-Type"] == "application/problem+json"
    assert answer.json()["status"] == 414
    with app.extensions["dui"].unit_of_work(write=False) as session:
        refused = [(r["action"], r["outcome"], r["status"], r["detail"]) for r, _ in trail.entries(session)]
    assert refused == [("request", "failed", 414, "LimitRequestLine"), ("request", "failed", 431,
                                                                         "LimitRequestHeaders"),
                       ("request", "failed", 414, "LimitRequestLine")]


def test_a_request_in_flight_when_its_worker_is_aborted_leaves_an_audit_entry(
        database_url: str, app: Flask, tmp_path_factory: pytest.TempPathFactory) -> None:
    """gunicorn's arbiter aborts a worker past --timeout with SIGABRT; this test sends that signal itself, while a
    request is in flight (its body still coming), since no request a client can send holds the worker's main
    thread that long any more."""
    empty_database(app)
    tmp = tmp_path_factory.mktemp("aborted")
    with running_server(_env(database_url, tmp), tmp, workers=1, threads=4) as served:
        [worker] = workers_of(served)
        port = urlsplit(served).port
        with socket.create_connection(("127.0.0.1", port)) as stalled:
            stalled.sendall(b"PUT /fhir/Patient/stalled-1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/fhir+json"
                            b"\r\nX-Request-Id: stalled-request-01\r\nContent-Length: 1000\r\n\r\n{\"resourceType\"")
            time.sleep(0.5)  # the handler is reading the body
            started = time.monotonic()
            os.kill(worker, signal.SIGABRT)
            while time.monotonic() - started < 10 and worker in workers_of(served):
                time.sleep(0.05)
            assert worker not in workers_of(served), "the aborted worker did not exit"
            assert time.monotonic() - started < 5
        deadline = time.monotonic() + 20
        while requests.get(f"{served}/healthz", timeout=5).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)  # the arbiter starts a new worker
    with app.extensions["dui"].unit_of_work(write=False) as session:
        entries = [(r["action"], r["outcome"], r["status"], r["detail"], r["resource_type"], r["resource_id"])
                   for r, _ in trail.entries(session) if r["request_id"] == "stalled-request-01"]
    assert entries == [("update", "error", 503, "worker-timeout", "Patient", "stalled-1")]
