"""The audit durability rule under ``dui serve``: an entry is committed before its answer is sent, so that killing
the server (kill -9, mid-load) can lose only entries of requests that were never answered."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
import requests
from flask import Flask
from sqlalchemy import select

from dui.audit.tables import audit_event
from tests.conftest import TEST_MASTER_KEY_FILE, empty_database
from tests.server.conftest import serve_process


def test_every_answered_read_is_in_the_trail_after_kill_9(database_url: str, app: Flask,
                                                           tmp_path_factory: pytest.TempPathFactory) -> None:
    env = {"DUI_DATABASE_URL": database_url, "DUI_LOG_LEVEL": "INFO",
           "DUI_INSI_SIMULATOR_DIR": str(tmp_path_factory.mktemp("insi-simulator")),
           "DUI_MASTER_KEY_FILE": str(TEST_MASTER_KEY_FILE), "DUI_RATE_LIMIT": "0", "DUI_AUTH_RATE_LIMIT": "0"}
    empty_database(app)
    answered: list[str] = []
    stop = threading.Event()
    with serve_process(env, Path(tmp_path_factory.mktemp("durability")), ["--workers", "2", "--threads", "16"]) \
            as (base, server):
        fhir = f"{base}/fhir"

        def read(n: int) -> None:
            session = requests.Session()
            i = 0
            while not stop.is_set():
                request_id = f"kill9-{n:02d}-{i:05d}"
                i += 1
                try:
                    answer = session.get(f"{fhir}/metadata", headers={"X-Request-Id": request_id}, timeout=10)
                except requests.RequestException:
                    return  # the server is gone
                if answer.status_code == 200:
                    answered.append(request_id)

        readers = [threading.Thread(target=read, args=(n,)) for n in range(12)]
        for t in readers:
            t.start()
        deadline = time.monotonic() + 30
        while len(answered) < 300 and time.monotonic() < deadline:
            time.sleep(0.01)
        os.killpg(server.pid, signal.SIGKILL)  # the master and its workers, mid-load
        stop.set()
        for t in readers:
            t.join(15)
    assert len(answered) >= 300
    with app.extensions["dui"].engine.connect() as conn:
        recorded = set(conn.execute(select(audit_event.c.request_id)
                                    .where(audit_event.c.request_id.like("kill9-%"))).scalars())
    missing = [r for r in answered if r not in recorded]
    assert missing == [], f"{len(missing)} answered reads have no audit entry, e.g. {missing[:3]}"
