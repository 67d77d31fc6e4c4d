"""Hole 3: oracles through data one does not see.

Chains, ``_has`` and ``_list`` are evaluated inside the caller's scope on every hop, so that a search's result
(entries and totals) never depends on records the caller may not see. Each probe below worked, walked letter by
letter, against another establishment's residents; it now answers as if they did not exist, while the residents'
own establishment still gets its answer (the probe is a real query, not one that matches nothing).
"""

from __future__ import annotations

from typing import Any

import pytest

from dui.fhir.search.normalize import normalize
from tests.attack.conftest import PARC_ORG, World, parc_residents


def total(world: World, who: str, query: str) -> int:
    answer = world.get(who, query + ("&" if "?" in query else "?") + "_total=accurate")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return int(answer.get_json()["total"])


def hidden(world: World, who: str, query: str) -> bool:
    """The probe tells nothing: refused (the caller may not search a type it reaches), or empty."""
    answer = world.get(who, query)
    assert answer.status_code in (200, 403), answer.get_data(as_text=True)
    return answer.status_code == 403 or not answer.get_json().get("entry")


def ins(resident: dict[str, Any]) -> str | None:
    return next((f"{i['system']}|{i['value']}" for i in resident["identifier"] if i["system"].startswith("urn:oid:")),
                None)


@pytest.fixture(scope="module")
def parc(world: World) -> list[dict[str, Any]]:
    return [world.resource(f"Patient/{pid}") for pid in parc_residents()]


def test_family_names_are_not_walked_through_has(world: World, parc: list[dict[str, Any]]) -> None:
    for resident in parc:
        prefix = normalize(resident["name"][0]["family"])[:3]
        probe = f"Organization?_id={PARC_ORG}&_has:Patient:organization:family={prefix}&_summary=count"
        assert total(world, "p.infirmier", probe) == 1  # the probe works where the residents are seen
        for who in ("t.infirmier", "t.medecin", "t.administratif", "hospital"):
            assert total(world, who, probe) == 0, (who, prefix)


def test_where_a_person_lives_is_not_told(world: World, parc: list[dict[str, Any]]) -> None:
    probed = [resident for resident in parc if ins(resident)]
    assert probed
    for resident in probed:
        for probe in (f"Organization?_has:Patient:organization:identifier={ins(resident)}",
                      f"Practitioner?_has:Patient:general-practitioner:identifier={ins(resident)}",
                      f"Organization?_has:Encounter:service-provider:patient:Patient.identifier={ins(resident)}",
                      f"Practitioner?_has:Observation:performer:subject:Patient.identifier={ins(resident)}"):
            assert world.ids("p.infirmier", probe), probe
            for who in ("t.medecin", "t.administratif"):
                assert hidden(world, who, probe), (who, probe)


def test_chains_and_revincludes_stop_at_the_scope(world: World, parc: list[dict[str, Any]]) -> None:
    resident = next(r for r in parc if ins(r))
    birth = resident["birthDate"]
    for probe in (f"Observation?subject:Patient.birthdate={birth}", f"Condition?patient.birthdate={birth}",
                  f"Encounter?subject.identifier={ins(resident)}"):
        assert world.ids("p.infirmier", probe), probe
        assert world.ids("t.medecin", probe) == set(), probe
    practitioners = world.ids("t.medecin", "Practitioner?_revinclude=Observation:performer&_count=200")
    assert not any(f"/{pid}-" in ref for ref in practitioners for pid in parc_residents())
    assert total(world, "t.medecin", "Organization?_has:Patient:organization:gender=female,male"
                 f"&_id={PARC_ORG}") == 0
