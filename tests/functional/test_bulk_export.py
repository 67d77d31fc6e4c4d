"""FHIR Bulk Data Access 2.0 ``$export`` (docs/bulk-export.md): kick-off, the job run by the worker's outbox, status,
the NDJSON files (sealed at rest, split by a byte bound), ``_type``, ``_since``, ``_typeFilter``, scoped clients,
cancel, expiry, audit; and the CLI's ``dui export --ndjson``. Over HTTP with Flask's test client, on SQLite and
PostgreSQL."""

from __future__ import annotations

import base64
import dataclasses
import json
import tracemalloc
from collections import Counter
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from werkzeug.test import TestResponse

from dui.audit.tables import audit_event, audit_event_patient
from dui.auth.actor import CLI
from dui.bulk import jobs
from dui.bulk.tables import bulk_export
from dui.cli.worker import run_outbox
from dui.demo.data import ESTABLISHMENTS, resident_bundle, setup_bundle
from tests import testscripts
from tests.conftest import conformance_dir, empty_database
from tests.functional.test_subscriptions import api_client
from tests.helpers import FhirClient

TILLEULS, PARC = ESTABLISHMENTS[0]["finess"], ESTABLISHMENTS[1]["finess"]
ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
READ_ALL = "system/*.rs"
BULK = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition"


@pytest.fixture
def exports(app: Flask, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Exports written under ``tmp_path`` in small pages (many pages, many batches)."""
    svc = app.extensions["dui"]
    folder = tmp_path / "exports"
    conf = dataclasses.replace(svc.settings.export, directory=str(folder), page=7, batch_bytes=4096)
    monkeypatch.setattr(svc, "settings", svc.settings.with_(export=conf))
    return folder


def with_export(app: Flask, monkeypatch: pytest.MonkeyPatch, **changes: Any) -> None:
    svc = app.extensions["dui"]
    monkeypatch.setattr(svc, "settings", svc.settings.with_(export=dataclasses.replace(svc.settings.export,
                                                                                      **changes)))


@pytest.fixture
def demo(client: FhirClient, exports: Path) -> FhirClient:
    """The demo: two EHPADs (Les Tilleuls: residents 2, 4; Le Parc: 1, 3, 5), each resident's record."""
    for bundle in (setup_bundle(), *(resident_bundle(i, date(2026, 11, 30)) for i in range(1, 6))):
        assert client.post("", bundle).status_code == 200
    return client


def kick(web: FlaskClient, path: str, headers: dict[str, str] | None = None, **params: str) -> TestResponse:
    return web.get(f"/fhir/{path}", query_string=params, headers={**ASYNC, **(headers or {})})


def run_and_manifest(app: Flask, web: FlaskClient, location: str, headers: dict[str, str] | None = None
                     ) -> dict[str, Any]:
    pending = web.get(location, headers=headers or {})
    assert pending.status_code == 202, pending.get_data(as_text=True)
    assert pending.headers["X-Progress"] and pending.headers["Retry-After"]
    run_outbox(app.extensions["dui"])
    done = web.get(location, headers=headers or {})
    assert done.status_code == 200, done.get_data(as_text=True)
    manifest: dict[str, Any] = done.get_json()
    assert manifest["error"] == [] and manifest["transactionTime"]
    return manifest


def export(app: Flask, web: FlaskClient, path: str, headers: dict[str, str] | None = None,
           **params: str) -> dict[str, Any]:
    answer = kick(web, path, headers, **params)
    assert answer.status_code == 202, answer.get_data(as_text=True)
    return run_and_manifest(app, web, answer.headers["Content-Location"], headers)


def download(web: FlaskClient, manifest: dict[str, Any], headers: dict[str, str] | None = None
             ) -> dict[str, list[dict[str, Any]]]:
    """Every file of the manifest, parsed: type -> resources; each line one resource of the file's type."""
    found: dict[str, list[dict[str, Any]]] = {}
    for item in manifest["output"]:
        answer = web.get(item["url"], headers={"Accept": "application/fhir+ndjson", **(headers or {})})
        assert answer.status_code == 200, answer.get_data(as_text=True)
        assert answer.content_type.startswith("application/fhir+ndjson")
        lines = answer.get_data().split(b"\n")
        assert lines[-1] == b""
        resources = [json.loads(line) for line in lines[:-1]]
        assert len(resources) == item["count"]
        assert {r["resourceType"] for r in resources} == {item["type"]}
        found.setdefault(item["type"], []).extend(resources)
    return found


def ids(found: dict[str, list[dict[str, Any]]], rtype: str) -> set[str]:
    return {r["id"] for r in found.get(rtype, [])}


def patients_of(store: FhirClient) -> set[str]:
    return {e["resource"]["id"] for e in store.search("Patient?_count=100").get("entry", [])}


def test_a_system_export_from_kickoff_to_files(app: Flask, demo: FhirClient, exports: Path) -> None:
    web = app.test_client()
    answer = kick(web, "$export")
    assert answer.status_code == 202, answer.get_data(as_text=True)
    location = answer.headers["Content-Location"]
    assert location.startswith("http://") and "/fhir/$export-status/" in location
    manifest = run_and_manifest(app, web, location)
    assert manifest["request"].endswith("/fhir/$export")
    found = download(web, manifest)
    assert ids(found, "Patient") == patients_of(demo)
    for rtype in ("Observation", "Organization", "Encounter"):
        total = demo.search(f"{rtype}?_summary=count")["total"]
        assert len(found[rtype]) == total, rtype
    assert "Subscription" not in found
    # sealed at rest: no file in the export folder holds the JSON in clear
    files = [p for p in exports.rglob("*") if p.is_file()]
    assert files and not any(b'"resourceType"' in p.read_bytes() for p in files)
    assert oct(next(exports.iterdir()).stat().st_mode & 0o777) == "0o700"


def test_kickoff_refusals(app: Flask, demo: FhirClient) -> None:
    web = app.test_client()
    plain = web.get("/fhir/Patient/$export", headers={"Accept": "application/fhir+json"})
    assert plain.status_code == 400 and "respond-async" in plain.get_data(as_text=True)
    for params in ({"_outputFormat": "text/csv"}, {"_type": "Nothing"}, {"_since": "yesterday"},
                   {"_typeFilter": "Observation?_sort=date"}, {"_typeFilter": "Observation?nonsense=1"},
                   {"_elements": "id"}, {"_type": "Organization"}):
        answer = kick(web, "Patient/$export", **params)
        assert answer.status_code == 400, (params, answer.get_data(as_text=True))
        assert answer.get_json()["resourceType"] == "OperationOutcome"
    assert kick(web, "Group/$export").status_code == 400
    assert kick(web, "Group/unknown/$export").status_code == 404
    for fmt in ("application/fhir+ndjson", "application/ndjson", "ndjson"):
        assert kick(web, "$export", _outputFormat=fmt).status_code == 202
    assert web.get("/fhir/$export-status/00000000000000000000000000000000").status_code == 404


def test_type_since_and_type_filter(app: Flask, demo: FhirClient) -> None:
    web = app.test_client()
    found = download(web, export(app, web, "Patient/$export", _type="Patient,Observation"))
    assert set(found) == {"Patient", "Observation"}
    assert ids(found, "Patient") == patients_of(demo)
    # _since: what changed after the instant only
    since = app.extensions["dui"].clock() + timedelta(seconds=1)
    later = app.extensions["dui"].clock
    del later
    patient = demo.get("Patient/demo-resident-001").get_json()
    patient["active"] = False
    import time

    time.sleep(1.2)
    assert demo.put("Patient/demo-resident-001", patient).status_code == 200
    instant = since.isoformat().replace("+00:00", "Z")
    found = download(web, export(app, web, "$export", _since=instant))
    assert set(found) == {"Patient"} and ids(found, "Patient") == {"demo-resident-001"}
    # _typeFilter: the search, run as the ordinary search parser reads it
    weights = demo.search("Observation?code=http://loinc.org|29463-7&_summary=count")["total"]
    assert weights
    found = download(web, export(app, web, "Patient/$export", _type="Observation",
                                 _typeFilter="Observation?code=http://loinc.org%7C29463-7"))
    assert len(found["Observation"]) == weights
    assert all(o["code"]["coding"][0]["code"] == "29463-7" for o in found["Observation"])


def test_files_are_split_by_bytes(app: Flask, demo: FhirClient, monkeypatch: pytest.MonkeyPatch) -> None:
    with_export(app, monkeypatch, file_bytes=3000)
    web = app.test_client()
    manifest = export(app, web, "Patient/$export", _type="Observation")
    assert len(manifest["output"]) > 2 and {o["type"] for o in manifest["output"]} == {"Observation"}
    found = download(web, manifest)
    total = demo.search("Observation?_summary=count")["total"]
    assert len(found["Observation"]) == total == len(ids(found, "Observation"))
    for item in manifest["output"]:
        body = web.get(item["url"]).get_data()
        assert len(body) <= 3000 or item["count"] == 1


def test_a_scoped_client_exports_its_residents_only(app: Flask, demo: FhirClient, tmp_path: Path) -> None:
    web = app.test_client()
    _, tilleuls = api_client(app, tmp_path, TILLEULS, READ_ALL)
    _, parc = api_client(app, tmp_path, PARC, READ_ALL)
    answer = kick(web, "Patient/$export", tilleuls)
    assert answer.status_code == 202, answer.get_data(as_text=True)
    location = answer.headers["Content-Location"]
    # somebody else's export does not exist for another client, nor for an anonymous caller
    assert web.get(location, headers=parc).status_code == 404
    manifest = run_and_manifest(app, web, location, tilleuls)
    assert manifest["requiresAccessToken"] is True
    mine = {"demo-resident-002", "demo-resident-004"}
    found = download(web, manifest, tilleuls)
    assert ids(found, "Patient") == mine
    assert web.get(location, headers=parc).status_code == 404
    for item in manifest["output"]:
        assert web.get(item["url"], headers=parc).status_code == 404
    for rtype, resources in found.items():
        for resource in resources:
            text = json.dumps(resource)
            assert not any(f"Patient/demo-resident-00{i}\"" in text for i in (1, 3, 5)), rtype
    # the job's audit entry names exactly those residents
    with app.extensions["dui"].unit_of_work(write=False) as session:
        entry = session.execute(select(audit_event.c.seq, audit_event.c.actor_kind, audit_event.c.count)
                                .where(audit_event.c.action == "bulk-export")).one()
        named = set(session.execute(select(audit_event_patient.c.patient_id)
                                    .where(audit_event_patient.c.seq == entry.seq)).scalars())
    assert entry.actor_kind == "client" and entry.count == sum(o["count"] for o in manifest["output"])
    assert named == mine
    # at system level: its residents and the directory data (organizations...), nothing of Le Parc's residents
    everything = download(web, export(app, web, "$export", tilleuls), tilleuls)
    assert ids(everything, "Patient") == mine and everything["Organization"]
    assert all("Patient/demo-resident-001\"" not in json.dumps(r) for rs in everything.values() for r in rs)


def test_a_client_exports_only_the_types_it_may_read(app: Flask, demo: FhirClient, tmp_path: Path) -> None:
    web = app.test_client()
    _, headers = api_client(app, tmp_path, PARC, "system/Patient.rs")
    found = download(web, export(app, web, "Patient/$export", headers), headers)
    assert set(found) == {"Patient"} and ids(found, "Patient") == {"demo-resident-001", "demo-resident-003",
                                                                    "demo-resident-005"}
    assert kick(web, "Patient/$export", headers, _type="Observation").status_code == 403
    chained = kick(web, "Patient/$export", headers, _typeFilter="Patient?_has:Observation:patient:code=x")
    assert chained.status_code == 403, chained.get_data(as_text=True)
    assert app.test_client().head("/fhir/$export", headers=ASYNC).status_code == 405


def test_staff_may_not_export(app: Flask, demo: FhirClient) -> None:
    from tests.functional.test_staff_api import token

    nurse = token(app, "staff", "infirmier", TILLEULS)
    assert kick(app.test_client(), "Patient/$export", nurse).status_code == 403


def test_a_group_export_holds_its_members_records(app: Flask, demo: FhirClient) -> None:
    group = demo.create({"resourceType": "Group", "type": "person", "actual": True,
                         "member": [{"entity": {"reference": "Patient/demo-resident-003"}}]})
    web = app.test_client()
    found = download(web, export(app, web, f"Group/{group['id']}/$export"))
    assert ids(found, "Patient") == {"demo-resident-003"}
    for resources in found.values():
        for resource in resources:
            assert "demo-resident-001" not in json.dumps(resource)
    assert found["Observation"]
    # the Group deleted before the worker runs: the export fails, its status says so (500, OperationOutcome)
    location = kick(web, f"Group/{group['id']}/$export").headers["Content-Location"]
    assert demo.delete(f"Group/{group['id']}").status_code in (200, 204)
    run_outbox(app.extensions["dui"])
    failed = web.get(location)
    assert failed.status_code == 500 and failed.get_json()["resourceType"] == "OperationOutcome"
    assert "does not exist" in failed.get_json()["issue"][0]["diagnostics"]


def test_documents_are_exported_with_their_binaries(app: Flask, demo: FhirClient) -> None:
    pdf = {"resourceType": "Binary", "contentType": "application/pdf", "data": "JVBERi0xLjQK" * 2000,
           "securityContext": {"reference": "Patient/demo-resident-002"}}
    created = demo.create(pdf)
    web = app.test_client()
    found = download(web, export(app, web, "Patient/$export", _type="Binary"))
    assert created["id"] in ids(found, "Binary")


def test_delete_cancels_and_removes_the_files(app: Flask, demo: FhirClient, exports: Path) -> None:
    web = app.test_client()
    location = kick(web, "$export").headers["Content-Location"]
    assert web.delete(location).status_code == 202
    assert web.get(location).status_code == 404
    run_outbox(app.extensions["dui"])  # the job finds it cancelled and writes nothing
    assert not any(exports.rglob("*.ndjson"))
    manifest = export(app, web, "$export", _type="Patient")
    assert web.delete(manifest["output"][0]["url"].replace("$export-file", "$export-status").rsplit("/", 1)[0]
                      ).status_code == 202
    assert web.get(manifest["output"][0]["url"]).status_code == 404
    assert not any(exports.rglob("*.ndjson"))


def test_expired_files_are_gone(app: Flask, demo: FhirClient, exports: Path) -> None:
    svc = app.extensions["dui"]
    web = app.test_client()
    manifest = export(app, web, "$export", _type="Patient")
    url = manifest["output"][0]["url"]
    export_id = url.split("/")[-2]
    with svc.unit_of_work(write=True) as session:
        session.execute(bulk_export.update().values(expires_at=svc.clock() - timedelta(seconds=1)))
    assert web.get(url).status_code == 410
    with svc.unit_of_work(write=True) as session:
        assert jobs.remove_expired(session, svc.settings.export.directory, svc.clock()) == 1
    assert web.get(url).status_code == 404
    assert not (exports / export_id).exists()
    # `dui purge expired` removes them too, files included
    url = export(app, web, "$export", _type="Patient")["output"][0]["url"]
    export_id = url.split("/")[-2]
    assert (exports / export_id).exists()
    with svc.unit_of_work(write=True) as session:
        session.execute(bulk_export.update().values(expires_at=svc.clock() - timedelta(seconds=1)))
    dry = app.test_cli_runner().invoke(args=["purge", "expired"])
    assert "bulk_export 1" in dry.output and (exports / export_id).exists()
    done = app.test_cli_runner().invoke(args=["purge", "expired", "--yes"])
    assert done.exit_code == 0, done.output
    assert not (exports / export_id).exists() and web.get(url).status_code == 404


def test_memory_stays_flat(app: Flask, client: FhirClient, exports: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Four times more resources, the same peak: what the export holds at once is a batch, not the type."""
    with_export(app, monkeypatch, page=50, batch_bytes=16_384)
    svc = app.extensions["dui"]
    web = app.test_client()

    def add(count: int) -> None:
        with svc.unit_of_work(write=True) as session:
            store = svc.fhir_context(session, CLI).repo
            for i in range(count):
                store.create("Basic", {"resourceType": "Basic", "code": {"text": f"note {i} " + "x" * 1000}})

    def measured() -> tuple[int, int]:
        location = kick(web, "$export", _type="Basic").headers["Content-Location"]
        tracemalloc.start()
        try:
            run_outbox(svc)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        manifest = web.get(location).get_json()
        size = sum(len(web.get(o["url"]).get_data()) for o in manifest["output"])
        return peak, size

    add(1000)
    measured()  # warms the statement caches
    small, small_size = measured()
    add(3000)
    large, large_size = measured()
    assert large_size > 4 * 1_000_000 and large_size > 3.5 * small_size
    assert large < 1.5 * small + 100_000, (small, large)
    assert large < large_size / 3, (large, large_size)


def test_the_cli_writes_the_same_files(app: Flask, demo: FhirClient, tmp_path: Path) -> None:
    out = tmp_path / "ndjson"
    result = app.test_cli_runner().invoke(args=["export", "--ndjson", str(out), "--type", "Patient,Observation"])
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in out.iterdir())
    assert "Patient.ndjson" in files and "Observation.ndjson" in files
    patients = [json.loads(line) for line in (out / "Patient.ndjson").read_bytes().splitlines()]
    assert {p["id"] for p in patients} == patients_of(demo)
    counts = Counter(p.name.split(".")[0] for p in out.iterdir())
    assert set(counts) == {"Patient", "Observation"}


def iter_lines(body: bytes) -> Iterator[bytes]:
    yield from body.splitlines()


def test_the_capability_statement_lists_the_exports(app: Flask, client: FhirClient) -> None:
    rest = client.get("metadata").get_json()["rest"][0]
    assert {"name": "export", "definition": f"{BULK}/export"} in rest["operation"]
    by_type = {r["type"]: r.get("operation", []) for r in rest["resource"]}
    assert {"name": "export", "definition": f"{BULK}/patient-export"} in by_type["Patient"]
    assert {"name": "export", "definition": f"{BULK}/group-export"} in by_type["Group"]
    assert not any("export-status" in json.dumps(ops) or "export-file" in json.dumps(ops)
                   for ops in [rest["operation"], *by_type.values()])


TESTSCRIPTS = ("testscripts", "mock-health", "testscripts", "bulk-data-v2")


@pytest.mark.parametrize("level", ["MUST", "SHOULD", "MAY"])
def test_the_mock_health_bulk_data_testscripts(app: Flask, demo: FhirClient, level: str) -> None:
    folder = conformance_dir(*TESTSCRIPTS, level)
    scripts = sorted(folder.glob("*.json"))
    assert scripts, f"no TestScript in {folder}"
    for path in scripts:
        result = testscripts.run(app.test_client(), json.loads(path.read_text()))
        assert not result.failures, f"{path.name}: {result.failures}"
        assert result.passed, f"{path.name}: no assert evaluated"


def test_the_testscript_evaluator_fails_what_it_cannot_evaluate(app: Flask, client: FhirClient) -> None:
    operation = {"type": {"code": "capabilities"}}
    script = {"name": "odd", "test": [{"id": "t", "action": [
        {"operation": operation}, {"assert": {"label": "ok", "response": "okay"}},
        {"assert": {"label": "odd", "minimumId": "x"}},
        {"assert": {"label": "wrong", "responseCode": "201"}}]}]}
    result = testscripts.run(app.test_client(), script)
    assert result.passed == ["ok"]
    assert len(result.failures) == 2 and "cannot evaluate minimumId" in result.failures[0]


def test_a_posted_kickoff_reads_its_parameters(app: Flask, demo: FhirClient) -> None:
    web = app.test_client()
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "_type", "valueString": "Patient"}, {"name": "_outputFormat", "valueString": "ndjson"}]}
    answer = web.post("/fhir/Patient/$export", json=body,
                      headers={**ASYNC, "Content-Type": "application/fhir+json"})
    assert answer.status_code == 202, answer.get_data(as_text=True)
    found = download(web, run_and_manifest(app, web, answer.headers["Content-Location"]))
    assert set(found) == {"Patient"}
    wrong = {"resourceType": "Parameters", "parameter": [{"name": "patient", "valueString": "Patient/x"}]}
    refused = web.post("/fhir/Patient/$export", json=wrong, headers={**ASYNC, "Content-Type": "application/fhir+json"})
    assert refused.status_code == 400


def test_an_export_of_a_client_disabled_meanwhile_fails(app: Flask, demo: FhirClient, tmp_path: Path) -> None:
    web = app.test_client()
    client_id, headers = api_client(app, tmp_path, TILLEULS, READ_ALL)
    location = kick(web, "Patient/$export", headers).headers["Content-Location"]
    assert app.test_cli_runner().invoke(args=["clients", "disable", client_id]).exit_code == 0
    run_outbox(app.extensions["dui"])
    with app.extensions["dui"].unit_of_work(write=False) as session:
        export = jobs.load(session, location.rsplit("/", 1)[1])
    assert export is not None and export.state == "failed" and export.output == []


def test_an_import_batch_is_bounded_by_bytes(app: Flask, exports: Path, tmp_path: Path) -> None:
    """What the import holds at once is bounded by the size of its lines (the export's ``batch_bytes``), not only by
    their number: 200 scanned documents of megabytes would otherwise be read before the first is stored."""
    folder = tmp_path / "scans"
    folder.mkdir()
    text = base64.b64encode(("Compte rendu numérisé. " * 4_800).encode()).decode()  # ~160 KB a line
    lines = [json.dumps({"resourceType": "Binary", "id": f"scan-{n}", "contentType": "text/plain", "data": text})
             for n in range(80)]
    (folder / "Binary.ndjson").write_text("\n".join(lines) + "\n")
    size = (folder / "Binary.ndjson").stat().st_size
    runner = app.test_cli_runner()
    assert runner.invoke(args=["import", "--ndjson", str(folder)]).exit_code == 0  # warms the caches
    tracemalloc.start()
    try:
        result = runner.invoke(args=["import", "--ndjson", str(folder)])  # idempotent: the same 80 again
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code == 0, result.output
    assert "80 resource(s) put (80 Binary)" in result.output
    assert peak < size / 3, (peak, size)


def test_the_cli_imports_what_it_exported(app: Flask, demo: FhirClient, tmp_path: Path) -> None:
    out = tmp_path / "ndjson"
    runner = app.test_cli_runner()
    assert runner.invoke(args=["export", "--ndjson", str(out)]).exit_code == 0
    before = {rtype: demo.search(f"{rtype}?_summary=count")["total"] for rtype in ("Patient", "Observation",
                                                                                  "Organization", "Encounter")}
    empty_database(app)
    for attempt in (1, 2):  # idempotent: the second import changes no count
        result = runner.invoke(args=["import", "--ndjson", str(out)])
        assert result.exit_code == 0, (attempt, result.output)
        after = {rtype: demo.search(f"{rtype}?_summary=count")["total"] for rtype in before}
        assert after == before
    assert demo.get("Patient/demo-resident-001").status_code == 200
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "Patient.ndjson").write_bytes(b'{"resourceType": "Patient", "id": "x", "gender": "F"}\n')
    refused = runner.invoke(args=["import", "--ndjson", str(bad)])
    assert refused.exit_code == 1 and "Patient.ndjson line 1" in refused.output
