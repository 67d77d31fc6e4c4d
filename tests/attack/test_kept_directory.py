"""Directory data an establishment keeps: its rooms and its fall sensors.

Rooms (Location) and sensors (Device) are seen by everyone, like the rest of the directory, but the rules that read
them trust them: a gateway's event finds the sensor by serial number among its establishment's Devices and the
resident by the sensor's room; a room managed by an establishment is one of its places (admissions, occupancy). The
attack: another establishment's staff register a second sensor under Le Parc's serial (Le Parc's gateway then gets
"unknown sensor" and its alerts stop), move Le Parc's sensor to another room, or add and close rooms of Le Parc
(``KEPT_TYPES`` in dui/fhir/scope.py, docs/security.md "Establishment scoping").
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dui.demo.data import SENSOR_SYSTEM, room_entries, room_id_of
from tests.attack.conftest import PARC, PARC_ORG, TILLEULS_ORG, World
from tests.authkit import client_jwks, token_form, write_json
from tests.conftest import BASE_URL

PARC_INDEX, TILLEULS_INDEX = 1, 2  # the rooms of demo-resident-001 (Le Parc) and demo-resident-002 (Les Tilleuls)


def sensor_of(index: int) -> dict[str, Any]:
    return dict(room_entries(index)[1]["resource"])


def room_of(index: int) -> dict[str, Any]:
    return dict(room_entries(index)[0]["resource"])


def sensors_found(world: World, who: str, serial: str, finess: str) -> set[str]:
    """What the gateway's look-up finds: the Devices of this serial owned by the establishment."""
    return world.ids(who, f"Device?identifier={serial}&organization.identifier="
                          f"https://finess.esante.gouv.fr|{finess}")


def refused(answer: Any) -> None:
    """Refused by the keeper's rule (callers chosen with the role's right to the write)."""
    assert answer.status_code == 403, answer.get_data(as_text=True)
    assert "kept by the establishment" in answer.get_json()["issue"][0]["diagnostics"]


@pytest.fixture
def created(world: World) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for path in made:
        world.call(None, "DELETE", path)


def test_nobody_registers_a_sensor_under_another_establishments_name(world: World, created: list[str]) -> None:
    theirs = sensor_of(PARC_INDEX)
    serial = theirs["identifier"][0]["value"]
    twin = {k: v for k, v in theirs.items() if k != "id"}
    for who in ("t.infirmier", "t.medecin", "t.writer", "hospital"):  # each has the right to create a Device
        refused(world.call(who, "POST", "Device", twin))
    assert sensors_found(world, "p.infirmier", serial, PARC) == {f"Device/{theirs['id']}"}
    # Le Parc's own staff may (the check refuses the writer, not the write)
    mine = world.call("p.infirmier", "POST", "Device", {**twin, "identifier": [
        {"system": SENSOR_SYSTEM, "value": f"{serial}-BIS"}]})
    assert mine.status_code == 201, mine.get_data(as_text=True)
    created.append(f"Device/{mine.get_json()['id']}")


def test_another_establishments_sensor_is_neither_moved_nor_taken_nor_removed(world: World) -> None:
    theirs = world.resource(f"Device/{sensor_of(PARC_INDEX)['id']}")
    path = f"Device/{theirs['id']}"
    moved = copy.deepcopy(theirs)
    moved["location"] = {"reference": f"Location/{room_id_of(PARC_INDEX + 2)}"}
    taken = copy.deepcopy(theirs)
    taken["owner"] = {"reference": f"Organization/{TILLEULS_ORG}"}
    for who in ("t.infirmier", "t.writer"):
        refused(world.call(who, "PUT", path, moved))
        refused(world.call(who, "PUT", path, taken))
        refused(world.call(who, "PATCH", path, [{"op": "remove", "path": "/location"}],
                           content_type="application/json-patch+json"))
        refused(world.call(who, "DELETE", path))
    assert world.resource(path)["meta"]["versionId"] == theirs["meta"]["versionId"]


def test_nobody_adds_or_closes_rooms_of_another_establishment(world: World, created: list[str]) -> None:
    room = room_of(PARC_INDEX)
    extra = {**{k: v for k, v in room.items() if k != "id"}, "name": "Chambre fantôme"}
    for who in ("t.administratif", "t.medecin", "t.writer"):  # each has the right to create a Location
        refused(world.call(who, "POST", "Location", extra))
    path = f"Location/{room['id']}"
    stored = world.resource(path)
    closed = {**stored, "status": "inactive"}
    annexed = {**stored, "managingOrganization": {"reference": f"Organization/{TILLEULS_ORG}"}}
    for who in ("t.administratif", "t.writer"):
        refused(world.call(who, "PUT", path, closed))
        refused(world.call(who, "PUT", path, annexed))
        refused(world.call(who, "DELETE", path))
    assert world.resource(path)["meta"]["versionId"] == stored["meta"]["versionId"]
    # nor given away: a room of one's own is not handed to another establishment (it would count among its places)
    ours = world.resource(f"Location/{room_of(TILLEULS_INDEX)['id']}")
    refused(world.call("t.administratif", "PUT", f"Location/{ours['id']}",
                       {**ours, "managingOrganization": {"reference": f"Organization/{PARC_ORG}"}}))
    # the establishment itself keeps its rooms
    own = world.call("p.administratif", "POST", "Location", extra)
    assert own.status_code == 201, own.get_data(as_text=True)
    created.append(f"Location/{own.get_json()['id']}")


def test_a_client_of_no_establishment_keeps_no_establishments_rooms(world: World, tmp_path: Path) -> None:
    """A group's integration platform (a client registered without an establishment, allowed to write) sees every
    establishment and keeps none of their rooms."""
    jwks = write_json(tmp_path / "jwks.json", client_jwks())
    scope = "system/*.cruds"
    made = world.app.test_cli_runner().invoke(args=["clients", "create", "platform-kept", "--scope", scope,
                                                    "--jwks-file", str(jwks)])
    assert made.exit_code == 0, made.output
    answer = world.web.post("/auth/token", data=token_form(made.stdout.strip(), BASE_URL + "/auth/token", scope))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    world.tokens["platform"] = answer.get_json()["access_token"]
    room = world.resource(f"Location/{room_of(PARC_INDEX)['id']}")
    refused(world.call("platform", "PUT", f"Location/{room['id']}", {**room, "name": "Renommée"}))
    assert world.resource(f"Location/{room['id']}")["name"] == room["name"]


def test_directory_data_of_no_establishment_stays_open(world: World, created: list[str]) -> None:
    """A sensor or room that names no establishment's Organization is nobody's to keep (a shared directory)."""
    loose = {"resourceType": "Device", "status": "active",
             "identifier": [{"system": SENSOR_SYSTEM, "value": "CAPTEUR-SANS-PROPRIETAIRE"}]}
    made = world.call("t.infirmier", "POST", "Device", loose)
    assert made.status_code == 201, made.get_data(as_text=True)
    created.append(f"Device/{made.get_json()['id']}")
    changed = world.call("p.infirmier", "PUT", f"Device/{made.get_json()['id']}",
                         {**made.get_json(), "status": "inactive"})
    assert changed.status_code == 200, changed.get_data(as_text=True)
