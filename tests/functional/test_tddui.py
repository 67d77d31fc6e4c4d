"""TDDUI flux 1: the producer (``dui export --tddui``) and the consumer (a tddui-bundle POSTed at /fhir, and
``dui import --tddui``)."""

from __future__ import annotations

import base64
import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import text

from dui.demo.identities import finess, nir_for
from dui.residents import mapping
from ins import IdentityStatus, control_key
from ins.status import Evidence
from tests.conftest import conformance_dir, empty_database
from tests.helpers import FhirClient, diagnostics, ins_identifier

TDDUI = "https://interop.esante.gouv.fr/ig/fhir/tddui/StructureDefinition/"
TDDUI_CS = "https://interop.esante.gouv.fr/ig/fhir/tddui/CodeSystem/"
FINESS = finess("69", "000142")
OTHER_FINESS = finess("69", "000266")
NIR = nir_for("female", date(1931, 6, 14), "69123", 1)
FR_CORE = "https://hl7.fr/ig/fhir/core/StructureDefinition/"
SUMMARY = "Synthèse d'admission : données fictives de test.".encode()


def _urn(n: int) -> str:
    return f"urn:uuid:00000000-0000-4000-8000-{n:012d}"


def _post(full_url: str, resource: dict[str, Any]) -> dict[str, Any]:
    return {"fullUrl": full_url, "resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}


def _organization(finess_number: str, name: str) -> dict[str, Any]:
    return {"resourceType": "Organization", "name": name, "identifier": [
        {"system": "https://finess.esante.gouv.fr", "value": finess_number},
        {"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "1" + finess_number,
         "type": {"coding": [{"system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203",
                              "code": "IDNST"}]}}]}


def _qualified(org: str) -> dict[str, Any]:
    patient = {
        "resourceType": "Patient",
        "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthPlace", "valueAddress": {
            "extension": [{"url": f"{FR_CORE}fr-core-address-insee-code", "valueCoding": {
                "system": "https://mos.esante.gouv.fr/NOS/TRE_R13-CommuneOM/FHIR/TRE-R13-CommuneOM",
                "code": "69123"}}], "city": "Lyon"}}],
        "identifier": [ins_identifier(NIR),
                       {"system": "https://identifiant-medicosocial-localusager.esante.gouv.fr",
                        "value": f"3{FINESS}/000001"}],
        "name": [{"use": "official", "family": "Lefèvre", "given": ["Hélène"], "extension": [
            {"url": f"{FR_CORE}fr-core-patient-birth-list-given-name", "valueString": "Hélène Marie"}]}],
        "gender": "female", "birthDate": "1931-06-14",
        "managingOrganization": {"reference": org},
    }
    return mapping.with_identity(patient, IdentityStatus.QUAL,
                                 Evidence("CN", date(2024, 1, 10), date(2024, 1, 10)))


def _provisional(org: str) -> dict[str, Any]:
    patient = {"resourceType": "Patient", "name": [{"use": "official", "family": "Berthier", "given": ["Marie"]}],
               "gender": "female", "birthDate": "1938-04-12", "managingOrganization": {"reference": org}}
    return mapping.with_identity(patient, IdentityStatus.PROV, Evidence())


def _record(pid: str, org: str, nurse: str, role: str, n: int) -> list[dict[str, Any]]:
    """A stay, an event in it (with the nurse) and a transport task, an AGGIR evaluation (GIR 3), a document
    (by the nurse's role) and a consent."""
    stay, event = _urn(100 + n), _urn(110 + n)
    return [
        _post(stay, {"resourceType": "Encounter", "status": "in-progress",
                     "identifier": [{"type": {"coding": [{"system": TDDUI_CS + "tddui-encounter-identifier",
                                                          "code": "SEJ", "display": "Identifiant du séjour"}]},
                                     "system": "https://identifiant-medicosocial-sejour.esante.gouv.fr",
                                     "value": f"3{FINESS}/00000{n}-SEJOUR-1"}],
                     "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HH"},
                     "subject": {"reference": pid}, "period": {"start": "2024-01-10"},
                     "serviceProvider": {"reference": org}}),
        _post(event, {"resourceType": "Encounter", "status": "finished",
                      "identifier": [{"type": {"coding": [{"system": "https://hl7.fr/ig/fhir/core/CodeSystem/"
                                                                         "fr-core-cs-identifier-type", "code": "VN"}]},
                                      "system": "https://identifiant-medicosocial-evenement.esante.gouv.fr",
                                      "value": f"3{FINESS}/00000{n}-EVN-1"}],
                      "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HH"},
                      "subject": {"reference": pid}, "partOf": {"reference": stay},
                      "participant": [{"individual": {"reference": nurse}}],
                      "period": {"start": "2024-02-01T10:30:00+01:00", "end": "2024-02-01T11:00:00+01:00"}}),
        _post(_urn(120 + n), {"resourceType": "Task", "status": "completed", "intent": "plan",
                              "identifier": [{"system": "https://identifiant-medicosocial-transportusager"
                                                        ".esante.gouv.fr", "value": f"3{FINESS}/00000{n}-TPPat-1"}],
                              "encounter": {"reference": event},
                              "executionPeriod": {"start": "2024-02-01T10:00:00+01:00",
                                                  "end": "2024-02-01T10:20:00+01:00"}}),
        _post(_urn(130 + n), {"resourceType": "QuestionnaireResponse", "status": "completed",
                              "identifier": {"system": "https://identifiant-medicosocial-evaluation.esante.gouv.fr",
                                             "value": f"3{FINESS}/00000{n}-EVAL-1"},
                              "questionnaire": "https://interop.esante.gouv.fr/ig/fhir/tddui/Questionnaire/"
                                               "tddui-questionnaire-aggir-pa-ssiad",
                              "subject": {"reference": pid}, "authored": "2024-01-15",
                              "item": [{"linkId": "GIR", "text": "Résultat GIR", "answer": [{"valueCoding": {
                                  "system": "https://smt.esante.gouv.fr/fhir/CodeSystem/terminologie-cisis",
                                  "code": "MED-341", "display": "GIR 3"}}]}]}),
        _post(_urn(140 + n), {"resourceType": "DocumentReference", "status": "current",
                              "subject": {"reference": pid}, "author": [{"reference": role}],
                              "content": [{"attachment": {"contentType": "text/plain", "title": "Synthèse",
                                                          "url": f"Binary/doc-{n}"}}]}),
        {"resource": {"resourceType": "Binary", "id": f"doc-{n}", "contentType": "text/plain",
                      "data": base64.b64encode(SUMMARY).decode()},
         "request": {"method": "PUT", "url": f"Binary/doc-{n}"}},
        _post(_urn(150 + n), {"resourceType": "Consent", "status": "active",
                              "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                                    "code": "treatment"}]},
                              "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
                              "patient": {"reference": pid}, "dateTime": "2024-01-10",
                              "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                                         "code": "OPTIN"}]},
                              "performer": [{"reference": pid}]}),
    ]


def _load_residents(client: FhirClient) -> dict[str, str]:
    """Two EHPADs; in the first a qualified and a provisional resident with their records; one in the second."""
    org, other, nurse, role = _urn(1), _urn(2), _urn(3), _urn(4)
    entries = [
        _post(org, _organization(FINESS, "EHPAD Les Tilleuls (test)")),
        _post(other, _organization(OTHER_FINESS, "EHPAD Le Parc (test)")),
        _post(nurse, {"resourceType": "Practitioner", "name": [{"family": "Marchand", "given": ["Sophie"]}],
                      "identifier": [{"system": "urn:oid:1.2.250.1.71.4.2.1", "value": "810100000001"}]}),
        _post(role, {"resourceType": "PractitionerRole", "practitioner": {"reference": nurse},
                     "organization": {"reference": org}}),
        _post(_urn(10), _qualified(org)),
        _post(_urn(11), _provisional(org)),
        _post(_urn(12), _provisional(other) | {"name": [{"use": "official", "family": "Autre", "given": ["Paul"]}]}),
    ]
    entries += _record(_urn(10), org, nurse, role, 1) + _record(_urn(11), org, nurse, role, 2)
    response = client.post("", {"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert response.status_code == 200, response.get_data(as_text=True)
    locations = [e["response"]["location"].split("/_history")[0] for e in response.get_json()["entry"]]
    return {"qualified": locations[4], "provisional": locations[5], "elsewhere": locations[6]}


def _export(app: Flask, *args: str) -> dict[str, Any]:
    result = app.test_cli_runner().invoke(args=["export", "--tddui", *args])
    assert result.exit_code == 0, result.output + result.stderr
    bundle: dict[str, Any] = json.loads(result.stdout)
    return bundle


def _content(bundle: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in bundle.items() if k not in ("id", "timestamp")}


# -- producer ---------------------------------------------------------------------------------------


def test_export_of_an_establishment(client: FhirClient, app: Flask) -> None:
    residents = _load_residents(client)
    bundle = _export(app, "--establishment", FINESS)
    assert bundle["type"] == "transaction"
    assert bundle["meta"]["profile"] == [TDDUI + "tddui-bundle"]
    entries = bundle["entry"]
    full_urls = [e["fullUrl"] for e in entries]
    assert all(u.startswith("urn:uuid:") for u in full_urls) and len(set(full_urls)) == len(full_urls)
    assert all(e["request"] == {"method": "POST", "url": e["resource"]["resourceType"]} for e in entries)
    resources = [e["resource"] for e in entries]
    assert all("id" not in r and "versionId" not in r["meta"] and "lastUpdated" not in r["meta"] for r in resources)
    kinds = [(r["resourceType"], r["meta"]["profile"][0].removeprefix(TDDUI)) for r in resources]
    assert kinds == [
        ("Patient", "tddui-patient-ins"), ("Patient", "tddui-patient"),
        ("Organization", "tddui-organization"), ("Practitioner", "tddui-practitioner"),
        ("PractitionerRole", "tddui-practitioner-role"),
        ("Encounter", "tddui-encounter-sejour"), ("Encounter", "tddui-encounter-evenement"),
        ("Encounter", "tddui-encounter-sejour"), ("Encounter", "tddui-encounter-evenement"),
        ("QuestionnaireResponse", "tddui-questionnaire-response"),
        ("QuestionnaireResponse", "tddui-questionnaire-response"),
        ("DocumentReference", "tddui-document-reference"), ("DocumentReference", "tddui-document-reference"),
        ("Consent", "tddui-consent-accord"), ("Consent", "tddui-consent-accord"),
        ("Task", "tddui-task-transport-usager"), ("Task", "tddui-task-transport-usager"),
    ]
    # Every reference between exported resources is a fullUrl of the bundle; nothing of the other EHPAD.
    text_ = json.dumps(resources)
    references = [r for r in _references(resources)]
    assert references and all(r in full_urls for r in references)
    assert residents["elsewhere"].split("/")[1] not in text_ and "Autre" not in text_ and OTHER_FINESS not in text_
    # The document's Binary travels inline.
    document = next(r for r in resources if r["resourceType"] == "DocumentReference")
    assert base64.b64decode(document["content"][0]["attachment"]["data"]) == SUMMARY
    assert "url" not in document["content"][0]["attachment"]
    # The qualified resident keeps her INS; the event points at its stay.
    assert NIR in json.dumps(resources[0])
    event = resources[6]
    assert event["partOf"]["reference"] == full_urls[5]


def _references(node: Any) -> list[str]:
    if isinstance(node, list):
        return [r for item in node for r in _references(item)]
    if isinstance(node, dict):
        return [r for k, v in node.items() for r in ([v] if k == "reference" else _references(v))]
    return []


def test_the_ins_of_an_identity_that_is_not_qualified_is_withheld(client: FhirClient, app: Flask) -> None:
    """A récupérée identity (INS from INSi, no document check) goes out with its traits and without its INS."""
    org = client.create(_organization(FINESS, "EHPAD"))
    patient = mapping.with_identity(_qualified(f"Organization/{org['id']}"), IdentityStatus.RECUP,
                                    Evidence(None, None, date(2024, 1, 10)))
    pid = client.create(patient)["id"]
    bundle = _export(app, "--resident", pid)
    exported = bundle["entry"][0]["resource"]
    assert NIR not in json.dumps(bundle)
    assert exported["meta"]["profile"][0] == TDDUI + "tddui-patient"
    assert exported["name"][0]["family"] == "Lefèvre" and exported["birthDate"] == "1931-06-14"
    assert mapping.stated_status(exported) is IdentityStatus.PROV  # no INS travels: its receiver holds it provisoire
    assert mapping.evidence_of(exported).insi_date is None
    svc = app.extensions["dui"]
    with svc.unit_of_work(write=False) as session:
        stored = svc.repository(session).read("Patient", pid).resource()
    assert stored["identifier"][0]["value"] == NIR  # kept here
    assert mapping.stated_status(stored) is IdentityStatus.RECUP
    empty_database(app)  # and another DUI applying the same INS rules takes it
    imported = client.post("", bundle)
    assert imported.status_code == 200, imported.get_data(as_text=True)


def test_round_trip_export_import_export_is_identical(client: FhirClient, app: Flask) -> None:
    _load_residents(client)
    first = _export(app, "--all")
    assert len(first["entry"]) > 10
    empty_database(app)
    response = client.post("", first)
    assert response.status_code == 200, response.get_data(as_text=True)
    statuses = {e["response"]["status"] for e in response.get_json()["entry"]}
    assert statuses == {"201 Created"}
    second = _export(app, "--all")
    assert second["id"] != first["id"]
    assert _content(second) == _content(first)
    assert json.dumps(_content(second), ensure_ascii=False) == json.dumps(_content(first), ensure_ascii=False)


# -- consumer ---------------------------------------------------------------------------------------


def _example() -> dict[str, Any]:
    path = conformance_dir("ans", "tddui-2.2.0", "examples") / "Bundle-tddui-bundle-example.json"
    bundle: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return bundle


def _stored(app: Flask) -> int:
    with app.extensions["dui"].engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM resource")).scalar_one())


@pytest.mark.conformance
def test_the_published_example_is_refused_for_its_nir_key(client: FhirClient, app: Flask) -> None:
    bundle = _example()
    nir = bundle["entry"][0]["resource"]["identifier"][0]["value"]
    response = client.post("", bundle)
    assert response.status_code == 422, response.get_data(as_text=True)
    said = diagnostics(response)
    assert "Bundle.entry[0] (POST Patient)" in said and "key" in said
    issue = response.get_json()["issue"][-1]
    assert issue["code"] == "business-rule" and issue["expression"] == ["Patient.identifier[0].value"]
    assert bundle["entry"][0]["resource"]["identifier"][0]["value"] == nir
    assert _stored(app) == 0


@pytest.mark.conformance
def test_the_published_example_with_its_key_corrected_is_accepted(client: FhirClient) -> None:
    bundle = _example()
    identifier = bundle["entry"][0]["resource"]["identifier"][0]
    identifier["value"] = identifier["value"][:13] + control_key(identifier["value"][:13])
    response = client.post("", bundle)
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()
    assert answer["type"] == "transaction-response"
    assert [e["response"]["status"] for e in answer["entry"]] == ["201 Created"] * len(bundle["entry"])
    types = [e["response"]["location"].split("/")[0] for e in answer["entry"]]
    assert types == [e["resource"]["resourceType"] for e in bundle["entry"]]
    # References between entries reach the resources created (relative to the fullUrl's base).
    patient_id = answer["entry"][0]["response"]["location"].split("/")[1]
    stay = client.get(answer["entry"][2]["response"]["location"].split("/_history")[0]).get_json()
    assert stay["subject"]["reference"] == f"Patient/{patient_id}"
    assert client.search(f"Encounter?patient=Patient/{patient_id}")["total"] == 2


def _transfer(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "meta": {"profile": [TDDUI + "tddui-bundle"]}, "type": "transaction",
            "entry": list(entries)}


def test_a_transfer_entry_other_than_post_is_refused(client: FhirClient, app: Flask) -> None:
    org = _organization(FINESS, "EHPAD") | {"id": "org-1"}
    response = client.post("", _transfer(
        _post(_urn(1), _organization(OTHER_FINESS, "Autre")),
        {"fullUrl": "Organization/org-1", "resource": org, "request": {"method": "PUT", "url": "Organization/org-1"}},
    ))
    assert response.status_code == 422
    assert "Bundle.entry[1] (PUT Organization/org-1): a TDDUI transfer only creates" in diagnostics(response)
    assert _stored(app) == 0


def test_a_profile_name_that_does_not_fit_the_resource_is_refused(client: FhirClient, app: Flask) -> None:
    entry = _post(_urn(1), _organization(FINESS, "EHPAD"))
    entry["request"]["url"] = "TDDUIPatientINS"
    response = client.post("", _transfer(entry))
    assert response.status_code == 422
    assert "the profile TDDUIPatientINS is for a Patient, but the entry holds a Organization" in diagnostics(response)
    assert _stored(app) == 0


def test_profile_names_alone_make_a_transfer(client: FhirClient) -> None:
    entry = _post(_urn(1), _organization(FINESS, "EHPAD"))
    entry["request"]["url"] = "TDDUIOrganization"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
    response = client.post("", bundle)
    assert response.status_code == 200
    assert response.get_json()["entry"][0]["response"]["location"].startswith("Organization/")
    entry["request"]["method"] = "PUT"
    assert client.post("", bundle).status_code == 422


def test_a_failing_entry_in_the_middle_leaves_nothing_stored(client: FhirClient, app: Flask) -> None:
    org = _urn(1)
    bad = _qualified(org)
    bad["identifier"][0]["value"] = NIR[:13] + ("00" if NIR[13:] != "00" else "01")  # a wrong key
    response = client.post("", _transfer(_post(org, _organization(FINESS, "EHPAD")), _post(_urn(2), bad),
                                         _post(_urn(3), _provisional(org))))
    assert response.status_code == 422
    assert "Bundle.entry[1] (POST Patient)" in diagnostics(response)
    assert _stored(app) == 0


def test_a_transfer_is_a_transaction(client: FhirClient) -> None:
    bundle = _transfer(_post(_urn(1), _organization(FINESS, "EHPAD"))) | {"type": "batch"}
    response = client.post("", bundle)
    assert response.status_code == 422
    assert "A TDDUI transfer is a Bundle of type transaction, not 'batch'" in diagnostics(response)


def test_a_transfer_is_validated_against_the_tddui_bundle_profile(client: FhirClient, app: Flask,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[str, list[str]]] = []

    def check_profiles(resource: Any, profiles: Any = (), **_: Any) -> list[Any]:
        seen.append((resource.get("resourceType"), list(profiles)))
        return []

    monkeypatch.setattr(app.extensions["dui"].validator, "check_profiles", check_profiles)
    assert client.post("", _transfer(_post(_urn(1), _organization(FINESS, "EHPAD")))).status_code == 200
    assert ("Bundle", [TDDUI + "tddui-bundle"]) in seen


def test_a_transfer_that_does_not_conform_to_tddui_is_refused(client: FhirClient, app: Flask) -> None:
    """The profile check of the whole Bundle (tddui-bundle and, through its slices, each entry's profile)."""
    if app.extensions["dui"].validator.profiles is None:
        pytest.skip("profile validation is not wired (fhir_profiles.validator absent)")
    org, pid = _urn(1), _urn(2)
    stay = _record(pid, org, _urn(3), _urn(4), 1)[0]
    del stay["resource"]["identifier"]  # tddui-encounter-sejour: the stay identifier (SEJ) is 1..1
    stay["resource"]["meta"] = {"profile": [TDDUI + "tddui-encounter-sejour"]}
    response = client.post("", _transfer(_post(org, _organization(FINESS, "EHPAD")), _post(pid, _provisional(org)),
                                         stay))
    assert response.status_code == 422
    errors = [i for i in response.get_json()["issue"][1:] if i["severity"] == "error"]
    assert errors and all(i["expression"][0].startswith("Bundle.entry[2].resource") for i in errors)
    assert "tddui-encounter-sejour" in diagnostics(response)
    assert _stored(app) == 0


# -- command line -----------------------------------------------------------------------------------


def test_cli_export_to_a_file_then_import(client: FhirClient, app: Flask, tmp_path: Path) -> None:
    residents = _load_residents(client)
    out = tmp_path / "transfer.json"
    runner = app.test_cli_runner()
    result = runner.invoke(args=["export", "--tddui", "--resident", residents["qualified"].split("/")[1],
                                 "--output", str(out)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert "TDDUI export: 1 resident(s)" in result.stderr
    exported = json.loads(out.read_bytes())
    assert exported["entry"][0]["resource"]["resourceType"] == "Patient"
    empty_database(app)
    result = runner.invoke(args=["import", "--tddui", str(out)])
    assert result.exit_code == 0, result.stderr
    assert f"TDDUI import: {len(exported['entry'])} resource(s) created" in result.stdout
    assert client.search("Patient")["total"] == 1
    with app.extensions["dui"].engine.connect() as conn:
        rows = conn.execute(text("SELECT detail, outcome, count FROM audit_event WHERE source = 'cli' "
                                 "ORDER BY seq")).all()
    assert [(r[0], r[1]) for r in rows] == [("import", "success")]
    assert rows[0][2] == len(exported["entry"])


def test_cli_import_refuses_a_bad_transfer_in_one_line(client: FhirClient, app: Flask, tmp_path: Path) -> None:
    runner = app.test_cli_runner()
    bad = _transfer(_post(_urn(1), _organization(FINESS, "EHPAD")) | {"request": {"method": "PUT",
                                                                                  "url": "Organization/x"}})
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    result = runner.invoke(args=["import", "--tddui", str(path)])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("Importing") and len(lines) == 2  # the progress line, then one line of error
    assert lines[1].startswith("Error: ") and "a TDDUI transfer only creates" in lines[1]
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": []}))
    result = runner.invoke(args=["import", "--tddui", str(plain)])
    assert result.exit_code == 1 and "Not a TDDUI transfer" in result.stderr
    result = runner.invoke(args=["import", "--tddui", str(tmp_path / "missing.json")])
    assert result.exit_code == 1 and "missing.json" in result.stderr
    assert _stored(app) == 0


def test_cli_export_errors_are_one_line(client: FhirClient, app: Flask) -> None:
    runner = app.test_cli_runner()
    cases = [
        (["export", "--tddui", "--resident", "nobody"], "Patient/nobody does not exist"),
        (["export", "--tddui", "--establishment", "123"], "a FINESS number has 9 characters"),
        (["export", "--tddui", "--establishment", OTHER_FINESS], f"No Organization carries FINESS {OTHER_FINESS}"),
    ]
    for args, message in cases:
        result = runner.invoke(args=args)
        assert result.exit_code == 1, args
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    both = runner.invoke(args=["export", "--tddui", "--all", "--establishment", FINESS])
    assert both.exit_code == 2 and "--resident ID" in both.stderr
    which = runner.invoke(args=["export", "--all"])  # TDDUI or NDJSON: the command's usage says
    assert which.exit_code == 2 and "say which export: --tddui or --ndjson DIR" in which.stderr


def test_cli_export_is_audited_with_its_residents(client: FhirClient, app: Flask) -> None:
    residents = _load_residents(client)
    _export(app, "--establishment", FINESS)
    with app.extensions["dui"].engine.connect() as conn:
        entry = conn.execute(text("SELECT seq, detail, outcome FROM audit_event WHERE source = 'cli'")).one()
        patients = {r[0] for r in conn.execute(text("SELECT patient_id FROM audit_event_patient WHERE seq = :s"),
                                               {"s": entry[0]})}
    assert (entry[1], entry[2]) == ("export", "success")
    assert patients == {residents["qualified"].split("/")[1], residents["provisional"].split("/")[1]}




def test_the_write_rules_of_the_actor_apply_to_a_transfer(client: FhirClient, app: Flask) -> None:
    """Authorization and establishment scoping: admissions staff import residents into their own establishment
    only (another establishment's Organization is that establishment's to write); a nurse may not create the
    Organization."""
    from dui.auth.actor import Actor
    from dui.errors import Forbidden
    from tests.functional.test_authorization import call

    admissions = Actor("staff", "accueil-1", frozenset({"administratif"}), FINESS)
    nurse = Actor("staff", "ide-1", frozenset({"infirmier"}), FINESS)
    org = _urn(1)
    mine = _transfer(_post(org, _organization(FINESS, "EHPAD")), _post(_urn(2), _provisional(org)))
    theirs = _transfer(_post(org, _organization(OTHER_FINESS, "Autre EHPAD")), _post(_urn(2), _provisional(org)))
    with pytest.raises(Forbidden, match=r"Bundle.entry\[0\] \(POST Organization\): Not allowed: infirmier"):
        call(app, nurse, "POST", "", mine)
    with pytest.raises(Forbidden, match=r"Bundle.entry\[0\] \(POST Organization\): Not allowed: the Organization "
                                         rf"of establishment FINESS {OTHER_FINESS} is kept"):
        call(app, admissions, "POST", "", theirs)
    assert _stored(app) == 0
    status, answer = call(app, admissions, "POST", "", mine)
    assert status == 200 and [e["response"]["status"] for e in answer["entry"]] == ["201 Created"] * 2


def test_cli_export_warns_when_the_records_do_not_conform(client: FhirClient, app: Flask) -> None:
    if app.extensions["dui"].validator.profiles is None:
        pytest.skip("profile validation is not wired (fhir_profiles.validator absent)")
    org = client.create(_organization(FINESS, "EHPAD"))["id"]
    pid = client.create(_provisional(f"Organization/{org}"))["id"]
    client.create({"resourceType": "Encounter", "status": "in-progress", "subject": {"reference": f"Patient/{pid}"},
                   "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HH"},
                   "serviceProvider": {"reference": f"Organization/{org}"}})  # no stay identifier
    result = app.test_cli_runner().invoke(args=["export", "--tddui", "--resident", pid])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["entry"][2]["resource"]["resourceType"] == "Encounter"
    assert "does not conform: Bundle.entry[2].resource" in result.stderr
    assert "warning: " in result.stderr and "will refuse the transfer" in result.stderr
