"""A real ``dui serve`` (gunicorn, several workers and threads) on a free port."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from flask import Flask

from tests.conftest import TEST_MASTER_KEY_FILE, empty_database

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(database_url: str, app: Flask, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start ``dui serve`` against the test database; yield its FHIR base URL."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DUI_DATABASE_URL": database_url, "DUI_BASE_URL": base, "DUI_LOG_LEVEL": "INFO",
           "DUI_INSI_SIMULATOR_DIR": str(tmp_path_factory.mktemp("insi-simulator")),
           "DUI_MASTER_KEY_FILE": str(TEST_MASTER_KEY_FILE),  # the test app's key: both read the same bodies
           # the limiter runs, but tests that race from one address are not throttled (tests/server/test_hardening.py)
           "DUI_RATE_LIMIT": "600000", "DUI_RATE_LIMIT_BURST": "100000", "DUI_AUTH_RATE_LIMIT": "600000",
           "DUI_AUTH_RATE_LIMIT_BURST": "100000"}
    dui = Path(sys.executable).with_name("dui")
    log_path = tmp_path_factory.mktemp("server") / "serve.log"
    log = open(log_path, "wb")  # noqa: SIM115 (closed in finally)
    process = subprocess.Popen([str(dui), "serve", "--port", str(port), "--workers", "2", "--threads", "16"],
                               cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{base}/healthz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dui serve did not start:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield f"{base}/fhir"
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the master and its workers
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        log.close()
        SERVER_LOGS.append(log_path)


# Every server log of the session, for the log hygiene test (tests/server/test_zz_logs.py).
SERVER_LOGS: list[Path] = []


@pytest.fixture
def fhir_base(server: str, app: Flask) -> str:
    empty_database(app)
    return server
