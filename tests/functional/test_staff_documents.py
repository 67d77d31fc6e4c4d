"""A resident's documents through the staff API (docs/staff-api.md, "Transfer to hospital and documents"): the DLU
built now, the list, the PDF served as application/pdf and readable (its text read back with pypdf), under the
authorization and audit of the Binary under /fhir; the MSSanté inbox of the caller's establishment, its mail filed
on a resident or rejected by the operations of ``dui mssante inbox``, another establishment's mail invisible. On
SQLite and PostgreSQL."""

from __future__ import annotations

import base64
from datetime import date
from io import BytesIO
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from pypdf import PdfReader

from dui.audit import trail
from dui.demo.data import FIRST_RESIDENT, resident_bundle
from dui.messaging.tables import mssante_inbox
from dui.web.staff import document_schemas as schemas
from tests.functional.test_mssante_inbox import (  # noqa: F401  (fixtures)
    RESIDENT,
    TILLEULS,
    Boxes,
    boxes,
    cli_run,
    demo,
    fludr_for,
    message,
    rows,
    worker,
)
from tests.functional.test_staff_api import MINE, PARC, THEIRS, token
from tests.functional.test_staff_transfer import conforms
from tests.helpers import FhirClient


@pytest.fixture
def web(app: Flask, demo: FhirClient) -> FlaskClient:  # noqa: F811
    return app.test_client()


def nurse(app: Flask, finess: str = PARC) -> dict[str, str]:
    return token(app, "staff", "infirmier", finess)


def medecin(app: Flask, finess: str = PARC) -> dict[str, str]:
    return token(app, "staff", "medecin", finess)


def aide(app: Flask, finess: str = PARC) -> dict[str, str]:
    return token(app, "staff", "aide-soignant", finess)


def text_of(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(BytesIO(pdf)).pages)


def test_the_dlu_built_now_is_listed_and_its_pdf_is_readable(app: Flask, web: FlaskClient) -> None:
    built = web.post(f"/api/residents/{MINE}/dlu", json={}, headers=nurse(app))
    assert built.status_code == 200, built.get_data(as_text=True)
    first = conforms(schemas.DluOut, built.get_json())
    assert first["built"] is True and first["document"]["kind"] == "DLU"
    document = first["document"]
    assert document["status"] == "current" and document["dmp"] is None and document["outdated"] is False
    assert document["pdf"] == f"/api/documents/{document['id']}/pdf" and document["type"] == "74207-2"
    again = web.post(f"/api/residents/{MINE}/dlu", json={}, headers=nurse(app)).get_json()
    assert again["built"] is False and again["document"]["id"] == document["id"]  # the record has not changed
    listed = conforms(schemas.DocumentPage, web.get(f"/api/residents/{MINE}/documents", headers=nurse(app)).get_json())
    assert listed["items"][0]["id"] == document["id"] and {d["kind"] for d in listed["items"]} >= {"DLU", "other"}
    pdf = web.get(document["pdf"], headers=nurse(app))
    assert pdf.status_code == 200 and pdf.mimetype == "application/pdf", pdf.get_data(as_text=True)
    assert pdf.headers["X-Content-Type-Options"] == "nosniff"
    assert pdf.headers["Content-Disposition"] == f'inline; filename="DLU-{document["id"]}.pdf"'
    text = text_of(pdf.data)
    assert "Dossier de liaison d'urgence" in text
    assert FIRST_RESIDENT.family.upper() in text.upper() and FIRST_RESIDENT.given[0] in text
    # audited like the Binary under /fhir: the read, naming the resident
    with app.extensions["dui"].unit_of_work(write=False) as session:
        read = [row for row, _ in trail.entries(session, patient=MINE) if row["detail"] == "api document-pdf"]
    assert len(read) == 1 and read[0]["action"] == "read" and read[0]["outcome"] == "success"
    # a new version whatever the record: for who may write documents
    assert web.post(f"/api/residents/{MINE}/dlu", json={"force": True}, headers=nurse(app)).status_code == 403
    forced = web.post(f"/api/residents/{MINE}/dlu", json={"force": True}, headers=medecin(app)).get_json()
    assert forced["built"] is True and forced["document"]["id"] != document["id"]
    states = {d["id"]: d["status"] for d in web.get(f"/api/residents/{MINE}/documents?limit=2",
                                                    headers=nurse(app)).get_json()["items"]}
    assert states == {forced["document"]["id"]: "current", document["id"]: "superseded"}


def test_an_aide_and_another_establishment_get_no_document(app: Flask, web: FlaskClient, demo: FhirClient) -> None:  # noqa: F811
    document = web.post(f"/api/residents/{MINE}/dlu", json={}, headers=nurse(app)).get_json()["document"]
    for answer in (web.get(f"/api/residents/{MINE}/documents", headers=aide(app)),
                   web.get(document["pdf"], headers=aide(app)),
                   web.post(f"/api/residents/{MINE}/dlu", json={}, headers=aide(app))):
        assert answer.status_code == 403 and answer.mimetype == "application/problem+json"
    for answer in (web.get(f"/api/residents/{MINE}/documents", headers=nurse(app, TILLEULS)),
                   web.get(document["pdf"], headers=nurse(app, TILLEULS)),
                   web.post(f"/api/residents/{MINE}/dlu", json={}, headers=nurse(app, TILLEULS)),
                   web.get(f"/api/residents/{THEIRS}/documents", headers=nurse(app)),
                   web.get("/api/documents/no-such-document/pdf", headers=nurse(app))):
        assert answer.status_code == 404 and answer.mimetype == "application/problem+json"
    with app.extensions["dui"].unit_of_work(write=False) as session:
        refused = [(row["actor_id"], row["status"], row["outcome"]) for row, _ in trail.entries(session)
                   if row["detail"] == "api document-pdf"]
    assert refused == [(f"aide-soignant-{PARC}", 403, "denied"), (f"infirmier-{TILLEULS}", 404, "failed"),
                       (f"infirmier-{PARC}", 404, "failed")]  # refusals are recorded too


@pytest.mark.conformance
def test_a_received_cda_is_listed_and_has_no_pdf(app: Flask, web: FlaskClient, demo: FhirClient) -> None:  # noqa: F811
    """Filed by a médecin of her establishment through /fhir: the import's Provenance is the server's (it belongs to
    no resident, so her scoped repository could not have written it)."""
    document = {"resourceType": "DocumentReference", "status": "current",
                "subject": {"reference": f"Patient/{RESIDENT}"},
                "content": [{"attachment": {"contentType": "text/xml",
                                            "data": base64.b64encode(fludr_for(2)).decode()}}]}
    filed = web.post("/fhir/DocumentReference", json=document,
                     headers={**medecin(app, TILLEULS), "Content-Type": "application/fhir+json"})
    assert filed.status_code == 201, filed.get_data(as_text=True)
    assert demo.search(f"Provenance?entity=DocumentReference/{filed.get_json()['id']}")["total"] == 1
    listed = web.get(f"/api/residents/{RESIDENT}/documents", headers=nurse(app, TILLEULS)).get_json()["items"]
    fludr = next(d for d in listed if d["id"] == filed.get_json()["id"])
    assert fludr["kind"] == "FLUDR" and fludr["pdf"] is None and fludr["author"]
    missing = web.get(f"/api/documents/{fludr['id']}/pdf", headers=nurse(app, TILLEULS))
    assert missing.status_code == 404 and "no PDF" in missing.get_json()["detail"]


def pending(app: Flask) -> dict[str, Any]:
    return {str(r["id"]): r for r in rows(app, mssante_inbox)}


@pytest.mark.conformance
def test_the_inbox_is_the_establishments_and_its_mail_is_filed_or_rejected(app: Flask, web: FlaskClient,
                                                                           demo: FhirClient,  # noqa: F811
                                                                           boxes: Boxes) -> None:  # noqa: F811
    boxes.inbox.deliver(message(fludr_for(2, ins=None)))  # 903: a FLUDR naming her without an INS
    boxes.inbox.deliver(message(fludr_for(2, ins="279035121518989")))  # 902: nobody holds that INS
    assert worker(app).startswith("dui worker: MSSanté inbox: 0 filed, 2 queued")
    missing_ins, unknown_ins = sorted(pending(app), key=int)
    # another establishment sees none of it, and cannot act on it
    assert web.get("/api/inbox", headers=medecin(app)).get_json() == {"items": [], "next_cursor": None}
    for path, body in ((f"/api/inbox/{missing_ins}/assign", {"resident_id": MINE}),
                       (f"/api/inbox/{unknown_ins}/reject", {"reason": "pas chez nous"})):
        refused = web.post(path, json=body, headers=medecin(app))
        assert refused.status_code == 404 and refused.mimetype == "application/problem+json"
    # the receiving establishment's staff see it: when, from which domain, why, the MSSanté code
    listed = web.get("/api/inbox", headers=nurse(app, TILLEULS))
    assert listed.status_code == 200, listed.get_data(as_text=True)
    items = conforms(schemas.InboxPage, listed.get_json())["items"]
    assert [(i["id"], i["code"], i["state"]) for i in items] == [(missing_ins, "903", "pending"),
                                                                 (unknown_ins, "902", "pending")]
    assert items[0]["sender_domain"] == "ch-partenaire.mssante.fr" and "without an INS" in items[0]["reason"]
    assert items[0]["received_at"] and items[0]["code_label"]
    # who may not read documents has nothing to do with it; filing a document is the médecin's by default
    assert web.get("/api/inbox", headers=aide(app, TILLEULS)).status_code == 403
    assert web.post(f"/api/inbox/{unknown_ins}/reject", json={"reason": "x"},
                    headers=aide(app, TILLEULS)).status_code == 403
    assert web.post(f"/api/inbox/{missing_ins}/assign", json={"resident_id": RESIDENT},
                    headers=nurse(app, TILLEULS)).status_code == 403
    # identity vigilance: not her birth date and names, nothing filed
    assert demo.post("", resident_bundle(4, date(2026, 11, 30))).status_code == 200  # another Tilleuls resident
    wrong = web.post(f"/api/inbox/{missing_ins}/assign", json={"resident_id": "demo-resident-004"},
                     headers=medecin(app, TILLEULS))
    assert wrong.status_code == 422 and "identity vigilance" in wrong.get_json()["detail"]
    assert pending(app)[missing_ins]["state"] == "pending"
    assert demo.search("DocumentReference?format=urn:asip:ci-sis:fludr:2017")["total"] == 0
    # filed on her: the document and its items in her record, the Task completed
    filed = web.post(f"/api/inbox/{missing_ins}/assign", json={"resident_id": RESIDENT},
                     headers=medecin(app, TILLEULS))
    assert filed.status_code == 200, filed.get_data(as_text=True)
    done = conforms(schemas.InboxItemOut, filed.get_json())
    assert done["state"] == "assigned" and done["resident_id"] == RESIDENT and len(done["documents"]) == 1
    assert demo.get(f"DocumentReference/{done['documents'][0]}").get_json()["subject"] == {
        "reference": f"Patient/{RESIDENT}"}
    assert demo.search(f"Condition?subject=Patient/{RESIDENT}&code=J41.0")["total"] == 1
    task = demo.get(f"Task/{done['task_id']}").get_json()
    assert task["status"] == "completed" and task["for"] == {"reference": f"Patient/{RESIDENT}"}
    twice = web.post(f"/api/inbox/{missing_ins}/assign", json={"resident_id": RESIDENT},
                     headers=medecin(app, TILLEULS))
    assert twice.status_code == 409
    # rejected by a nurse, with the reason
    rejected = web.post(f"/api/inbox/{unknown_ins}/reject", json={"reason": "pas une résidente de l'EHPAD"},
                        headers=nurse(app, TILLEULS))
    assert rejected.status_code == 200, rejected.get_data(as_text=True)
    decision = conforms(schemas.InboxItemOut, rejected.get_json())
    assert decision["state"] == "rejected" and decision["note"] == "pas une résidente de l'EHPAD"
    assert web.get("/api/inbox", headers=nurse(app, TILLEULS)).get_json()["items"] == []
    # the same queue as the CLI's, decided by the staff members named
    decided = pending(app)
    assert decided[missing_ins]["decided_by"] == f"staff:medecin-{TILLEULS}"
    assert decided[unknown_ins]["decided_by"] == f"staff:infirmier-{TILLEULS}"
    listed_cli = cli_run(app, "mssante", "inbox", "list", "--all").output
    assert listed_cli.count("\tassigned") == 1 and listed_cli.count("\trejected") == 1
    with app.extensions["dui"].unit_of_work(write=False) as session:
        assigned = [row for row, _ in trail.entries(session, patient=RESIDENT) if row["action"] == "mssante-assign"]
    assert len(assigned) == 1 and assigned[0]["actor_id"] == f"medecin-{TILLEULS}"


def test_inbox_ids_that_are_not_numbers_are_not_found(app: Flask, web: FlaskClient) -> None:
    for iid in ("abc", "1.5", "99999999999999999999"):
        answer = web.post(f"/api/inbox/{iid}/reject", json={"reason": "x"}, headers=nurse(app))
        assert answer.status_code == 404 and answer.mimetype == "application/problem+json"
