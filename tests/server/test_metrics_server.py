"""``/metrics`` under a real ``dui serve`` (gunicorn, two workers): the counts of every worker summed at each scrape,
whichever worker answers it; the run's fresh directory (under ``DUI_METRICS_DIR``), a worker's per-process gauges
gone with it, the directory removed when the server stops and one left by a killed server removed at the next
start."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TEST_MASTER_KEY_FILE, empty_database
from tests.server.conftest import running_server

pytestmark = pytest.mark.server
TOKEN = "server-metrics-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}



def reach_both_workers(base: str, run: Path, threads: int) -> int:
    """Send ``GET /fhir/metadata`` 40 at a time until both workers have counted requests (each writes its counters to
    a file of its own in the run's directory ``run``); return how many were sent."""
    sent = 0
    with ThreadPoolExecutor(threads) as pool:
        while len(list(run.glob("counter_*.db"))) < 2 and sent < 2000:
            statuses = list(pool.map(lambda _: requests.get(f"{base}/fhir/metadata", timeout=30).status_code,
                                     range(40)))
            assert statuses == [200] * 40
            sent += 40
    assert len(list(run.glob("counter_*.db"))) == 2, "the requests never reached the second worker"
    return sent

def scrape(base: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    answer = requests.get(f"{base}/metrics", headers=AUTH, timeout=10)
    assert answer.status_code == 200, answer.text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def capabilities(found: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> float:
    return found.get(("dui_http_requests_total", frozenset({("interaction", "capabilities"), ("status", "200")})), 0)


def pool_pids(found: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> set[str]:
    return {dict(labels)["pid"] for name, labels in found if name == "dui_database_pool_size"}


def test_every_workers_counts_are_summed_at_each_scrape(database_url: str, app: Flask,
                                                        tmp_path_factory: pytest.TempPathFactory) -> None:
    empty_database(app)
    parent = tmp_path_factory.mktemp("metrics")
    stale = parent / "dui-metrics-999999999-left"  # a killed server's: its pid is no process
    stale.mkdir()
    (stale / "counter_1.db").write_bytes(b"\0" * 16)
    env = {"DUI_DATABASE_URL": database_url, "DUI_MASTER_KEY_FILE": str(TEST_MASTER_KEY_FILE),
           "DUI_INSI_SIMULATOR_DIR": str(tmp_path_factory.mktemp("insi-simulator")),
           "DUI_METRICS_TOKEN": TOKEN, "DUI_METRICS_DIR": str(parent), "DUI_RATE_LIMIT": "0"}
    with running_server(env, tmp_path_factory.mktemp("server")) as base:
        assert not stale.exists()
        runs = [p for p in parent.iterdir() if p.name.startswith("dui-metrics-")]
        assert len(runs) == 1
        run = runs[0]
        assert requests.get(f"{base}/metrics", timeout=10).status_code == 401
        sent = reach_both_workers(base, run, 16)
        for _ in range(6):  # whichever worker answers the scrape, it reports the sum
            found = scrape(base)
            assert capabilities(found) == sent
            assert found[("dui_metrics_database_up", frozenset())] == 1
        workers = pool_pids(found)
        assert len(workers) == 2  # the database pool, per live worker
        # A worker that exits takes its per-process gauges along; what it counted stays in the sum
        gone = int(sorted(workers)[0])
        os.kill(gone, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while True:
            try:
                found = scrape(base)
            except requests.RequestException:
                found = {}
            if found and str(gone) not in pool_pids(found) and len(pool_pids(found)) == 2:
                break
            assert time.monotonic() < deadline, "the exited worker's gauges stayed"
            time.sleep(0.2)
        assert capabilities(found) == sent
    assert not run.exists(), "the run's metric files outlived the server"
    assert list(Path(parent).iterdir()) == []
