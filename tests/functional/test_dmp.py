"""Feeding the DMP end to end (docs/dmp.md): a document queued in the outbox, delivered by the worker to the local
DMP simulator over mutual TLS (its checks of the VIHF signature and of every metadata slot pass), the rules applied
at send time, faults retried until the DMP holds each document exactly once. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from flask import Flask
from flask.cli import ScriptInfo

from dui.cli import cli
from dui.demo.data import resident_bundle, setup_bundle
from dui.dmp.simulator import DmpSimulator, DmpStore, SigningPki, make_signing_pki
from dui.dmp.soap import SoapDmpGateway
from dui.documents import dmp_feed
from dui.outbox.runner import Backoff, run_due
from ins.insi.pki import make_pki
from tests.helpers import FhirClient
from tests.unit.dmp_samples import vihf_context

QUALIFIED, PROVISIONAL = "demo-resident-001", "demo-resident-003"  # identity qualifiée / provisoire in the demo
STATE = dmp_feed.STATE_SYSTEM


@pytest.fixture(scope="module")
def cachet(tmp_path_factory: pytest.TempPathFactory) -> SigningPki:
    return make_signing_pki(Path(tmp_path_factory.mktemp("dmp-cachet")))


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory, cachet: SigningPki) -> Iterator[DmpSimulator]:
    with DmpSimulator(make_pki(Path(tmp_path_factory.mktemp("dmp-pki"))), vihf_ca=cachet.ca_cert,
                      timeout_seconds=2.0) as dmp:
        yield dmp


@pytest.fixture
def dmp(app: Flask, simulator: DmpSimulator, cachet: SigningPki) -> Iterator[DmpSimulator]:
    """The service's DMP gateway pointed at the simulator (a short timeout, for the fault tests)."""
    svc = app.extensions["dui"]
    pki = simulator.pki
    gateway = SoapDmpGateway(simulator.url, str(pki.client_cert), str(pki.client_key), str(pki.ca_cert),
                             cachet.cert.read_bytes(), cachet.key.read_bytes(), 1.0, vihf=vihf_context(),
                             source_id=svc.settings.documents.oid)
    svc._dmp, svc.dmp_factory = None, lambda: gateway
    simulator.store = DmpStore()  # an empty DMP for each test
    simulator.patients, simulator.blocked = None, frozenset()
    yield simulator
    svc._dmp, svc.dmp_factory = None, None


@pytest.fixture
def demo(client: FhirClient) -> FhirClient:
    for bundle in (setup_bundle(), *(resident_bundle(i, date(2026, 11, 30)) for i in (1, 2, 3))):
        assert client.post("", bundle).status_code == 200
    return client


def informed(client: FhirClient, pid: str) -> None:
    consent = {"resourceType": "Consent", "status": "active",
               "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                     "code": "patient-privacy"}]},
               "category": [{"coding": [{"system": dmp_feed.CONSENT_SYSTEM, "code": dmp_feed.INFORMATION}]}],
               "patient": {"reference": f"Patient/{pid}"}, "dateTime": "2026-11-02T10:00:00+01:00",
               "policyRule": {"text": "Information sur le DMP donnée au résident"}}
    answer = client.post("Consent", consent)
    assert answer.status_code == 201, answer.get_data(as_text=True)


def opposed(client: FhirClient, pid: str, reason: str) -> None:
    consent = {"resourceType": "Consent", "status": "active",
               "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                     "code": "patient-privacy"}]},
               "category": [{"coding": [{"system": dmp_feed.CONSENT_SYSTEM, "code": dmp_feed.OPPOSITION}]}],
               "extension": [{"url": dmp_feed.OPPOSITION_REASON, "valueString": reason}],
               "patient": {"reference": f"Patient/{pid}"}, "dateTime": "2026-11-03T10:00:00+01:00",
               "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                          "code": "OPTOUT"}]}}
    assert client.post("Consent", consent).status_code == 201


def cli_run(app: Flask, *args: str) -> Any:
    return CliRunner().invoke(cli, list(args), obj=ScriptInfo(create_app=lambda: app))


def dlu(client: FhirClient, pid: str) -> dict[str, Any]:
    answer = client.post(f"Patient/{pid}/$dlu", {"resourceType": "Parameters"})
    assert answer.status_code in (200, 201), answer.get_data(as_text=True)
    return dict(answer.get_json())


def unique_id(doc: dict[str, Any]) -> str:
    uid = dmp_feed.unique_id(doc)
    assert uid is not None
    return uid


def state(client: FhirClient, doc: dict[str, Any]) -> tuple[str | None, dict[str, str]]:
    body = client.get(f"DocumentReference/{doc['id']}").get_json()
    tag = next((t["code"] for t in body["meta"].get("tag", []) if t["system"] == STATE), None)
    parts = next(({p["url"]: next(v for k, v in p.items() if k.startswith("value")) for p in e["extension"]}
                  for e in body.get("extension", []) if e["url"] == dmp_feed.SUBMISSION), {})
    return tag, parts


def run(app: Flask, later: timedelta = timedelta(0)) -> Any:
    svc = app.extensions["dui"]
    return run_due(svc.unit_of_work, svc.outbox_handlers, svc.clock() + later, "test-worker",
                   backoff=Backoff(base=1, cap=2, max_attempts=5))


def test_a_dlu_goes_to_the_dmp_once_over_mutual_tls(app: Flask, demo: FhirClient, dmp: DmpSimulator) -> None:
    informed(demo, QUALIFIED)
    doc = dlu(demo, QUALIFIED)
    queued = cli_run(app, "dmp", "send", doc["id"])
    assert queued.exit_code == 0, queued.output
    assert state(demo, doc)[0] == "queued"
    again = cli_run(app, "dmp", "send", doc["id"])
    assert again.output.split(":")[1] == queued.output.split(":")[1]  # the same job
    done = cli_run(app, "worker", "--once")
    assert done.exit_code == 0 and "1 outbox job(s) delivered" in done.output, done.output
    assert dmp.count(unique_id(doc)) == 1
    entry = dmp.entry(unique_id(doc))
    assert entry is not None and entry.patient_id.startswith("231066912300104^^^&1.2.250.1.213.1.4.10&ISO")
    tag, parts = state(demo, doc)
    assert tag == "sent" and parts["status"] == "Success" and parts["uniqueId"] == unique_id(doc)
    found = demo.search(f"DocumentReference?_tag={STATE}|sent")
    assert [e["resource"]["id"] for e in found["entry"]] == [doc["id"]]
    from dui.audit import trail

    with app.extensions["dui"].unit_of_work(write=False) as session:
        sends = [row for row, patients in trail.entries(session, patient=QUALIFIED) if row["action"] == "dmp-send"]
    assert len(sends) == 1 and sends[0]["resource_id"] == doc["id"]


def test_nothing_leaves_for_an_identity_that_is_not_qualified(app: Flask, demo: FhirClient,
                                                              dmp: DmpSimulator) -> None:
    informed(demo, PROVISIONAL)
    doc = dlu(demo, PROVISIONAL)
    assert cli_run(app, "dmp", "send", doc["id"]).exit_code == 0
    report = run(app)
    assert (report.delivered, report.dead) == (0, 1)
    assert dmp.count(unique_id(doc)) == 0
    tag, parts = state(demo, doc)
    assert tag == "refused" and parts["reason"].startswith("identity PROV")
    failed = cli_run(app, "outbox", "list", "--failed")
    assert "identity PROV" in failed.output


def test_an_opposition_recorded_after_queuing_stops_the_send(app: Flask, demo: FhirClient, dmp: DmpSimulator) -> None:
    informed(demo, QUALIFIED)
    doc = dlu(demo, QUALIFIED)
    assert cli_run(app, "dmp", "send", doc["id"]).exit_code == 0
    opposed(demo, QUALIFIED, "motif légitime exprimé")
    assert run(app).dead == 1
    assert dmp.count(unique_id(doc)) == 0
    tag, parts = state(demo, doc)
    assert tag == "refused" and "opposed" in parts["reason"]


def test_no_send_before_the_resident_is_informed(app: Flask, demo: FhirClient, dmp: DmpSimulator) -> None:
    doc = dlu(demo, QUALIFIED)
    assert cli_run(app, "dmp", "send", doc["id"]).exit_code == 0
    assert run(app).dead == 1 and dmp.count(unique_id(doc)) == 0
    assert "information" in state(demo, doc)[1]["reason"]


@pytest.mark.parametrize("fault", ["drop-after-store", "timeout", "http-500"])
def test_faults_are_retried_and_the_dmp_holds_the_document_once(app: Flask, demo: FhirClient, dmp: DmpSimulator,
                                                                fault: str) -> None:
    informed(demo, QUALIFIED)
    doc = dlu(demo, QUALIFIED)
    assert cli_run(app, "dmp", "send", doc["id"]).exit_code == 0
    dmp.next_faults(["none", fault])  # the TD0.2 query answers; the fault hits the ITI-41 submission
    first = run(app)
    assert (first.delivered, first.retried) == (0, 1)
    assert state(demo, doc)[0] == "queued"
    second = run(app, later=timedelta(minutes=5))  # past the back-off
    assert second.delivered == 1
    assert dmp.count(unique_id(doc)) == 1
    assert state(demo, doc)[0] == "sent"


def test_a_refusal_by_the_dmp_is_a_dead_letter_with_its_reason(app: Flask, demo: FhirClient,
                                                              dmp: DmpSimulator) -> None:
    informed(demo, QUALIFIED)
    doc = dlu(demo, QUALIFIED)
    assert cli_run(app, "dmp", "send", doc["id"]).exit_code == 0
    dmp.next_faults(["none", "refuse"])  # past the TD0.2 query
    assert run(app).dead == 1
    tag, parts = state(demo, doc)
    assert tag == "refused" and parts["reason"] == "the DMP refused it: XDSRegistryError"
    assert parts["registryErrors"] == "Error XDSRegistryError: simulated refusal (fault injection)"


def test_a_new_dlu_replaces_the_one_sent(app: Flask, demo: FhirClient, dmp: DmpSimulator) -> None:
    informed(demo, QUALIFIED)
    first = dlu(demo, QUALIFIED)
    assert cli_run(app, "dmp", "send", first["id"]).exit_code == 0
    assert run(app).delivered == 1
    demo.post("AllergyIntolerance", {"resourceType": "AllergyIntolerance", "code": {"text": "Iode"},
                                     "patient": {"reference": f"Patient/{QUALIFIED}"}})
    second = dlu(demo, QUALIFIED)
    assert second["id"] != first["id"]
    assert cli_run(app, "dmp", "send", second["id"]).exit_code == 0
    assert run(app).delivered == 1
    old, new = dmp.entry(unique_id(first)), dmp.entry(unique_id(second))
    assert old is not None and new is not None
    assert old.status.endswith("Deprecated") and new.status.endswith("Approved")


def test_dmp_send_refuses_what_it_cannot_send(app: Flask, demo: FhirClient) -> None:
    unknown = cli_run(app, "dmp", "send", "nothing-here")
    assert unknown.exit_code == 1 and unknown.output.count("\n") == 1
    plain = demo.create({"resourceType": "DocumentReference", "status": "current",
                         "subject": {"reference": f"Patient/{QUALIFIED}"},
                         "content": [{"attachment": {"contentType": "text/plain", "data": "Ym9uam91cg=="}}]})
    refused = cli_run(app, "dmp", "send", plain["id"])
    assert refused.exit_code == 1 and "no CDA" in refused.output


def test_documents_built_are_queued_when_the_establishment_asks(app: Flask, demo: FhirClient,
                                                               dmp: DmpSimulator) -> None:
    from dataclasses import replace

    from dui.demo.data import ESTABLISHMENTS

    svc = app.extensions["dui"]
    saved = svc.settings
    parc = next(e["finess"] for e in ESTABLISHMENTS if e["id"] == "demo-ehpad-le-parc")
    svc.settings = saved.with_(dmp=replace(saved.dmp, auto_send=(parc,)))
    try:
        informed(demo, QUALIFIED)
        doc = dlu(demo, QUALIFIED)  # demo-resident-001 lives at Le Parc
        other = dlu(demo, "demo-resident-002")  # Les Tilleuls: not asked
    finally:
        svc.settings = saved
    assert state(demo, doc)[0] == "queued" and state(demo, other)[0] is None
    assert run(app).delivered == 1 and dmp.count(unique_id(doc)) == 1


def test_production_refuses_a_dmp_that_answers_as_a_simulator(demo: FhirClient, dmp: DmpSimulator,
                                                              cachet: SigningPki) -> None:
    from dui.dmp.errors import Permanent
    from dui.dmp.metadata import entry_from

    informed(demo, QUALIFIED)
    doc = dlu(demo, QUALIFIED)
    cda_url = next(c["attachment"]["url"] for c in doc["content"] if c["attachment"]["contentType"] == "text/xml")
    cda = bytes(demo.get(cda_url, headers={"Accept": "text/xml"}).data)
    entry = entry_from(doc, cda, "231066912300104", "1.2.250.1.213.1.4.10", "1.2.250.1.999.42.1")
    pki = dmp.pki
    production = SoapDmpGateway(dmp.url, str(pki.client_cert), str(pki.client_key), str(pki.ca_cert),
                                cachet.cert.read_bytes(), cachet.key.read_bytes(), 5.0, vihf=vihf_context(),
                                source_id="1.2.250.1.999.42.1", allow_simulator=False)
    with pytest.raises(Permanent, match="answers as a simulator"):
        production.provide(entry, cda)


# --- TD0.2: the DMP is asked before each send -------------------------------------------------------------------

def test_a_resident_without_a_dmp_or_who_blocked_the_structure_gets_nothing(app: Flask, demo: FhirClient,
                                                                           dmp: DmpSimulator) -> None:
    informed(demo, QUALIFIED)
    doc = dlu(demo, QUALIFIED)
    dmp.patients = frozenset({"100000000000000"})  # she has no DMP
    assert cli_run(app, "dmp", "send", doc["id"]).exit_code == 0
    assert run(app).dead == 1 and dmp.count(unique_id(doc)) == 0
    tag, parts = state(demo, doc)
    assert tag == "refused" and parts["reason"] == "the resident has no DMP (TD0.2)"
    dmp.patients, dmp.blocked = None, frozenset({"231066912300104"})  # she has one, and blocked this structure
    job = cli_run(app, "outbox", "list", "--failed").output.splitlines()[1].split()[0]
    assert cli_run(app, "outbox", "retry", job).exit_code == 0
    assert run(app).dead == 1 and dmp.count(unique_id(doc)) == 0
    assert state(demo, doc)[1]["reason"].startswith("this establishment may not feed her DMP (TD0.2")
    dmp.blocked = frozenset()  # she lifted it: the retried job goes
    assert cli_run(app, "outbox", "retry", job).exit_code == 0
    assert run(app).delivered == 1 and dmp.count(unique_id(doc)) == 1


# --- TD3.3: masking, archive, delete -----------------------------------------------------------------------------

def sent_dlu(app: Flask, demo: FhirClient) -> dict[str, Any]:
    informed(demo, QUALIFIED)
    doc = dlu(demo, QUALIFIED)
    assert cli_run(app, "dmp", "send", doc["id"]).exit_code == 0
    assert run(app).delivered == 1
    return doc


def update_jobs(app: Flask) -> list[Any]:
    from dui.outbox import queue

    with app.extensions["dui"].unit_of_work(write=False) as session:
        return [j for j in queue.list_jobs(session) if j.kind == dmp_feed.UPDATE_KIND]


def test_masking_through_fhir_reaches_the_dmp_as_a_new_version(app: Flask, demo: FhirClient,
                                                               dmp: DmpSimulator) -> None:
    doc = sent_dlu(app, demo)
    label = {"coding": [{"system": dmp_feed.MASKING_SYSTEM, "code": "INVISIBLE_PATIENT"}]}
    patched = demo.patch(f"DocumentReference/{doc['id']}", [
        {"op": "add", "path": "/securityLabel/-", "value": label}], content_type="application/json-patch+json")
    assert patched.status_code == 200, patched.get_data(as_text=True)
    jobs = update_jobs(app)
    assert [(j.state, j.target) for j in jobs] == [("due", f"DocumentReference/{doc['id']}")]
    assert run(app).delivered == 1
    entry = dmp.entry(unique_id(doc))
    assert entry is not None and entry.masking == {"INVISIBLE_PATIENT"} and entry.version == 2
    assert dmp.count(unique_id(doc)) == 1  # one document, in its second version
    tag, parts = state(demo, doc)
    assert tag == "masked" and parts["masking"] == "INVISIBLE_PATIENT" and parts["version"] == "2"
    assert parts["entryUUID"] == entry.entry_uuid != entry.logical_id
    lifted = cli_run(app, "dmp", "unmask", doc["id"], "--code", "INVISIBLE_PATIENT")
    assert lifted.exit_code == 0, lifted.output
    assert run(app).delivered == 1
    entry = dmp.entry(unique_id(doc))
    assert entry is not None and entry.masking == frozenset() and entry.version == 3
    assert state(demo, doc)[0] == "sent"


def test_a_lost_answer_to_an_update_is_not_applied_twice(app: Flask, demo: FhirClient, dmp: DmpSimulator) -> None:
    doc = sent_dlu(app, demo)
    assert cli_run(app, "dmp", "mask", doc["id"], "--code", "MASQUE_PS").exit_code == 0
    dmp.next_faults(["none", "drop-after-store"])  # the query answers; the update is applied, its answer lost
    first = run(app)
    assert (first.delivered, first.retried) == (0, 1)
    entry = dmp.entry(unique_id(doc))
    assert entry is not None and entry.version == 2 and entry.masking == {"MASQUE_PS"}
    assert run(app, later=timedelta(minutes=5)).delivered == 1
    entry = dmp.entry(unique_id(doc))
    assert entry is not None and entry.version == 2  # the retry found it done
    assert state(demo, doc)[0] == "masked"


def test_archive_then_delete(app: Flask, demo: FhirClient, dmp: DmpSimulator) -> None:
    from dui.dmp.metadata import ARCHIVED, DELETED

    doc = sent_dlu(app, demo)
    assert cli_run(app, "dmp", "archive", doc["id"]).exit_code == 0
    assert run(app).delivered == 1
    entry = dmp.entry(unique_id(doc))
    assert entry is not None and entry.status == ARCHIVED and state(demo, doc)[0] == "archived"
    refused = cli_run(app, "dmp", "delete", doc["id"])
    assert refused.exit_code == 1 and "--yes" in refused.output
    assert cli_run(app, "dmp", "delete", doc["id"], "--yes").exit_code == 0
    assert run(app).delivered == 1
    assert entry.status == DELETED and state(demo, doc)[0] == "deleted"
    after = cli_run(app, "dmp", "mask", doc["id"])
    assert after.exit_code == 1 and "cannot change" in after.output
    assert demo.get(f"DocumentReference/{doc['id']}").status_code == 200  # still in her record here


@pytest.mark.parametrize("how", ["entered-in-error", "DELETE"])
def test_a_document_entered_in_error_or_deleted_here_is_deleted_from_the_dmp(app: Flask, demo: FhirClient,
                                                                              dmp: DmpSimulator, how: str) -> None:
    from dui.dmp.metadata import DELETED

    doc = sent_dlu(app, demo)
    if how == "DELETE":
        changed = demo.delete(f"DocumentReference/{doc['id']}")
        assert changed.status_code in (200, 204), changed.get_data(as_text=True)
    else:
        changed = demo.patch(f"DocumentReference/{doc['id']}", [
            {"op": "replace", "path": "/status", "value": how}], content_type="application/json-patch+json")
        assert changed.status_code == 200, changed.get_data(as_text=True)
    assert run(app).delivered == 1
    entry = dmp.entry(unique_id(doc))
    assert entry is not None and entry.status == DELETED


def test_a_masking_asked_before_the_send_goes_with_it(app: Flask, demo: FhirClient, dmp: DmpSimulator) -> None:
    informed(demo, QUALIFIED)
    doc = dlu(demo, QUALIFIED)
    assert cli_run(app, "dmp", "send", doc["id"]).exit_code == 0
    assert cli_run(app, "dmp", "mask", doc["id"], "--code", "INVISIBLE_PATIENT").exit_code == 0
    run(app)
    run(app, later=timedelta(minutes=5))
    entry = dmp.entry(unique_id(doc))
    assert entry is not None and entry.masking == {"INVISIBLE_PATIENT"} and entry.version == 1
    assert all(j.state == "done" for j in update_jobs(app))
    assert state(demo, doc)[0] == "masked"


def test_a_masking_of_a_document_never_sent_stays_here(app: Flask, demo: FhirClient, dmp: DmpSimulator) -> None:
    doc = dlu(demo, QUALIFIED)
    informed(demo, QUALIFIED)
    assert cli_run(app, "dmp", "mask", doc["id"]).exit_code == 0
    report = run(app)
    assert report.delivered == 1 and dmp.count(unique_id(doc)) == 0
    jobs = update_jobs(app)
    assert len(jobs) == 1 and (jobs[0].result or "").startswith("not in the DMP")


def test_invisible_patient_stays_on_the_next_version_of_the_dlu(app: Flask, demo: FhirClient,
                                                                dmp: DmpSimulator) -> None:
    first = sent_dlu(app, demo)
    assert cli_run(app, "dmp", "mask", first["id"], "--code", "INVISIBLE_PATIENT").exit_code == 0
    assert run(app).delivered == 1
    demo.post("AllergyIntolerance", {"resourceType": "AllergyIntolerance", "code": {"text": "Iode"},
                                     "patient": {"reference": f"Patient/{QUALIFIED}"}})
    second = dlu(demo, QUALIFIED)
    codes = {c["code"] for label in second["securityLabel"] for c in label["coding"]}
    assert "INVISIBLE_PATIENT" in codes
    assert cli_run(app, "dmp", "send", second["id"]).exit_code == 0
    assert run(app).delivered == 1
    old, new = dmp.entry(unique_id(first)), dmp.entry(unique_id(second))
    assert old is not None and new is not None
    assert new.masking == {"INVISIBLE_PATIENT"} and new.replaces == old.entry_uuid  # the RPLC of version 2
    assert old.status.endswith("Deprecated")


def test_visibility_requests_refuse_what_they_cannot_do(app: Flask, demo: FhirClient) -> None:
    unknown = cli_run(app, "dmp", "mask", "nothing-here")
    assert unknown.exit_code == 1 and unknown.output.count("\n") == 1
    bad = cli_run(app, "dmp", "unmask", "nothing-here", "--code", "SECRET")
    assert bad.exit_code == 2
    plain = demo.create({"resourceType": "DocumentReference", "status": "current",
                         "subject": {"reference": f"Patient/{QUALIFIED}"},
                         "content": [{"attachment": {"contentType": "text/plain", "data": "Ym9uam91cg=="}}]})
    refused = cli_run(app, "dmp", "archive", plain["id"])
    assert refused.exit_code == 1 and "uniqueId" in refused.output
