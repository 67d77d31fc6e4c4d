"""System history (``GET /fhir/_history``) and system search (``GET /fhir?_type=...``): every type's history for a
caller that may see everything, and for the others the history of the types they may search, each entry visible as
in that type's history; a system search is each type's search, the establishment's scope and the roles applied to
every one of them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.attack.conftest import TILLEULS, World, parc_residents, tilleuls_residents
from tests.authkit import client_jwks, token_form, write_json
from tests.conftest import BASE_URL


def history(world: World, who: str, count: int = 1000) -> list[dict[str, Any]]:
    answer = world.get(who, f"_history?_count={count}")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    bundle = answer.get_json()
    assert bundle["type"] == "history"
    return [e for e in bundle.get("entry", []) if "resource" in e]


def residents_in(entries: list[dict[str, Any]]) -> set[str]:
    found = set()
    for entry in entries:
        body = entry["resource"]
        if body["resourceType"] == "Patient":
            found.add(body["id"])
        reference = str((body.get("subject") or {}).get("reference", ""))
        if reference.startswith("Patient/"):
            found.add(reference.removeprefix("Patient/"))
    return found


def test_a_caller_that_may_see_everything_has_every_types_history(world: World) -> None:
    everything = history(world, None)  # the unrestricted caller
    group = history(world, "group")  # a client of no establishment, system/*.rs
    assert [e["fullUrl"] for e in group] == [e["fullUrl"] for e in everything]
    assert {"Patient", "Observation", "Condition"} <= {e["resource"]["resourceType"] for e in group}


def test_the_history_of_the_types_one_may_search_of_the_residents_one_sees(world: World) -> None:
    only_patients = history(world, "t.client")  # system/Patient.rs, Les Tilleuls
    assert {e["resource"]["resourceType"] for e in only_patients} == {"Patient"}
    assert residents_in(only_patients) == set(tilleuls_residents())
    nurse = history(world, "t.infirmier")
    assert residents_in(nurse) == set(tilleuls_residents())
    assert not residents_in(nurse) & set(parc_residents())
    aide = history(world, "t.aide-soignant")  # no medical data: no Condition, whatever the history holds
    assert "Condition" not in {e["resource"]["resourceType"] for e in aide}
    assert "Condition" in {e["resource"]["resourceType"] for e in history(world, "t.medecin")}


def test_a_caller_that_may_search_nothing_is_refused(world: World, tmp_path: Path) -> None:
    jwks = write_json(tmp_path / "jwks.json", client_jwks())
    scope = "system/Patient.c"  # writes, searches nothing
    made = world.app.test_cli_runner().invoke(args=["clients", "create", "writer-only", "--scope", scope,
                                                    "--jwks-file", str(jwks), "--establishment", TILLEULS])
    assert made.exit_code == 0, made.output
    answer = world.web.post("/auth/token", data=token_form(made.stdout.strip(), BASE_URL + "/auth/token", scope))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    world.tokens["writer-only"] = answer.get_json()["access_token"]
    refused = world.get("writer-only", "_history")
    assert refused.status_code == 403, refused.get_data(as_text=True)
    assert "no search" in refused.get_json()["issue"][0]["diagnostics"]


def test_a_system_search_is_scoped_as_each_types_search(world: World) -> None:
    query = "?_type=Patient,Observation&_count=1000"
    nurse = world.get("t.infirmier", query)
    assert nurse.status_code == 200, nurse.get_data(as_text=True)
    entries = [e for e in nurse.get_json()["entry"]]
    assert residents_in(entries) == set(tilleuls_residents())
    alone = world.ids("t.infirmier", "Patient?_count=1000") | world.ids("t.infirmier", "Observation?_count=1000")
    assert {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in entries} == alone
    assert nurse.get_json()["total"] == len(alone)
    # every type is authorized as its own search: an aide may not search Conditions, the client Observations
    assert world.get("t.aide-soignant", "?_type=Patient,Condition").status_code == 403
    assert world.get("t.client", "?_type=Patient,Observation").status_code == 403
    assert world.get("t.client", "?_type=Patient").status_code == 200
