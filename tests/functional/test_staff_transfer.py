"""A transfer to hospital through the staff API (docs/staff-api.md, "Transfer to hospital and documents"): in one
call the stay on leave, the FLUDT built, the DLU refreshed, both sent to the hospital over MSSanté (a real SMTP
server with STARTTLS and a client certificate, reached by ``dui worker --once``) or, MSSanté not configured, built
and said so; the return with the FLUDR received; the refusals, with nothing half-written. On SQLite and
PostgreSQL."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from dui.auth.policy import Policy
from dui.errors import Unavailable
from dui.messaging import sending
from dui.outbox.tables import outbox_job
from dui.settings import MssanteSettings
from dui.web.staff import document_schemas as schemas
from ins.insi.pki import Pki, make_pki
from mssante import InMemoryMailbox, read_xdm
from tests.functional.test_dmp import cli_run
from tests.functional.test_mssante_inbox import fludr_for
from tests.functional.test_mssante_send import the_xdm, through
from tests.functional.test_staff_api import MINE, OTHER_MINE, PARC, ROOM_OF_MINE, THEIRS, demo, token, web  # noqa: F401
from tests.helpers import FhirClient
from tests.mailservers import running_smtp

HOSPITAL = "urgences@ch-villefranche.mssante.fr"
STAY = f"{MINE}-sejour"
TRANSFER = {"hospital": {"name": "CH de Villefranche, urgences", "mssante": HOSPITAL},
            "reason": "Chute avec douleur de hanche, suspicion de fracture", "departed_at": "2026-12-01T02:15:00+01:00",
            "note": "Partie avec ses lunettes", "last_meal": "Dîner de 18h30, complet", "devices": ["Lunettes"],
            "belongings": ["Téléphone portable"]}


def medecin(app: Flask) -> dict[str, str]:
    return token(app, "staff", "medecin", PARC)


def nurse(app: Flask) -> dict[str, str]:
    return token(app, "staff", "infirmier", PARC)


@pytest.fixture
def mailbox(app: Flask) -> Iterator[InMemoryMailbox]:
    """MSSanté configured; its SMTP server the in-memory mailbox."""
    svc = app.extensions["dui"]
    saved = svc.settings
    svc.settings = saved.with_(mssante=MssanteSettings(
        smtp_url="smtp://mssante.invalid:587", sender="dui@ehpad-le-parc.mssante.fr", cert="cert.pem", key="key.pem",
        ca="ca.pem"))
    box = InMemoryMailbox()
    svc.mail_sender_factory = lambda: box
    yield box
    svc.settings, svc.mail_sender_factory = saved, None


def conforms(schema: type[Any], body: Any) -> Any:
    """``body``, once checked against the answer's schema (the one the OpenAPI document publishes)."""
    assert schema().validate(body) == {}, body
    return body


def jobs(app: Flask) -> list[Any]:
    with app.extensions["dui"].unit_of_work(write=False) as session:
        return list(session.execute(select(outbox_job).order_by(outbox_job.c.id)).mappings())


def what_is_written(demo: FhirClient) -> tuple[Any, ...]:  # noqa: F811
    """What a transfer writes: her stay, her documents, her Tasks, the outbox."""
    stay = demo.get(f"Encounter/{STAY}").get_json()
    documents = demo.search(f"DocumentReference?subject=Patient/{MINE}&_summary=count")["total"]
    tasks = demo.search(f"Task?patient=Patient/{MINE}&_summary=count")["total"]
    return stay["status"], stay["meta"]["versionId"], documents, tasks


def test_a_transfer_sends_the_fludt_and_the_dlu_to_the_hospital_over_a_real_smtp_server(
        app: Flask, web: FlaskClient, demo: FhirClient, tmp_path_factory: pytest.TempPathFactory) -> None:  # noqa: F811
    pki: Pki = make_pki(tmp_path_factory.mktemp("transfer-pki"))
    svc = app.extensions["dui"]
    saved = svc.settings
    with running_smtp(pki) as server:
        svc.settings = through(saved, server.url, pki)
        try:
            answer = web.post(f"/api/residents/{MINE}/transfers", json=TRANSFER, headers=medecin(app))
            assert answer.status_code == 201, answer.get_data(as_text=True)
            done = conforms(schemas.TransferOut, answer.get_json())
            assert answer.headers["ETag"] == f'W/"{done["version"]}"'
            assert done["status"] == "in-progress" and done["mssante"] == "queued"
            assert done["hospital"] == {"name": "CH de Villefranche, urgences", "mssante": HOSPITAL}
            assert done["departed_at"] == "2026-12-01T01:15:00.000Z" and done["stay_id"] == STAY
            assert [d["kind"] for d in done["documents"]] == ["FLUDT", "DLU"]
            assert all(d["mssante"]["state"] == "queued" and d["mssante"]["job_state"] == "due"
                       for d in done["documents"])
            assert [j["kind"] for j in jobs(app)] == ["mssante.send", "mssante.send"]
            # the worker, run once, delivers both documents to the hospital
            worker = cli_run(app, "worker", "--once")
            assert worker.exit_code == 0, worker.output
            assert "2 outbox job(s) delivered" in worker.output
        finally:
            svc.settings = saved
        assert len(server.received) == 2 and {r.rcpt_tos for r in server.received} == {(HOSPITAL,)}
        delivered = set()
        for got in server.received:
            message = BytesParser(policy=policy.default).parsebytes(got.data)
            assert isinstance(message, EmailMessage) and message["X-MSS-CODECDA"] == "74207-2"
            delivered |= {d.unique_id for d in read_xdm(the_xdm(message)).documents}
    built = {d["id"]: demo.get(f"DocumentReference/{d['id']}").get_json() for d in done["documents"]}
    assert delivered == {sending.unique_id(doc) for doc in built.values()}
    fludt = built[done["documents"][0]["id"]]
    assert fludt["content"][0]["format"]["code"] == "urn:asip:ci-sis:fludt:2017"
    # the FLUDT says what the nurse said
    cda = base64.b64decode(demo.get(fludt["content"][0]["attachment"]["url"],
                                    headers={"Accept": "application/fhir+json"}).get_json()["data"])
    assert b"suspicion de fracture" in cda and b"CH de Villefranche" in cda
    # the stay is on leave, her room kept for her; the transfer is a Task of her record
    stay = demo.get(f"Encounter/{STAY}").get_json()
    assert stay["status"] == "onleave" and stay["statusHistory"][-1]["status"] == "in-progress"
    assert stay["statusHistory"][-1]["period"]["end"] == "2026-12-01T01:15:00.000Z"
    assert stay["location"][0]["location"]["reference"] == f"Location/{ROOM_OF_MINE}"
    assert stay["location"][0]["status"] == "reserved"
    task = demo.get(f"Task/{done['id']}").get_json()
    assert task["status"] == "in-progress" and task["for"] == {"reference": f"Patient/{MINE}"}
    assert task["focus"] == {"reference": f"DocumentReference/{fludt['id']}"}
    assert task["requester"]["identifier"]["value"] == f"medecin-{PARC}"
    # following it: the documents are sent now
    listed = conforms(schemas.TransferPage, web.get(f"/api/residents/{MINE}/transfers",
                                                    headers=nurse(app)).get_json())["items"]
    assert [t["id"] for t in listed] == [done["id"]] and listed[0]["mssante"] == "sent"
    # she is still a resident (visible, her stay not finished), no longer present (not in "my residents now")
    assert web.get(f"/api/residents/{MINE}", headers=nurse(app)).status_code == 200
    present = [r["id"] for r in web.get("/api/residents", headers=nurse(app)).get_json()["items"]]
    assert MINE not in present and present


def test_without_mssante_the_documents_are_built_and_the_answer_says_not_configured(
        app: Flask, web: FlaskClient, demo: FhirClient) -> None:  # noqa: F811
    answer = web.post(f"/api/residents/{MINE}/transfers", json=TRANSFER, headers=medecin(app))
    assert answer.status_code == 201, answer.get_data(as_text=True)
    done = conforms(schemas.TransferOut, answer.get_json())
    assert done["mssante"] == "not-configured"
    for document in done["documents"]:
        assert document["mssante"]["state"] == "not-configured" and document["mssante"]["job"] is None
        assert "DUI_MSSANTE_SMTP_URL" in document["mssante"]["detail"]
        pdf = web.get(document["pdf"], headers=nurse(app))  # printed instead
        assert pdf.status_code == 200 and pdf.mimetype == "application/pdf" and pdf.data.startswith(b"%PDF")
    assert jobs(app) == []
    assert demo.get(f"Encounter/{STAY}").get_json()["status"] == "onleave"


def test_a_nurse_transfers_but_may_not_send_documents_out(app: Flask, web: FlaskClient, demo: FhirClient,  # noqa: F811
                                                          mailbox: InMemoryMailbox) -> None:
    answer = web.post(f"/api/residents/{MINE}/transfers", json=TRANSFER, headers=nurse(app))
    assert answer.status_code == 201, answer.get_data(as_text=True)
    done = answer.get_json()
    assert done["mssante"] == "not-permitted" and len(done["documents"]) == 2
    assert jobs(app) == [] and mailbox.sent == []
    # without an address, nothing to send: said so
    again = web.post(f"/api/residents/{MINE}/transfers/{done['id']}/return", json={}, headers=nurse(app))
    assert again.status_code == 200, again.get_data(as_text=True)
    named = web.post(f"/api/residents/{MINE}/transfers", json={**TRANSFER, "hospital": {"name": "CH Lyon Sud"}},
                     headers=medecin(app)).get_json()
    assert named["mssante"] == "no-address" and named["hospital"] == {"name": "CH Lyon Sud", "mssante": None}
    # an establishment whose nurses send the FLUDT themselves says so in its policy (DUI_POLICY_FILE)
    svc = app.extensions["dui"]
    saved = svc.policy
    svc.policy = Policy.with_overrides({"default": {"infirmier": {"DocumentReference": "rsu"}}})
    try:
        granted = web.post(f"/api/residents/{OTHER_MINE}/transfers", json=TRANSFER, headers=nurse(app))
    finally:
        svc.policy = saved
    assert granted.status_code == 201 and granted.get_json()["mssante"] == "queued" and len(jobs(app)) == 2


@pytest.mark.conformance
def test_the_return_links_the_fludr_received_and_the_stay_goes_on(
        app: Flask, web: FlaskClient, demo: FhirClient) -> None:  # noqa: F811
    done = web.post(f"/api/residents/{MINE}/transfers", json=TRANSFER, headers=medecin(app)).get_json()
    # the emergency department's FLUDR comes back while she is still there (dui documents import, or MSSanté)
    cda = fludr_for(1)
    filed = demo.post("DocumentReference", {"resourceType": "DocumentReference", "status": "current",
                                            "subject": {"reference": f"Patient/{MINE}"},
                                            "content": [{"attachment": {"contentType": "text/xml",
                                                                        "data": base64.b64encode(cda).decode()}}]})
    assert filed.status_code == 201, filed.get_data(as_text=True)
    fludr = filed.get_json()
    (diagnosis,) = demo.search(f"Condition?subject=Patient/{MINE}&code=J41.0")["entry"]
    assert diagnosis["resource"]["encounter"] == {"reference": f"Encounter/{STAY}"}  # her stay, on leave
    path = f"/api/residents/{MINE}/transfers/{done['id']}/return"
    early = web.post(path, json={"returned_at": "2026-11-30T10:00:00+01:00"}, headers=nurse(app))
    assert early.status_code == 422 and early.get_json()["errors"][0]["field"] == "returned_at"
    not_a_fludr = web.post(path, json={"fludr": done["documents"][1]["id"]}, headers=nurse(app))
    assert not_a_fludr.status_code == 422 and not_a_fludr.get_json()["errors"][0]["field"] == "fludr"
    unknown = web.post(path, json={"fludr": "no-such-document"}, headers=nurse(app))
    assert unknown.status_code == 404
    assert demo.get(f"Task/{done['id']}").get_json()["status"] == "in-progress"  # nothing of those was written
    back = web.post(path, json={"returned_at": "2026-12-02T16:30:00+01:00", "fludr": fludr["id"]},
                    headers=nurse(app))
    assert back.status_code == 200, back.get_data(as_text=True)
    result = conforms(schemas.TransferOut, back.get_json())
    assert result["status"] == "completed" and result["returned_at"] == "2026-12-02T15:30:00.000Z"
    (provenance,) = [e["resource"] for e in demo.search(f"Provenance?entity=DocumentReference/{fludr['id']}")["entry"]]
    assert result["fludr"] == {"id": fludr["id"], "items": len(provenance["target"])}  # all it gave her record
    stay = demo.get(f"Encounter/{STAY}").get_json()
    assert stay["status"] == "in-progress" and stay["location"][0]["status"] == "active"
    assert [h["status"] for h in stay["statusHistory"]] == ["in-progress", "onleave"]
    assert stay["statusHistory"][-1]["period"] == {"start": "2026-12-01T01:15:00.000Z",
                                                   "end": "2026-12-02T15:30:00.000Z"}
    task = demo.get(f"Task/{done['id']}").get_json()
    assert task["status"] == "completed" and task["executionPeriod"]["end"] == "2026-12-02T15:30:00.000Z"
    assert task["output"][0]["valueReference"] == {"reference": f"DocumentReference/{fludr['id']}"}
    twice = web.post(path, json={}, headers=nurse(app))
    assert twice.status_code == 409 and twice.mimetype == "application/problem+json"
    present = [r["id"] for r in web.get("/api/residents", headers=nurse(app)).get_json()["items"]]
    assert MINE in present
    # and she may leave again
    assert web.post(f"/api/residents/{MINE}/transfers", json=TRANSFER, headers=nurse(app)).status_code == 201


def test_refusals_write_nothing(app: Flask, web: FlaskClient, demo: FhirClient) -> None:  # noqa: F811
    before = what_is_written(demo)
    aide = web.post(f"/api/residents/{MINE}/transfers", json=TRANSFER,
                    headers=token(app, "staff", "aide-soignant", PARC))
    assert aide.status_code == 403 and aide.mimetype == "application/problem+json"
    theirs = web.post(f"/api/residents/{THEIRS}/transfers", json=TRANSFER, headers=medecin(app))
    assert theirs.status_code == 404
    future = web.post(f"/api/residents/{MINE}/transfers", json={**TRANSFER, "departed_at": "2099-01-01T00:00:00Z"},
                      headers=medecin(app))
    assert future.status_code == 422 and future.get_json()["errors"][0]["field"] == "departed_at"
    for body, field in (({**TRANSFER, "hospital": {}}, "hospital.name"),
                        ({**TRANSFER, "hospital": {"mssante": "not an address"}}, "hospital.mssante"),
                        ({**TRANSFER, "hospital": {"mssante": f"231066912300104@{sending.PATIENT_DOMAIN}"}},
                         "hospital.mssante"),
                        ({key: v for key, v in TRANSFER.items() if key != "reason"}, "reason"),
                        ({**TRANSFER, "ambulance": "SAMU"}, "ambulance")):
        refused = web.post(f"/api/residents/{MINE}/transfers", json=body, headers=medecin(app))
        assert refused.status_code == 422, (body, refused.get_data(as_text=True))
        assert [e["field"] for e in refused.get_json()["errors"]] == [field]
        assert refused.get_json()["errors"][0]["detail_fr"]
    assert what_is_written(demo) == before
    # an aide may not record the return either; a transfer of another resident is not found
    done = web.post(f"/api/residents/{MINE}/transfers", json=TRANSFER, headers=medecin(app)).get_json()
    again = web.post(f"/api/residents/{MINE}/transfers", json=TRANSFER, headers=medecin(app))
    assert again.status_code == 409 and done["id"] in again.get_json()["detail"]
    path = f"/api/residents/{MINE}/transfers/{done['id']}/return"
    assert web.post(path, json={}, headers=token(app, "staff", "aide-soignant", PARC)).status_code == 403
    assert web.post(f"/api/residents/demo-resident-003/transfers/{done['id']}/return", json={},
                    headers=nurse(app)).status_code == 404
    assert demo.get(f"Task/{done['id']}").get_json()["status"] == "in-progress"


def test_nothing_is_half_written_when_a_part_fails(app: Flask, web: FlaskClient, demo: FhirClient,  # noqa: F811
                                                   mailbox: InMemoryMailbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stay is on leave and both documents are built when queuing the second send fails: all of it is undone."""
    calls = []

    def failing(ctx: Any, docref_id: str, address: str, now: Any) -> Any:
        calls.append(docref_id)
        if len(calls) == 2:
            raise Unavailable("the outbox cannot take the job now")
        return real(ctx, docref_id, address, now)

    real = sending.request_send
    monkeypatch.setattr(sending, "request_send", failing)
    before = what_is_written(demo)
    answer = web.post(f"/api/residents/{MINE}/transfers", json=TRANSFER, headers=medecin(app))
    assert answer.status_code == 503 and answer.mimetype == "application/problem+json"
    assert len(calls) == 2
    assert what_is_written(demo) == before and jobs(app) == []


def test_the_stay_on_leave_is_the_one_in_her_establishment(
        app: Flask, web: FlaskClient, demo: FhirClient) -> None:  # noqa: F811
    """A partner's stay in progress (home hospitalisation, newer than her admission) is not the place she keeps."""
    partner = demo.create({"resourceType": "Organization", "name": "HAD Rhône Nord"})
    had = demo.create({"resourceType": "Encounter", "status": "in-progress",
                       "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HH"},
                       "subject": {"reference": f"Patient/{MINE}"}, "period": {"start": "2026-11-15"},
                       "serviceProvider": {"reference": f"Organization/{partner['id']}"}})
    done = web.post(f"/api/residents/{MINE}/transfers", json=TRANSFER, headers=nurse(app)).get_json()
    assert done["stay_id"] == STAY and demo.get(f"Encounter/{STAY}").get_json()["status"] == "onleave"
    assert demo.get(f"Encounter/{had['id']}").get_json()["status"] == "in-progress"
