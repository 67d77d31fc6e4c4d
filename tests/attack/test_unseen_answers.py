"""Hole 8 (part): "not visible" and "does not exist" answer alike on every path, and the INS clash tells nothing
about another establishment's residents.

The same request is made for a record of Le Parc (which a member of staff of Les Tilleuls may not see) and for an
id nobody uses: status, headers that matter and body must be the same once the id is blanked.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from tests.attack.conftest import TILLEULS_ORG, World, parc_residents, tilleuls_residents

UNKNOWN = "personne-0000"
PATCH = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
    {"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": "Patient.active"},
    {"name": "value", "valueBoolean": False}]}]}


def seen_as(world: World, who: str, method: str, path: str, rid: str, body: Any = None,
            headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    answer = world.call(who, method, path.format(id=rid), body if not isinstance(body, dict) else {
        k: (rid if v == "{id}" else v) for k, v in body.items()}, headers=headers)
    kept = {k: v for k, v in answer.headers.items() if k in ("Allow", "WWW-Authenticate", "Location", "ETag")}
    return answer.status_code, answer.get_data(as_text=True).replace(rid, "<id>"), kept


CASES = [
    ("t.infirmier", "GET", "Patient/{id}", None),
    ("t.infirmier", "GET", "Patient/{id}/_history", None),
    ("t.infirmier", "GET", "Patient/{id}/_history/1", None),
    ("t.infirmier", "GET", "Patient/{id}/$everything", None),
    ("t.infirmier", "PUT", "Patient/{id}", {"resourceType": "Patient", "id": "{id}", "gender": "female"}),
    ("t.infirmier", "PATCH", "Patient/{id}", PATCH),
    ("t.medecin", "DELETE", "Observation/{id}-weight-0", None),
    ("t.medecin", "GET", "Observation/{id}-weight-0", None),
    ("t.medecin", "PUT", "Observation/{id}-weight-0", {"resourceType": "Observation", "id": "{id}-weight-0",
                                                       "status": "final", "code": {"text": "poids"}}),
    ("t.administratif", "POST", "Patient/{id}/$ins-verify", {"resourceType": "Parameters"}),
    ("t.administratif", "POST", "Patient/{id}/$identity-check", {"resourceType": "Parameters", "parameter": [
        {"name": "documentType", "valueCode": "CN"}]}),
    ("t.direction", "GET", "Patient/{id}/$access-report", None),
]


@pytest.mark.parametrize(("who", "method", "path", "body"), CASES, ids=[f"{c[1]} {c[2]}" for c in CASES])
def test_unseen_and_unknown_answer_alike(world: World, who: str, method: str, path: str, body: Any) -> None:
    theirs = parc_residents()[0]
    assert seen_as(world, who, method, path, theirs, body) == seen_as(world, who, method, path, UNKNOWN, body)
    assert world.call(None, "GET", f"Patient/{theirs}").status_code == 200  # it does exist


def test_a_conditional_update_does_not_reach_an_unseen_record(world: World) -> None:
    theirs = parc_residents()[0]
    original = world.resource(f"Patient/{theirs}")
    answer = world.call("t.infirmier", "PUT", f"Patient?_id={theirs}", {"resourceType": "Patient",
                                                                        "gender": "other"})
    assert answer.status_code == 403  # no match: a create, which the nurse may not do
    assert world.resource(f"Patient/{theirs}")["meta"] == original["meta"]


def ins_of(world: World, pid: str) -> dict[str, Any] | None:
    return next((i for i in world.resource(f"Patient/{pid}").get("identifier", [])
                 if i["system"].startswith("urn:oid:1.2.250.1.213.1.4.")), None)


def test_the_ins_clash_names_no_one(world: World) -> None:
    theirs = next(p for p in parc_residents() if ins_of(world, p))
    mine = next(p for p in tilleuls_residents() if ins_of(world, p))
    their_ins, my_ins = ins_of(world, theirs), ins_of(world, mine)
    assert their_ins and my_ins

    def admit(ins: dict[str, Any], conditional: bool) -> Any:
        """Admit at Les Tilleuls the person who holds ``ins`` (her traits as recorded, as an attacker may know them)."""
        holder = theirs if ins == their_ins else mine
        body = {k: v for k, v in world.resource(f"Patient/{holder}").items() if k not in ("id", "meta")}
        body["managingOrganization"] = {"reference": f"Organization/{TILLEULS_ORG}"}
        headers = {"If-None-Exist": f"identifier={ins['system']}|{ins['value']}"} if conditional else None
        return world.call("t.administratif", "POST", "Patient", body, headers=headers)

    found = admit(my_ins, conditional=True)  # a resident she sees: the conditional create finds them
    assert found.status_code == 200 and found.get_json()["id"] == mine
    clash_theirs, clash_theirs_plain, clash_mine = admit(their_ins, True), admit(their_ins, False), admit(my_ins, False)
    for answer in (clash_theirs, clash_theirs_plain, clash_mine):
        assert answer.status_code == 409, answer.get_data(as_text=True)
    assert clash_theirs.get_json() == clash_mine.get_json() == clash_theirs_plain.get_json()
    assert theirs not in clash_theirs.get_data(as_text=True) and "Patient/" not in clash_theirs.get_data(as_text=True)
    assert world.ids(None, f"Patient?identifier={their_ins['system']}|{their_ins['value']}") == {f"Patient/{theirs}"}
    # The audit trail names the resident whose INS was tried, for her establishment's access report
    with world.app.extensions["dui"].engine.connect() as conn:
        tried = [{r[0] for r in conn.execute(text("SELECT patient_id FROM audit_event_patient WHERE seq = :s"),
                                             {"s": seq})}
                 for seq in conn.execute(text("SELECT seq FROM audit_event WHERE actor_id = 't.administratif' AND "
                                              "action = 'create' AND status = 409 ORDER BY seq")).scalars()]
    assert tried[-3:] == [{theirs}, {theirs}, {mine}]


def test_numbers_beyond_a_double_are_refused_before_storage(world: World) -> None:
    mine = tilleuls_residents()[0]
    before = world.get(None, f"Observation?subject=Patient/{mine}&_summary=count").get_json()["total"]
    for value in ("1e999", "-1e999", "1e-999", "1e999999999999999999999", "9" * 400):
        body = ('{"resourceType":"Observation","status":"final","code":{"text":"poids"},'
                f'"subject":{{"reference":"Patient/{mine}"}},"valueQuantity":{{"value":{value},"unit":"kg"}}}}')
        answer = world.call("t.infirmier", "POST", "Observation", body)
        assert answer.status_code == 400, (value, answer.get_data(as_text=True))
        assert "double" in answer.get_json()["issue"][0]["diagnostics"]
    assert world.get(None, f"Observation?subject=Patient/{mine}&_summary=count").get_json()["total"] == before
