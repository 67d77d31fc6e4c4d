"""Clinical documents in the record (docs/documents.md): ``$dlu`` and ``$fludt``, the DocumentReference and its
Binaries, Binary served as itself, the DLU kept current by ``dui worker``."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from lxml import etree
from sqlalchemy import func, select

from dui.cli.worker import rebuild_due_dlus
from dui.demo.data import resident_bundle, setup_bundle
from dui.documents import freshness
from dui.documents.tables import resident_document
from dui.fhir.tables import resource_version
from dui.settings import DocumentSettings
from tests.helpers import FhirClient, ins_identifier, patient

CDA = {"h": "urn:hl7-org:v3"}
PID = "demo-resident-001"


@pytest.fixture
def demo(client: FhirClient) -> FhirClient:
    from datetime import date

    for bundle in (setup_bundle(), resident_bundle(1, date(2026, 11, 30)), resident_bundle(2, date(2026, 11, 30))):
        answer = client.post("", bundle)
        assert answer.status_code == 200, answer.get_data(as_text=True)
    return client


@pytest.fixture
def no_quiet(app: Flask) -> Iterator[None]:
    """The worker rebuilds a stale DLU at once (DUI_DLU_QUIET=0)."""
    svc = app.extensions["dui"]
    saved = svc.settings
    svc.settings = saved.with_(documents=DocumentSettings(dlu_quiet=0, dlu_max_delay=900))
    yield
    svc.settings = saved


def _dlu(client: FhirClient, pid: str = PID, body: Any = None) -> Any:
    return client.post(f"Patient/{pid}/$dlu", body or {"resourceType": "Parameters"})


def _binary(client: FhirClient, docref: dict[str, Any], content_type: str) -> bytes:
    url = next(c["attachment"]["url"] for c in docref["content"] if c["attachment"]["contentType"] == content_type)
    answer = client.get(url, headers={"Accept": content_type})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.content_type.split(";")[0] == content_type
    return bytes(answer.data)


def test_dlu_is_built_as_a_document_reference_with_its_cda_and_pdf(demo: FhirClient) -> None:
    answer = _dlu(demo)
    assert answer.status_code == 201, answer.get_data(as_text=True)
    doc = answer.get_json()
    assert answer.headers["Location"].endswith(f"DocumentReference/{doc['id']}/_history/1")
    assert doc["status"] == "current" and doc["docStatus"] == "final"
    assert doc["type"]["coding"][0]["code"] == "74207-2"
    assert doc["subject"] == {"reference": f"Patient/{PID}"}
    assert doc["custodian"]["reference"] == "Organization/demo-ehpad-le-parc"
    assert doc["context"]["facilityType"]["coding"][0]["code"] == "SA17"
    assert doc["masterIdentifier"]["system"] == "urn:oid:1.2.250.1.999.42.1"
    xml = _binary(demo, doc, "text/xml")
    pdf = _binary(demo, doc, "application/pdf")
    for content, data in zip(doc["content"], (xml, pdf), strict=True):
        assert content["attachment"]["size"] == len(data)
        assert content["attachment"]["hash"] == base64.b64encode(hashlib.sha1(data).digest()).decode()
    assert doc["content"][0]["format"]["code"] == "urn:asip:ci-sis:dlu:2015"
    tree = etree.fromstring(xml)
    assert tree.xpath("h:templateId/@root", namespaces=CDA).count("1.2.250.1.213.1.1.1.22") == 1
    assert tree.xpath("string(h:id/@extension)", namespaces=CDA) == doc["masterIdentifier"]["value"]
    assert pdf.startswith(b"%PDF")


def test_binary_answers_as_itself_unless_a_fhir_format_is_asked(demo: FhirClient) -> None:
    doc = _dlu(demo).get_json()
    url = doc["content"][0]["attachment"]["url"]
    native = demo.get(url, headers={"Accept": "application/xml"})
    assert native.status_code == 200 and native.data.startswith(b"<?xml")
    assert native.headers["X-Content-Type-Options"] == "nosniff"
    as_fhir = demo.get(url, headers={"Accept": "application/fhir+json"})
    assert as_fhir.get_json()["resourceType"] == "Binary"
    assert as_fhir.get_json()["securityContext"] == {"reference": f"Patient/{PID}"}
    assert demo.get(url + "?_format=json", headers={"Accept": "application/xml"}).get_json()["contentType"] == \
        "text/xml"
    assert demo.get(url + "/_history/1", headers={"Accept": "text/xml"}).data.startswith(b"<?xml")


def test_dlu_asked_again_without_a_change_is_the_same_document(demo: FhirClient) -> None:
    first = _dlu(demo).get_json()
    again = _dlu(demo)
    assert again.status_code == 200
    assert again.get_json()["id"] == first["id"] and again.get_json()["meta"]["versionId"] == "1"
    forced = _dlu(demo, body={"resourceType": "Parameters", "parameter": [{"name": "force", "valueBoolean": True}]})
    assert forced.status_code == 201 and forced.get_json()["id"] != first["id"]


def test_a_change_marks_the_dlu_outdated_and_the_worker_replaces_it(app: Flask, demo: FhirClient,
                                                                   no_quiet: None) -> None:
    old = _dlu(demo).get_json()
    assert rebuild_due_dlus(app.extensions["dui"]) == (1, 0)  # the other resident's first DLU
    allergy = {"resourceType": "AllergyIntolerance", "code": {"text": "Amoxicilline"},
               "patient": {"reference": f"Patient/{PID}"}, "criticality": "high"}
    assert demo.post("AllergyIntolerance", allergy).status_code == 201
    told = demo.get(f"DocumentReference/{old['id']}").get_json()
    assert {"system": freshness.FRESHNESS_SYSTEM, "code": "outdated"}.items() <= told["meta"]["tag"][-1].items()
    assert rebuild_due_dlus(app.extensions["dui"]) == (1, 0)
    superseded = demo.get(f"DocumentReference/{old['id']}").get_json()
    assert superseded["status"] == "superseded"
    found = demo.search(f"DocumentReference?subject=Patient/{PID}&type=http://loinc.org|74207-2&status=current")
    assert len(found["entry"]) == 1
    new = found["entry"][0]["resource"]
    assert new["relatesTo"] == [{"code": "replaces", "target": {"reference": f"DocumentReference/{old['id']}"}}]
    assert b"Amoxicilline" in _binary(demo, new, "text/xml")
    assert b"Amoxicilline" not in _binary(demo, old, "text/xml")
    assert rebuild_due_dlus(app.extensions["dui"]) == (0, 0)  # nothing left to do


def test_a_burst_of_changes_gives_one_rebuild(app: Flask, demo: FhirClient, no_quiet: None) -> None:
    _dlu(demo)
    assert rebuild_due_dlus(app.extensions["dui"]) == (1, 0)  # the other resident's first DLU
    allergy = demo.create({"resourceType": "AllergyIntolerance", "code": {"text": "Iode"},
                           "patient": {"reference": f"Patient/{PID}"}})
    for n in range(100):
        changed = {**{k: v for k, v in allergy.items() if k != "meta"}, "note": [{"text": f"note {n}"}]}
        assert demo.put(f"AllergyIntolerance/{allergy['id']}", changed).status_code == 200
    svc = app.extensions["dui"]
    with svc.unit_of_work(write=False) as session:
        before = session.execute(select(func.count()).select_from(resource_version)
                                 .where(resource_version.c.res_type == "DocumentReference")).scalar_one()
    assert rebuild_due_dlus(svc) == (1, 0)
    with svc.unit_of_work(write=False) as session:
        after = session.execute(select(func.count()).select_from(resource_version)
                                .where(resource_version.c.res_type == "DocumentReference")).scalar_one()
    assert after - before == 2  # the new DLU, and the old one superseded


def test_the_worker_waits_for_the_record_to_be_quiet(app: Flask, demo: FhirClient) -> None:
    _dlu(demo)
    demo.create({"resourceType": "Condition", "code": {"text": "Chute"}, "subject": {"reference": f"Patient/{PID}"},
                 "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                "condition-clinical", "code": "active"}]}})
    svc = app.extensions["dui"]
    assert rebuild_due_dlus(svc) == (0, 0)  # DUI_DLU_QUIET: 60 s by default
    with svc.unit_of_work(write=False) as session:
        row = session.execute(select(resident_document).where(resident_document.c.patient_id == PID)).first()
    assert row is not None and row.stale_since is not None


def test_vital_signs_do_not_make_the_dlu_stale(app: Flask, demo: FhirClient) -> None:
    _dlu(demo)
    weight = {"resourceType": "Observation", "status": "final",
              "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                        "code": "vital-signs"}]}],
              "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
              "subject": {"reference": f"Patient/{PID}"}, "effectiveDateTime": "2026-12-01T08:00:00+01:00",
              "valueQuantity": {"value": 61, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}}
    assert demo.post("Observation", weight).status_code == 201
    with app.extensions["dui"].unit_of_work(write=False) as session:
        row = session.execute(select(resident_document).where(resident_document.c.patient_id == PID)).first()
    assert row is not None and row.stale_since is None


def test_fludt_is_built_from_the_record_and_the_transfer(demo: FhirClient) -> None:
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "reason", "valueString": "Chute avec douleur de hanche"},
        {"name": "destination", "valueString": "Urgences du centre hospitalier"},
        {"name": "lastMeal", "valueString": "Dîner complet à 19 h"},
        {"name": "device", "valueString": "Appareil auditif droit"},
        {"name": "belonging", "valueString": "Lunettes"}]}
    answer = demo.post(f"Patient/{PID}/$fludt", body)
    assert answer.status_code == 201, answer.get_data(as_text=True)
    doc = answer.get_json()
    assert doc["content"][0]["format"]["code"] == "urn:asip:ci-sis:fludt:2017"
    xml = _binary(demo, doc, "text/xml")
    tree = etree.fromstring(xml)
    assert "1.2.250.1.213.1.1.1.23" in tree.xpath("h:templateId/@root", namespaces=CDA)
    assert b"Chute avec douleur de hanche" in xml
    missing = demo.post(f"Patient/{PID}/$fludt", {"resourceType": "Parameters"})
    assert missing.status_code == 400 and "reason" in missing.get_data(as_text=True)


def test_document_operations_refuse_what_they_cannot_use(demo: FhirClient) -> None:
    assert _dlu(demo, "personne-inconnue").status_code == 404
    bad = _dlu(demo, body={"resourceType": "Parameters", "parameter": [{"name": "force", "valueString": "oui"}]})
    assert bad.status_code == 400
    unknown = _dlu(demo, body={"resourceType": "Parameters", "parameter": [{"name": "format", "valueString": "x"}]})
    assert unknown.status_code == 400 and "not a parameter" in unknown.get_data(as_text=True)
    assert demo.get(f"Patient/{PID}/$dlu").status_code == 405


# -- documents that come in ---------------------------------------------------------------------------------


def _fludr_example() -> bytes:
    from tests.conftest import conformance_dir

    return (conformance_dir("cda", "ExemplesCDA") / "DLU-EHPAD-FLUDR_2022.01.xml").read_bytes()


def example_patient() -> dict[str, Any]:
    """The patient the official FLUDR example names (a test INS)."""
    return patient(family="PAT-TROIS", given="DOMINIQUE", identifier=[ins_identifier("279035121518989")],
                   birthDate="1979-03-28")


def _inline(content_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "DocumentReference", "status": "current",
            "content": [{"attachment": {"contentType": content_type,
                                        "data": base64.b64encode(data).decode("ascii")}}], **extra}


@pytest.mark.conformance
def test_a_fludr_posted_is_filed_and_read_into_the_record(demo: FhirClient) -> None:
    xml = _fludr_example()
    answer = demo.post("DocumentReference", _inline("text/xml", xml, subject={"reference": f"Patient/{PID}"}))
    assert answer.status_code == 422  # the example's patient is not our resident: identity vigilance
    assert "identity vigilance" in answer.get_data(as_text=True)


@pytest.mark.conformance
def test_the_official_fludr_imported_brings_its_diagnosis_and_treatments_with_provenance(
        app: Flask, client: FhirClient) -> None:
    resident = client.create(example_patient())["id"]
    stay = client.create({"resourceType": "Encounter", "status": "in-progress", "class": {"code": "HH"},
                          "subject": {"reference": f"Patient/{resident}"}})["id"]
    xml = _fludr_example()
    answer = client.post("DocumentReference", _inline("text/xml", xml))
    assert answer.status_code == 201, answer.get_data(as_text=True)
    doc = answer.get_json()
    assert doc["subject"] == {"reference": f"Patient/{resident}"}
    assert doc["context"]["encounter"] == [{"reference": f"Encounter/{stay}"}]
    assert doc["content"][0]["format"]["code"] == "urn:asip:ci-sis:fludr:2017"
    assert _binary(client, doc, "text/xml") == xml
    conditions = client.search(f"Condition?subject=Patient/{resident}")["entry"]
    assert [c["resource"]["code"]["coding"][0]["code"] for c in conditions] == ["J41.0"]
    assert conditions[0]["resource"]["encounter"] == {"reference": f"Encounter/{stay}"}
    treatments = client.search(f"MedicationStatement?subject=Patient/{resident}")["entry"]
    assert treatments and all(t["resource"]["derivedFrom"] == [{"reference": f"DocumentReference/{doc['id']}"}]
                              for t in treatments)
    provenance = client.search(f"Provenance?entity=DocumentReference/{doc['id']}")["entry"][0]["resource"]
    targets = {t["reference"] for t in provenance["target"]}
    assert {f"Condition/{c['resource']['id']}" for c in conditions} <= targets
    again = client.post("DocumentReference", _inline("text/xml", xml))
    assert again.status_code == 200 and again.get_json()["id"] == doc["id"]  # filed once
    assert len(client.search(f"Condition?subject=Patient/{resident}")["entry"]) == 1


@pytest.mark.conformance
def test_dui_documents_import_files_the_fludr(app: Flask, client: FhirClient, tmp_path: Any) -> None:
    resident = client.create(example_patient())["id"]
    path = tmp_path / "fludr.xml"
    path.write_bytes(_fludr_example())
    from click.testing import CliRunner
    from flask.cli import ScriptInfo

    from dui.cli import cli

    def run(*args: str) -> Any:
        return CliRunner().invoke(cli, list(args), obj=ScriptInfo(create_app=lambda: app))

    result = run("documents", "import", str(path))
    assert result.exit_code == 0, result.output
    assert f"on Patient/{resident}" in result.output and "item(s) added" in result.output
    result = run("documents", "import", str(path))
    assert result.exit_code == 0 and "already filed" in result.output
    broken = tmp_path / "broken.xml"
    broken.write_bytes(b"<ClinicalDocument")
    result = run("documents", "import", str(broken))
    assert result.exit_code == 1 and result.output.count("\n") == 1


def test_a_pdf_attached_is_wrapped_in_a_cda_n1(demo: FhirClient) -> None:
    pdf = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
    body = _inline("application/pdf", pdf, subject={"reference": f"Patient/{PID}"},
                   type={"coding": [{"system": "http://loinc.org", "code": "57833-6",
                                     "display": "Prescription for medication"}]},
                   description="Ordonnance du Dr Vidal (scan)")
    answer = demo.post("DocumentReference", body)
    assert answer.status_code == 201, answer.get_data(as_text=True)
    doc = answer.get_json()
    assert [c["attachment"]["contentType"] for c in doc["content"]] == ["text/xml", "application/pdf"]
    assert doc["content"][0]["format"]["code"] == "urn:ihe:iti:xds-sd:pdf:2008"
    assert "data" not in doc["content"][1]["attachment"]
    tree = etree.fromstring(_binary(demo, doc, "text/xml"))
    assert "1.3.6.1.4.1.19376.1.2.20" in tree.xpath("h:templateId/@root", namespaces=CDA)
    assert base64.b64decode(tree.xpath("string(//h:nonXMLBody/h:text)", namespaces=CDA)) == pdf
    assert _binary(demo, doc, "application/pdf") == pdf
    untyped = demo.post("DocumentReference", _inline("application/pdf", pdf, subject={"reference": f"Patient/{PID}"}))
    assert untyped.status_code == 400 and "LOINC" in untyped.get_data(as_text=True)
    fake = demo.post("DocumentReference", _inline("application/pdf", b"MZ\x90\x00", subject={
        "reference": f"Patient/{PID}"}, type=body["type"]))
    assert fake.status_code == 400


NO_OUTBOX = "\ndui worker: 0 outbox job(s) delivered, 0 to retry, 0 dead"


def test_dui_worker_once_and_documents_status(app: Flask, demo: FhirClient, no_quiet: None) -> None:
    from click.testing import CliRunner
    from flask.cli import ScriptInfo

    from dui.cli import cli

    def run(*args: str) -> Any:
        return CliRunner().invoke(cli, list(args), obj=ScriptInfo(create_app=lambda: app))

    def worker() -> str:
        """What ``dui worker --once`` says of the DLUs and the outbox (its audit seal line checked, then left out)."""
        said = run("worker", "--once").output.strip().splitlines()
        assert any(line.startswith("dui worker: audit trail: ") and line.endswith(" entries sealed") for line in said)
        return "\n".join(line for line in said if not line.startswith("dui worker: audit trail: "))

    assert run("documents", "status").output.strip() == "0 current, 0 stale, 2 never built"
    assert worker() == "dui worker: 2 DLU rebuilt, 0 failed" + NO_OUTBOX
    assert run("documents", "status").output.strip() == "2 current, 0 stale, 0 never built"
    demo.create({"resourceType": "Flag", "status": "active", "code": {"text": "Risque de fugue"},
                 "subject": {"reference": f"Patient/{PID}"}})
    assert run("documents", "status").output.strip() == "1 current, 1 stale, 0 never built"
    assert worker() == "dui worker: 1 DLU rebuilt, 0 failed" + NO_OUTBOX
    assert worker() == "dui worker: 0 DLU rebuilt, 0 failed" + NO_OUTBOX


def test_the_dlu_pdf_prints_the_traits_allergies_and_treatments_of_the_record(demo: FhirClient) -> None:
    from io import BytesIO

    from pypdf import PdfReader

    allergy = {"resourceType": "AllergyIntolerance", "code": {"text": "Pénicillines"}, "criticality": "high",
               "patient": {"reference": f"Patient/{PID}"}}
    assert demo.post("AllergyIntolerance", allergy).status_code == 201
    doc = _dlu(demo).get_json()
    text = " ".join(page.extract_text() for page in PdfReader(BytesIO(_binary(demo, doc, "application/pdf"))).pages)
    flat = " ".join(text.split())
    for expected in ("LEFÈVRE", "Hélène", "14/06/1931", "Lyon", "Pénicillines", "Identité qualifiée"):
        assert expected in flat, expected
    treatments = demo.search(f"MedicationRequest?subject=Patient/{PID}")["entry"]
    for entry in treatments:
        assert entry["resource"]["medicationCodeableConcept"]["text"] in flat


def test_no_known_allergy_is_printed_only_when_the_record_says_it(demo: FhirClient) -> None:
    from io import BytesIO

    from pypdf import PdfReader

    from dui.documents.pdf import ALLERGY_NOT_GIVEN, NO_ALLERGY

    def printed(pid: str) -> str:
        doc = _dlu(demo, pid, {"resourceType": "Parameters", "parameter": [{"name": "force", "valueBoolean": True}]})
        pdf = PdfReader(BytesIO(_binary(demo, doc.get_json(), "application/pdf")))
        return " ".join(" ".join(page.extract_text() for page in pdf.pages).split())

    pid = "demo-resident-002"
    for found in demo.search(f"AllergyIntolerance?patient=Patient/{pid}").get("entry", []):
        assert demo.delete(f"AllergyIntolerance/{found['resource']['id']}").status_code in (200, 204)
    assert ALLERGY_NOT_GIVEN in printed(pid) and NO_ALLERGY not in printed(pid)
    demo.create({"resourceType": "AllergyIntolerance", "patient": {"reference": f"Patient/{pid}"},
                 "code": {"coding": [{"system": "http://snomed.info/sct", "code": "716186003",
                                      "display": "No known allergy"}]}})
    text = printed(pid)
    assert NO_ALLERGY in text and ALLERGY_NOT_GIVEN not in text


def test_a_change_committed_during_a_rebuild_leaves_the_new_dlu_stale(app: Flask, demo: FhirClient, backend: str,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The rebuild claims the resident's row before reading her record: a write arriving once the record is read
    waits for the rebuild to commit, then marks the new DLU stale (PostgreSQL; on SQLite writers never overlap)."""
    import threading

    from dui.auth.actor import SYSTEM
    from dui.documents import operations

    if backend != "postgresql":
        pytest.skip("on SQLite one writer at a time: no write can commit during a rebuild")
    svc = app.extensions["dui"]
    _dlu(demo)
    read, release = threading.Event(), threading.Event()
    answers: list[int] = []
    reading = operations.read_versions

    def read_then_wait(*args: Any, **kw: Any) -> Any:
        versions = reading(*args, **kw)
        read.set()  # the record is read: a change now is one this DLU will not show
        release.wait(10)
        return versions

    monkeypatch.setattr(operations, "read_versions", read_then_wait)

    def rebuild() -> None:
        with svc.unit_of_work(write=True) as session:
            operations.refresh_dlu(svc.fhir_context(session, SYSTEM), PID, force=True)

    def change() -> None:
        read.wait(10)
        answers.append(demo.post("AllergyIntolerance", {
            "resourceType": "AllergyIntolerance", "code": {"text": "Latex"},
            "patient": {"reference": f"Patient/{PID}"}}).status_code)

    builder, writer = threading.Thread(target=rebuild), threading.Thread(target=change)
    builder.start()
    writer.start()
    read.wait(10)
    writer.join(1.0)
    assert writer.is_alive()  # the write waits for the rebuild's lock on the resident's row
    release.set()
    builder.join(20)
    writer.join(20)
    assert answers == [201]
    with svc.unit_of_work(write=False) as session:
        row = session.execute(select(resident_document).where(resident_document.c.patient_id == PID)).one()
    assert row.stale_since is not None  # the DLU just built does not show the latex allergy: stale again
