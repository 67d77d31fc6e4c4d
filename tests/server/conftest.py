"""A real ``dui serve`` (gunicorn, several workers and threads; or granian) on a free port."""

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


@contextlib.contextmanager
def running_server(env: dict[str, str], log_dir: Path, workers: int = 2, threads: int = 16,
                   base_url: bool = True) -> Iterator[str]:
    """``dui serve`` on a free port with ``env`` added to this process's environment; yields its base URL.
    ``base_url=False``: DUI_BASE_URL left unset (the service then names the host and port it serves on).

    Its log is kept in ``SERVER_LOGS`` for the log hygiene test. The master and its workers are stopped at the end.
    """
    with serve_process(env, log_dir, ["--workers", str(workers), "--threads", str(threads)], base_url) as (base, _):
        yield base


@contextlib.contextmanager
def serve_process(env: dict[str, str], log_dir: Path, args: list[str],
                  base_url: bool = True) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``dui serve ARGS`` on a free port (as ``running_server``); yields its base URL and its process (the master,
    leader of its own process group), stopped at the end if it still runs."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = log_dir / "serve.log"
    log = open(log_path, "wb")  # noqa: SIM115 (closed in finally)
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("dui")), "serve", "--port", str(port), *args],
        cwd=ROOT, env={**{k: v for k, v in os.environ.items() if k != "DUI_BASE_URL"},
                       **({"DUI_BASE_URL": base} if base_url else {}), **env},
        stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{base}/healthz", timeout=5).status_code == 200:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dui serve did not start:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield base, process
    finally:
        with contextlib.suppress(ProcessLookupError):  # gone already: a test killed it
            os.killpg(process.pid, signal.SIGTERM)  # the master and its workers
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        log.close()
        SERVER_LOGS.append(log_path)


@pytest.fixture(scope="module")
def server(database_url: str, app: Flask, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start ``dui serve`` against the test database; yield its FHIR base URL."""
    env = {"DUI_DATABASE_URL": database_url, "DUI_LOG_LEVEL": "INFO",
           "DUI_INSI_SIMULATOR_DIR": str(tmp_path_factory.mktemp("insi-simulator")),
           "DUI_MASTER_KEY_FILE": str(TEST_MASTER_KEY_FILE),  # the test app's key: both read the same bodies
           # the limiter runs, but tests that race from one address are not throttled (tests/server/test_hardening.py)
           "DUI_RATE_LIMIT": "600000", "DUI_RATE_LIMIT_BURST": "100000", "DUI_AUTH_RATE_LIMIT": "600000",
           "DUI_AUTH_RATE_LIMIT_BURST": "100000"}
    with running_server(env, tmp_path_factory.mktemp("server")) as base:
        yield f"{base}/fhir"


# Every server log of the session, for the log hygiene test (tests/server/test_zz_logs.py).
SERVER_LOGS: list[Path] = []


@pytest.fixture
def fhir_base(server: str, app: Flask) -> str:
    empty_database(app)
    return server
