"""Hole 5: update-as-create needs create rights.

``PUT`` to an id that does not exist creates it: for authorization it is a create, needing ``c`` (a conditional
update that matches nothing too). A nurse, refused ``POST /fhir/Patient``, created Patients and Organizations
with ``PUT /fhir/Patient/<new id>``.
"""

from __future__ import annotations

import pytest

from tests.attack.conftest import TILLEULS_ORG, World, tilleuls_residents


def newcomer(pid: str | None = None) -> dict[str, object]:
    body: dict[str, object] = {"resourceType": "Patient", "name": [{"family": "Intrus"}], "gender": "male",
                               "birthDate": "1931-01-01",
                               "managingOrganization": {"reference": f"Organization/{TILLEULS_ORG}"}}
    return {**body, "id": pid} if pid else body


@pytest.mark.parametrize("who", ["t.infirmier", "t.kinesitherapeute"])  # they may update Patients, not create
def test_put_to_a_new_id_is_a_create(world: World, who: str) -> None:
    assert world.call(who, "POST", "Patient", newcomer()).status_code == 403
    answer = world.call(who, "PUT", f"Patient/intrus-{who}", newcomer(f"intrus-{who}"))
    assert answer.status_code == 403, answer.get_data(as_text=True)
    organization = {"resourceType": "Organization", "id": f"org-{who}", "name": "Nouvelle structure"}
    refused = world.call(who, "PUT", f"Organization/org-{who}", organization)
    assert refused.status_code == 403, refused.get_data(as_text=True)
    assert world.call(None, "GET", f"Patient/intrus-{who}").status_code == 404
    assert world.call(None, "GET", f"Organization/org-{who}").status_code == 404


def test_a_conditional_update_that_matches_nothing_is_a_create(world: World) -> None:
    answer = world.call("t.infirmier", "PUT", "Patient?family=personne-de-ce-nom", newcomer())
    assert answer.status_code == 403, answer.get_data(as_text=True)
    assert world.ids(None, "Patient?family=intrus") == set()


def test_update_rights_still_update(world: World) -> None:
    mine = tilleuls_residents()[0]
    original = world.resource(f"Patient/{mine}")
    body = {k: v for k, v in original.items() if k != "meta"}
    changed = dict(body, telecom=[{"system": "phone", "value": "04 78 99 99 99", "use": "home"}])
    answer = world.call("t.infirmier", "PUT", f"Patient/{mine}", changed)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    world.put_back(f"Patient/{mine}", original)
