"""Hole 2: writes that change who sees whom.

Who sees a resident derives from facts only the right actor may write (docs/security.md, "Establishment
scoping"): an establishment's FINESS and the resident's admission are acts of that establishment's administration;
a partner's sight comes from a stay or a consent the resident's establishment records, and ends with it. Each test
tries what the attack test did, then checks both the refusal and that nothing widened.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from tests.attack.conftest import (
    FINESS_SYSTEM,
    HOSPITAL_ORG,
    PARC_ORG,
    TILLEULS,
    TILLEULS_ORG,
    World,
    parc_residents,
    tilleuls_residents,
)
from tests.helpers import consent

ENCOUNTER_CLASS = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"}


def stay(resident: str, org: str, status: str = "in-progress") -> dict[str, Any]:
    return {"resourceType": "Encounter", "status": status, "class": ENCOUNTER_CLASS,
            "subject": {"reference": f"Patient/{resident}"}, "serviceProvider": {"reference": f"Organization/{org}"}}


def sees(world: World, who: str, resident: str) -> bool:
    answer = world.get(who, f"Patient/{resident}")
    assert answer.status_code in (200, 404), answer.get_data(as_text=True)
    return answer.status_code == 200


def refused(answer: Any) -> None:
    assert answer.status_code == 403, answer.get_data(as_text=True)
    assert answer.get_json()["issue"][0]["code"] == "forbidden"


@pytest.fixture
def created(world: World) -> Iterator[list[str]]:
    """Resources a test creates, deleted afterwards (as the unrestricted caller)."""
    made: list[str] = []
    yield made
    for path in made:
        world.call(None, "DELETE", path)


def test_nobody_adds_their_finess_to_another_establishments_organization(world: World) -> None:
    theirs = parc_residents()[0]
    before = world.resource(f"Organization/{PARC_ORG}")
    hijacked = copy.deepcopy(before)
    hijacked["identifier"].append({"system": FINESS_SYSTEM, "value": TILLEULS})
    for who in ("t.infirmier", "t.administratif", "t.direction", "t.writer", "hospital"):
        refused(world.call(who, "PUT", f"Organization/{PARC_ORG}", hijacked))
        assert not sees(world, who if who != "hospital" else "t.infirmier", theirs)
    assert world.resource(f"Organization/{PARC_ORG}")["meta"]["versionId"] == before["meta"]["versionId"]


def test_nobody_removes_another_establishments_finess(world: World) -> None:
    before = world.resource(f"Organization/{PARC_ORG}")
    stripped = {k: v for k, v in before.items() if k not in ("identifier", "meta")}
    for who in ("t.administratif", "t.infirmier"):
        refused(world.call(who, "PUT", f"Organization/{PARC_ORG}", stripped))
        refused(world.call(who, "DELETE", f"Organization/{PARC_ORG}"))
    assert sees(world, "p.infirmier", parc_residents()[0])


def test_an_establishment_is_not_created_twice_by_someone_else(world: World, created: list[str]) -> None:
    twin = {"resourceType": "Organization", "name": "Faux Tilleuls",
            "identifier": [{"system": FINESS_SYSTEM, "value": TILLEULS}]}
    refused(world.call("p.administratif", "POST", "Organization", twin))
    refused(world.call("t.infirmier", "POST", "Organization", twin))  # not the administration
    answer = world.call("t.administratif", "POST", "Organization", twin)  # the administration may
    assert answer.status_code == 201, answer.get_data(as_text=True)
    created.append(f"Organization/{answer.get_json()['id']}")


def test_a_finess_is_not_added_to_an_organization_that_grants_sight_of_others(world: World,
                                                                            created: list[str]) -> None:
    orphan = world.call(None, "POST", "Organization", {"resourceType": "Organization", "name": "Annexe"}).get_json()
    created.append(f"Organization/{orphan['id']}")
    resident = world.call(None, "POST", "Patient", {
        "resourceType": "Patient", "name": [{"family": "Annexe"}], "gender": "male", "birthDate": "1930-02-02",
        "managingOrganization": {"reference": f"Organization/{orphan['id']}"}}).get_json()
    created.insert(0, f"Patient/{resident['id']}")
    claimed = {k: v for k, v in orphan.items() if k != "meta"}
    claimed["identifier"] = [{"system": FINESS_SYSTEM, "value": TILLEULS}]
    refused(world.call("t.administratif", "PUT", f"Organization/{orphan['id']}", claimed))
    assert not sees(world, "t.administratif", resident["id"])


def test_a_stay_or_consent_for_oneself_grants_nothing(world: World) -> None:
    theirs = parc_residents()[0]
    refused(world.call("t.medecin", "POST", "Encounter", stay(theirs, TILLEULS_ORG)))
    refused(world.call("t.medecin", "POST", "Consent", consent(theirs, TILLEULS_ORG)))
    refused(world.call("t.administratif", "POST", "Consent", consent(theirs, TILLEULS_ORG)))
    refused(world.call("hospital", "POST", "Consent", consent(tilleuls_residents()[0], HOSPITAL_ORG)))
    refused(world.call("hospital", "POST", "Encounter", stay(tilleuls_residents()[0], HOSPITAL_ORG)))
    assert not sees(world, "t.medecin", theirs)
    assert not sees(world, "hospital", tilleuls_residents()[0])


def test_a_stay_is_not_moved_onto_another_establishments_resident(world: World) -> None:
    mine, theirs = tilleuls_residents()[0], parc_residents()[0]
    original = world.resource(f"Encounter/{mine}-sejour")
    moved = {k: v for k, v in original.items() if k != "meta"}
    moved["subject"] = {"reference": f"Patient/{theirs}"}
    refused(world.call("t.medecin", "PUT", f"Encounter/{mine}-sejour", moved))
    refused(world.call("t.administratif", "PUT", f"Encounter/{mine}-sejour", moved))
    assert world.resource(f"Encounter/{mine}-sejour")["subject"]["reference"] == f"Patient/{mine}"
    assert not sees(world, "t.medecin", theirs)


def test_admission_is_the_establishments_administration(world: World) -> None:
    mine = tilleuls_residents()[0]
    original = world.resource(f"Patient/{mine}")
    moved = {k: v for k, v in original.items() if k != "meta"}
    moved["managingOrganization"] = {"reference": f"Organization/{PARC_ORG}"}
    for who in ("t.administratif", "t.infirmier", "p.administratif"):
        answer = world.call(who, "PUT", f"Patient/{mine}", moved)
        assert answer.status_code == 403, (who, answer.get_data(as_text=True))
    assert world.resource(f"Patient/{mine}")["managingOrganization"]["reference"] == f"Organization/{TILLEULS_ORG}"
    newcomer = {"resourceType": "Patient", "name": [{"family": "Nouveau"}], "gender": "female",
                "birthDate": "1933-03-03", "managingOrganization": {"reference": f"Organization/{TILLEULS_ORG}"}}
    refused(world.call("t.medecin", "POST", "Patient", newcomer))  # may create Patients, but is not administration
    refused(world.call("p.administratif", "POST", "Patient", newcomer))  # not their establishment


def test_the_residents_establishment_records_a_partners_stay_which_ends_its_sight(world: World,
                                                                                 created: list[str]) -> None:
    mine = tilleuls_residents()[1]
    assert not sees(world, "hospital", mine)
    answer = world.call("t.administratif", "POST", "Encounter", stay(mine, HOSPITAL_ORG))
    assert answer.status_code == 201, answer.get_data(as_text=True)
    transfer = answer.get_json()
    created.append(f"Encounter/{transfer['id']}")
    assert sees(world, "hospital", mine)
    assert f"Observation/{mine}-weight-0" in world.ids("hospital", f"Observation?subject=Patient/{mine}&_count=200")
    # the partner may not keep it open, move it, or widen it; it may end it (its own sight)
    body = {k: v for k, v in transfer.items() if k != "meta"}
    refused(world.call("hospital", "PUT", f"Encounter/{transfer['id']}",
                       dict(body, subject={"reference": f"Patient/{tilleuls_residents()[0]}"})))
    refused(world.call("hospital", "PUT", f"Encounter/{transfer['id']}", dict(body, status="arrived")))
    ended = world.call("hospital", "PUT", f"Encounter/{transfer['id']}", dict(body, status="finished"))
    assert ended.status_code == 200, ended.get_data(as_text=True)
    assert not sees(world, "hospital", mine)
    # once ended, the partner cannot reopen it: it no longer sees it
    reopened = world.call("hospital", "PUT", f"Encounter/{transfer['id']}", dict(body, status="in-progress"))
    assert reopened.status_code in (403, 404), reopened.get_data(as_text=True)
    assert not sees(world, "hospital", mine)


def test_the_residents_establishment_records_a_consent(world: World, created: list[str]) -> None:
    mine = tilleuls_residents()[2]
    answer = world.call("t.writer", "POST", "Consent", consent(mine, HOSPITAL_ORG))  # the EHPAD's own client
    assert answer.status_code == 201, answer.get_data(as_text=True)
    created.append(f"Consent/{answer.get_json()['id']}")
    assert sees(world, "hospital", mine)
    body = {k: v for k, v in answer.get_json().items() if k != "meta"}
    refused(world.call("hospital", "PUT", f"Consent/{body['id']}",
                       dict(body, provision=dict(body["provision"], period={"end": "2099-12-31"}))))
    expired = world.call("t.administratif", "PUT", f"Consent/{body['id']}",
                         dict(body, provision=dict(body["provision"], period={"start": "2020-01-01",
                                                                             "end": "2021-01-01"})))
    assert expired.status_code == 200, expired.get_data(as_text=True)
    assert not sees(world, "hospital", mine)  # a consent outside its period grants nothing


def test_references_to_residents_one_does_not_see_are_refused(world: World) -> None:
    mine, theirs = tilleuls_residents()[0], parc_residents()[0]
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": "note"},
                   "subject": {"reference": f"Patient/{mine}"}}
    for focus in (f"Patient/{theirs}", f"Condition/{theirs}-condition-0", f"Observation/{theirs}-weight-0",
                  "Patient/does-not-exist"):
        answer = world.call("t.medecin", "POST", "Observation", dict(observation, focus=[{"reference": focus}]))
        refused(answer)
        assert theirs not in answer.get_data(as_text=True).replace(focus, "")
    diagnostics = {world.call("t.medecin", "POST", "Observation", dict(
        observation, focus=[{"reference": ref}])).get_json()["issue"][0]["diagnostics"].replace(ref, "<ref>")
        for ref in (f"Patient/{theirs}", "Patient/does-not-exist")}
    assert len(diagnostics) == 1  # unseen and unknown: one answer
    assert world.ids("t.medecin", "Observation?focus:Patient.birthdate=ge1900") == set()


def test_ending_a_stay_ends_sight_within_the_same_request(world: World, created: list[str]) -> None:
    """What the request itself changed about who sees whom holds for its next entries: a batch that closes the
    partner's stay and then reads the resident gets the read refused."""
    mine = tilleuls_residents()[1]
    answer = world.call("t.administratif", "POST", "Encounter", stay(mine, HOSPITAL_ORG))
    assert answer.status_code == 201, answer.get_data(as_text=True)
    transfer = {k: v for k, v in answer.get_json().items() if k != "meta"}
    created.append(f"Encounter/{transfer['id']}")
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": dict(transfer, status="finished"),
         "request": {"method": "PUT", "url": f"Encounter/{transfer['id']}"}},
        {"request": {"method": "GET", "url": f"Patient/{mine}"}}]}
    result = world.call("hospital", "POST", "", batch)
    assert result.status_code == 200, result.get_data(as_text=True)
    statuses = [e["response"]["status"] for e in result.get_json()["entry"]]
    assert statuses[0].startswith("200") and statuses[1].startswith("404"), statuses
