"""The resident's identity: INSi over mutual TLS (the local simulator), RNIV statuses, the identity
rules on every write, and the sharing gate (DOMAIN.md §1; RNIV; FR Core fr-core-patient-ins)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask

from dui.auth.actor import CLI
from dui.fhir.interactions.base import FhirContext
from dui.residents import mapping, provenance
from dui.services import Services
from ins import IdentityStatus, InsKind
from ins.errors import InsiUnavailable
from ins.insi.memory import MemoryInsiClient
from ins.insi.table import HOMONYM_PARIS, LYON, NIA_TO_NIR
from tests.helpers import FhirClient, diagnostics, ins_identifier, observation, outcome_codes

BIRTH_PLACE = "http://hl7.org/fhir/StructureDefinition/patient-birthPlace"


def resident(family: str = "Berthier", given: str = "Marie", birth: str = "1938-04-12", gender: str = "female",
             place: str | None = "69123", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"resourceType": "Patient", "name": [{"use": "official", "family": family,
                                                                 "given": [given]}],
                            "gender": gender, "birthDate": birth}
    if place:
        body["extension"] = [{"url": BIRTH_PLACE, "valueAddress": {"extension": [{
            "url": mapping.INSEE_CODE, "valueCoding": {"system": mapping.COMMUNE_SYSTEM, "code": place}}]}}]
    body.update(extra)
    return body


def parameters(**values: Any) -> dict[str, Any]:
    out = []
    for name, value in values.items():
        key = {bool: "valueBoolean", int: "valueInteger"}.get(type(value), "valueString")
        if isinstance(value, dict):
            out.append({"name": name.replace("_", "-"), **value})
        else:
            out.append({"name": name.replace("_", "-"), key: value})
    return {"resourceType": "Parameters", "parameter": out}


def param(body: dict[str, Any], name: str) -> Any:
    found = next(p for p in body["parameter"] if p["name"] == name)
    return next(v for k, v in found.items() if k != "name")


@contextmanager
def internal(app: Flask) -> Iterator[FhirContext]:
    """A unit of work as the administrator at the command line (sees through the sharing gate)."""
    svc: Services = app.extensions["dui"]
    with svc.unit_of_work() as session:
        yield svc.fhir_context(session, CLI)


def stored(app: Flask, pid: str) -> dict[str, Any]:
    with internal(app) as ctx:
        found = ctx.internal.read("Patient", pid)
        assert found is not None
        return found.resource()


@pytest.fixture
def insi_twin(app: Flask) -> Iterator[MemoryInsiClient]:
    """The in-memory INSi twin in place of the simulator, for failure cases."""
    svc: Services = app.extensions["dui"]
    svc.insi()  # the simulator's client, put back afterwards
    saved, twin = svc._insi, MemoryInsiClient()
    svc._insi = twin
    yield twin
    svc._insi = saved


def fetch(client: FhirClient, pid: str, **params: Any) -> Any:
    return client.post(f"Patient/{pid}/$ins-fetch", parameters(**params) if params else None)


# -- INSi over mutual TLS ---------------------------------------------------------------------------


def test_admission_then_insi_then_document_qualifies_the_identity(app: Flask, client: FhirClient) -> None:
    pid = client.create(resident())["id"]
    assert mapping.status_of(stored(app, pid)) is IdentityStatus.PROV

    fetched = fetch(client, pid)
    assert fetched.status_code == 200, fetched.get_data(as_text=True)
    assert param(fetched.get_json(), "result") == "00"
    assert param(fetched.get_json(), "identityStatus") == "RECUP"
    record = stored(app, pid)
    ins = mapping.active_ins(record)
    assert ins is not None and ins.value == LYON.identity.matricule and ins.kind is InsKind.TEST
    traits = mapping.traits_of(record)
    assert traits is not None and traits.birth_given_names == ("MARIE", "HELENE", "JEANNE")
    assert mapping.evidence_of(record).insi_date is not None
    # récupérée: the INS does not leave the system (the HTTP caller is outside the establishment)
    assert "identifier" not in param(fetched.get_json(), "patient")
    assert "identifier" not in client.get(f"Patient/{pid}").get_json()

    checked = client.post(f"Patient/{pid}/$identity-check",
                          parameters(documentType={"valueCode": "CN"}, date={"valueDate": "2026-11-02"}))
    assert checked.status_code == 200, checked.get_data(as_text=True)
    assert param(checked.get_json(), "identityStatus") == "QUAL"
    shared = client.get(f"Patient/{pid}").get_json()
    assert shared["identifier"][0]["value"] == LYON.identity.matricule
    reliability = mapping.reliability_of(shared)
    assert reliability["identityStatus"]["code"] == "VALI"  # FR Core: qualified = VALI + INS
    assert reliability["validationMode"]["code"] == "CN"

    provenances = client.search(f"Provenance?target=Patient/{pid}")["entry"]
    history = provenance.status_history([e["resource"] for e in provenances])
    assert [(c.before.code, c.after.code) for c in history.changes] == [("PROV", "RECUP"), ("RECUP", "QUAL")]


def test_insi_by_carte_vitale(app: Flask, client: FhirClient) -> None:
    pid = client.create(resident())["id"]
    response = fetch(client, pid, matriculeIndividu=LYON.identity.matricule, birthRank={"valueInteger": 1})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert param(response.get_json(), "result") == "00"
    assert mapping.active_ins(stored(app, pid)).value == LYON.identity.matricule  # type: ignore[union-attr]


@pytest.mark.parametrize(("traits", "code"), [
    ({"family": "Inconnue", "given": "Rose"}, "01"),
    ({"family": "Martin", "given": "Jean", "birth": "1935-01-15", "gender": "male", "place": None}, "02"),
])
def test_insi_none_or_several_changes_nothing(app: Flask, client: FhirClient, traits: dict[str, Any],
                                              code: str) -> None:
    pid = client.create(resident(**traits))["id"]
    response = fetch(client, pid)
    assert response.status_code == 200
    assert param(response.get_json(), "result") == code
    assert "INSi found" in param(response.get_json(), "message")
    assert client.get(f"Patient/{pid}").headers["ETag"] == 'W/"1"'


def test_insi_fault_and_unreachable_leave_the_resident_provisional(app: Flask, client: FhirClient,
                                                                   insi_twin: MemoryInsiClient) -> None:
    pid = client.create(resident())["id"]
    insi_twin.fail_with = InsiUnavailable("connection refused")
    response = fetch(client, pid)
    assert response.status_code == 503
    assert "stays identité provisoire" in diagnostics(response) and "retry" in diagnostics(response)
    assert response.headers["Retry-After"]
    assert client.get(f"Patient/{pid}").headers["ETag"] == 'W/"1"'
    insi_twin.fail_with = None
    assert param(fetch(client, pid).get_json(), "result") == "00"  # the retry works


def test_insi_service_fault_through_the_simulator(client: FhirClient) -> None:
    pid = client.create(resident("Panne", "Simon", "1940-02-02", "male", "59350"))["id"]
    response = fetch(client, pid)
    assert response.status_code == 503
    assert "INSi failed" in diagnostics(response)


def test_insi_needs_complete_traits(client: FhirClient) -> None:
    pid = client.create({"resourceType": "Patient", "name": [{"use": "usual", "family": "Sans"}]})["id"]
    response = fetch(client, pid)
    assert response.status_code == 422
    assert response.get_json()["issue"][0]["expression"] == ["Patient.name"]


def test_verify_confirms_changes_matricule_or_withdraws(app: Flask, client: FhirClient) -> None:
    confirmed = client.create(resident())["id"]
    fetch(client, confirmed)
    response = client.post(f"Patient/{confirmed}/$ins-verify", None)
    assert param(response.get_json(), "result") == "confirmed"

    nia = NIA_TO_NIR.identity
    old = NIA_TO_NIR.identity.previous[0][0]
    changed = client.create(resident("Haddad", "Leila", "1947-06-21", place="99352",
                                     identifier=[ins_identifier(old)]))["id"]
    response = client.post(f"Patient/{changed}/$ins-verify", None)
    assert param(response.get_json(), "result") == "matricule-changed", response.get_data(as_text=True)
    identifiers = {i["value"]: i.get("use") for i in stored(app, changed)["identifier"]}
    assert identifiers == {nia.matricule: "official", old: "old"}

    homonym = HOMONYM_PARIS.identity
    withdrawn = client.create(resident("Martin", "Jean", "1935-01-15", "male", None,
                                       identifier=[ins_identifier(homonym.matricule)]))["id"]
    response = client.post(f"Patient/{withdrawn}/$ins-verify", None)
    assert param(response.get_json(), "result") == "withdrawn"
    assert param(response.get_json(), "identityStatus") == "PROV"
    assert mapping.active_ins(stored(app, withdrawn)) is None


# -- identity rules on every write ----------------------------------------------------------------


@pytest.mark.parametrize(("change", "where", "words"), [
    ({"identifier": [ins_identifier("238046912304599")]}, "Patient.identifier[0].value", "control key"),
    ({"identifier": [ins_identifier("2380469123045")]}, "Patient.identifier[0].value", "15 characters"),
    ({"identifier": [ins_identifier(LYON.identity.matricule)], "gender": "male"}, "Patient.gender", "sex"),
    ({"identifier": [ins_identifier(LYON.identity.matricule)], "birthDate": "1939-04-12"}, "Patient.birthDate",
     "year of birth"),
    ({"identifier": [ins_identifier(LYON.identity.matricule)],
      "name": [{"use": "official", "family": "Berth1er", "given": ["Marie"]}]},
     "Patient.name.where(use='official').family", "letters"),
])
def test_a_write_that_breaks_an_ins_rule_is_refused_naming_the_field(client: FhirClient, change: dict[str, Any],
                                                                    where: str, words: str) -> None:
    response = client.post("Patient", resident(**change))
    assert response.status_code == 422, response.get_data(as_text=True)
    issues = response.get_json()["issue"]
    assert any(where in i.get("expression", []) and words in i["diagnostics"] for i in issues), issues
    assert client.search("Patient")["total"] == 0


def test_an_impossible_birth_date_is_refused(client: FhirClient) -> None:
    response = client.post("Patient", resident(birth="1938-02-30"))
    assert response.status_code in (400, 422)
    assert "birthDate" in str(response.get_json()["issue"])
    assert client.search("Patient")["total"] == 0


def test_stated_status_must_rest_on_its_evidence(client: FhirClient) -> None:
    body = mapping.with_identity(resident(), IdentityStatus.QUAL, mapping.evidence_of({}))
    response = client.post("Patient", body)
    assert response.status_code == 422
    text = diagnostics(response)
    assert "INS identifier" in text and "high-trust document" in text


def test_identity_above_provisional_is_locked_against_plain_writes(app: Flask, client: FhirClient) -> None:
    pid = client.create(resident())["id"]
    fetch(client, pid)
    current = client.get(f"Patient/{pid}").get_json()  # INS withheld by the gate
    renamed = dict(current, name=[{"use": "official", "family": "Autre", "given": ["Marie"]}])
    response = client.put(f"Patient/{pid}", renamed)
    assert response.status_code == 422
    assert "$ins-fetch" in diagnostics(response)
    moved = dict(current, telecom=[{"system": "phone", "value": "04 78 00 00 00"}])
    response = client.put(f"Patient/{pid}", moved)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert mapping.active_ins(stored(app, pid)).value == LYON.identity.matricule  # type: ignore[union-attr]


def test_withdrawals_step_the_status_down(app: Flask, client: FhirClient) -> None:
    pid = client.create(resident())["id"]
    fetch(client, pid)
    no_reason = client.post(f"Patient/{pid}/$identity-withdraw", parameters(evidence={"valueCode": "insi"}))
    assert no_reason.status_code == 400
    nothing = client.post(f"Patient/{pid}/$identity-withdraw",
                          parameters(evidence={"valueCode": "document"}, reason="doute"))
    assert nothing.status_code == 422
    response = client.post(f"Patient/{pid}/$identity-withdraw",
                           parameters(evidence={"valueCode": "insi"}, reason="traits saisis par erreur"))
    assert param(response.get_json(), "identityStatus") == "PROV"
    assert mapping.active_ins(stored(app, pid)) is None


def test_low_trust_document_is_refused(client: FhirClient) -> None:
    pid = client.create(resident())["id"]
    response = client.post(f"Patient/{pid}/$identity-check", parameters(documentType={"valueCode": "PC"}))
    assert response.status_code == 422
    assert response.get_json()["issue"][0]["expression"] == ["documentType"]
    assert "not a high-trust" in diagnostics(response)
    assert client.get(f"Patient/{pid}").headers["ETag"] == 'W/"1"'


def test_operation_parameters_are_checked(client: FhirClient) -> None:
    pid = client.create(resident())["id"]
    assert client.post(f"Patient/{pid}/$identity-check", parameters(nope="x")).status_code == 400
    assert client.post(f"Patient/{pid}/$identity-check", {"resourceType": "Patient"}).status_code == 400
    assert client.get(f"Patient/{pid}/$ins-fetch").status_code == 405
    assert client.post("Patient/missing/$ins-fetch", None).status_code == 404
    assert outcome_codes(client.post("Observation/x/$ins-fetch", None)) == ["not-supported"]


# -- the sharing gate, from each adapter that exists ------------------------------------------------


def test_sharing_gate_on_every_read_path(app: Flask, client: FhirClient) -> None:
    pid = client.create(resident())["id"]
    fetch(client, pid)  # récupérée: INS stored, not shareable
    client.create(observation(f"Patient/{pid}"))
    matricule = LYON.identity.matricule.encode()
    paths = [f"Patient/{pid}", f"Patient/{pid}/_history/2", f"Patient/{pid}/_history", "Patient/_history",
             "_history", f"Patient?_id={pid}", f"Patient/{pid}/$everything",
             "Observation?_include=Observation:subject"]
    for path in paths:
        response = client.get(path)
        assert response.status_code == 200, path
        assert matricule not in response.get_data(), path
    # a search by the INS finds the resident (the caller knows the INS) but does not echo it back
    found = client.search(f"Patient?identifier={LYON.identity.matricule}")
    assert [e["resource"]["id"] for e in found["entry"]] == [pid]
    assert matricule.decode() not in str(found["entry"])
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "GET", "url": f"Patient/{pid}"}}]}
    assert matricule not in client.post("", bundle).get_data()
    match = client.post("Patient/$match", parameters(resource={"resource": resident()}))
    assert match.status_code == 200 and match.get_json()["total"] == 1
    assert matricule not in match.get_data()
    assert mapping.active_ins(stored(app, pid)) is not None  # the administrator still sees it


def test_gate_for_adapters_that_send_documents(app: Flask, client: FhirClient) -> None:
    from dui.errors import Unprocessable
    from dui.residents.sharing import require_shareable_ins, shareable_patient

    pid = client.create(resident())["id"]
    fetch(client, pid)
    record = stored(app, pid)
    with pytest.raises(Unprocessable, match="qualified"):
        require_shareable_ins(record)
    assert mapping.ins_identifiers(shareable_patient(record)) == []
    client.post(f"Patient/{pid}/$identity-check", parameters(documentType={"valueCode": "PA"}))
    record = stored(app, pid)
    assert require_shareable_ins(record).value == LYON.identity.matricule
    assert shareable_patient(record) is record


def test_test_and_demo_ins_are_refused_in_production() -> None:
    from datetime import date

    from dui.auth.actor import ANONYMOUS
    from dui.errors import Unprocessable
    from dui.residents.rules import prepare_patient

    body = resident(identifier=[ins_identifier(LYON.identity.matricule)])
    assert prepare_patient(body, lambda: None, ANONYMOUS, date(2026, 11, 24)) is body
    with pytest.raises(Unprocessable) as refused:
        prepare_patient(body, lambda: None, ANONYMOUS, date(2026, 11, 24), production=True)
    assert "test OID" in refused.value.issues[0].diagnostics
    assert refused.value.issues[0].expression == ("Patient.identifier[0].value",)
