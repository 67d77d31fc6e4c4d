"""A real `dui worker` killed with SIGKILL while the DMP holds its request: the job, left running, is taken again
once its lease has expired and delivered, and the DMP holds the document once (the simulator counts it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import select

from dui.auth.actor import CLI
from dui.demo.data import resident_bundle, setup_bundle
from dui.demo.load import load_bundle
from dui.dmp.simulator import DmpSimulator, make_signing_pki
from dui.documents import dmp_feed, operations
from dui.outbox.tables import outbox_job
from ins.insi.pki import make_pki
from tests.conftest import TEST_AUDIT_KEY_FILE, TEST_MASTER_KEY_FILE, empty_database

DUI = str(Path(sys.executable).with_name("dui"))
PID = "demo-resident-001"  # identity qualifiée


def test_a_worker_killed_mid_delivery_leaves_a_job_delivered_once(app: Flask, database_url: str,
                                                                  tmp_path: Path) -> None:
    empty_database(app)
    svc = app.extensions["dui"]
    cachet = make_signing_pki(tmp_path / "cachet")
    pki = make_pki(tmp_path / "pki")
    with DmpSimulator(pki, vihf_ca=cachet.ca_cert, timeout_seconds=20) as dmp:
        for bundle in (setup_bundle(), resident_bundle(1, date(2026, 11, 30))):
            with svc.unit_of_work(write=True) as session:
                load_bundle(svc.fhir_context(session, CLI), bundle)
        with svc.unit_of_work(write=True) as session:
            ctx = svc.fhir_context(session, CLI)
            ctx.repo.create("Consent", {
                "resourceType": "Consent", "status": "active",
                "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                      "code": "patient-privacy"}]},
                "category": [{"coding": [{"system": dmp_feed.CONSENT_SYSTEM, "code": dmp_feed.INFORMATION}]}],
                "patient": {"reference": f"Patient/{PID}"}, "policyRule": {"text": "Information DMP"}})
            doc = operations.refresh_dlu(ctx, PID).reference
            dmp_feed.request_share(ctx, doc.id, svc.clock())
        unique_id = dmp_feed.unique_id(doc.resource())
        assert unique_id is not None
        env = {**os.environ, "DUI_DATABASE_URL": database_url, "DUI_MASTER_KEY_FILE": str(TEST_MASTER_KEY_FILE),
               "DUI_AUDIT_KEY_FILE": str(TEST_AUDIT_KEY_FILE), "DUI_INSI_SIMULATOR_DIR": str(tmp_path / "insi"),
               "DUI_DMP_URL": dmp.url, "DUI_DMP_CERT": str(pki.client_cert), "DUI_DMP_KEY": str(pki.client_key),
               "DUI_DMP_CA": str(pki.ca_cert), "DUI_DMP_SIGNING_CERT": str(cachet.cert),
               "DUI_DMP_SIGNING_KEY": str(cachet.key), "DUI_DMP_TIMEOUT": "60", "DUI_OUTBOX_LEASE": "1"}
        dmp.next_faults(["none", "timeout"])  # TD0.2 answers; the submission is stored, its answer held
        worker = subprocess.Popen([DUI, "worker", "--once"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while dmp.count(unique_id) == 0 and time.monotonic() < deadline and worker.poll() is None:
            time.sleep(0.05)
        assert dmp.count(unique_id) == 1, worker.communicate(timeout=5)
        worker.send_signal(signal.SIGKILL)
        worker.communicate(timeout=10)  # reaped, its pipes closed
        with svc.unit_of_work(write=False) as session:
            left = session.execute(select(outbox_job.c.state, outbox_job.c.attempts)).one()
        assert tuple(left) == ("running", 1)  # the answer never reached it: nothing recorded
        time.sleep(1.2)  # the lease expires
        again = subprocess.run([DUI, "worker", "--once"], env=env, cwd=tmp_path, capture_output=True, text=True,
                               timeout=120)
        assert again.returncode == 0, again.stderr
        assert "1 outbox job(s) delivered" in again.stdout
        assert dmp.count(unique_id) == 1  # resent after the lost answer: still one entry
        with svc.unit_of_work(write=False) as session:
            done = session.execute(select(outbox_job.c.state, outbox_job.c.attempts)).one()
            stored = svc.repository(session).read("DocumentReference", doc.id)
        assert tuple(done) == ("done", 2)
        assert stored is not None
        assert any(t.get("code") == "sent" for t in stored.resource()["meta"]["tag"]
                   if t.get("system") == dmp_feed.STATE_SYSTEM)


pytestmark = pytest.mark.server
