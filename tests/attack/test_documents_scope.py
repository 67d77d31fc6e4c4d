"""Documents are the resident's record: their DocumentReference and their Binaries (CDA, PDF) are read, built and
filed under the same rules as the rest of it. A member of staff of Les Tilleuls building, reading or filing a
document of a resident of Le Parc gets what she gets for an id nobody uses."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.attack.conftest import World, parc_residents, tilleuls_residents

PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
TYPE = {"coding": [{"system": "http://loinc.org", "code": "57833-6"}]}


@pytest.fixture(scope="module")
def built(world: World) -> dict[str, Any]:
    """A DLU of a resident of Le Parc, built by its own staff."""
    answer = world.call("p.infirmier", "POST", f"Patient/{parc_residents()[0]}/$dlu",
                        {"resourceType": "Parameters"})
    assert answer.status_code in (200, 201), answer.get_data(as_text=True)
    return dict(answer.get_json())


def _pdf_for(resident: str) -> dict[str, Any]:
    return {"resourceType": "DocumentReference", "status": "current", "type": TYPE,
            "subject": {"reference": f"Patient/{resident}"},
            "content": [{"attachment": {"contentType": "application/pdf", "data": base64.b64encode(PDF).decode()}}]}


def test_staff_build_their_residents_dlu(world: World) -> None:
    answer = world.call("t.infirmier", "POST", f"Patient/{tilleuls_residents()[0]}/$dlu",
                        {"resourceType": "Parameters"})
    assert answer.status_code in (200, 201), answer.get_data(as_text=True)


def test_another_establishments_documents_are_unknown(world: World, built: dict[str, Any]) -> None:
    binaries = [c["attachment"]["url"] for c in built["content"]]
    for path in (f"DocumentReference/{built['id']}", *binaries):
        assert world.get("p.infirmier", path).status_code == 200
        seen = world.get("t.medecin", path)
        unknown = world.get("t.medecin", path.split("/")[0] + "/personne-0000")
        assert (seen.status_code, unknown.status_code) == (404, 404)
        if path.startswith("Binary/"):  # asked as itself
            raw = world.get("t.medecin", path, headers={"Accept": "application/pdf"})
            assert raw.status_code == 404 and not raw.data.startswith(b"%PDF")
    found = world.ids("t.medecin", f"Binary?_id={','.join(b.split('/')[1] for b in binaries)}")
    assert found == set()
    everything = world.ids("p.infirmier", f"Patient/{parc_residents()[0]}/$everything?_count=1000")
    assert set(binaries) <= everything  # the Binaries are part of the resident's record


def test_building_or_filing_for_another_establishment_is_refused_like_unknown(world: World) -> None:
    theirs, nobody = parc_residents()[0], "personne-0000"
    for operation in ("$dlu", "$fludt"):
        body = {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "Chute"}]}
        if operation == "$dlu":
            body = {"resourceType": "Parameters"}
        answers = [world.call("t.infirmier", "POST", f"Patient/{rid}/{operation}", body) for rid in (theirs, nobody)]
        assert [a.status_code for a in answers] == [404, 404]
        assert answers[0].get_data(as_text=True).replace(theirs, "x") == answers[1].get_data(as_text=True).replace(
            nobody, "x")
    filed = [world.call("t.medecin", "POST", "DocumentReference", _pdf_for(rid)).status_code
             for rid in (theirs, nobody)]
    assert filed[0] == filed[1] and filed[0] in (403, 404, 422)


def test_a_binary_cannot_be_attached_to_another_establishments_resident(world: World) -> None:
    for rid in (parc_residents()[0], "personne-0000"):
        body = {"resourceType": "Binary", "contentType": "application/pdf", "data": base64.b64encode(PDF).decode(),
                "securityContext": {"reference": f"Patient/{rid}"}}
        assert world.call("t.medecin", "POST", "Binary", body).status_code == 403


def test_a_document_reference_cannot_point_at_another_establishments_binary(world: World,
                                                                            built: dict[str, Any]) -> None:
    theirs = built["content"][1]["attachment"]["url"]
    body = {"resourceType": "DocumentReference", "status": "current",
            "subject": {"reference": f"Patient/{tilleuls_residents()[0]}"},
            "content": [{"attachment": {"contentType": "application/pdf", "url": theirs}}]}
    answer = world.call("t.medecin", "POST", "DocumentReference", body)
    assert answer.status_code == 403, answer.get_data(as_text=True)


def test_staff_file_and_build_documents_for_their_own_residents(world: World) -> None:
    ours = tilleuls_residents()[0]
    filed = world.call("t.medecin", "POST", "DocumentReference", _pdf_for(ours))
    assert filed.status_code == 201, filed.get_data(as_text=True)
    doc = filed.get_json()
    assert world.get("t.infirmier", doc["content"][1]["attachment"]["url"],
                     headers={"Accept": "application/pdf"}).data == PDF
    transfer = {"resourceType": "Parameters", "parameter": [{"name": "reason", "valueString": "Chute"}]}
    built = world.call("t.infirmier", "POST", f"Patient/{ours}/$fludt", transfer)
    assert built.status_code == 201, built.get_data(as_text=True)
    assert world.get("p.infirmier", f"DocumentReference/{built.get_json()['id']}").status_code == 404


def test_only_those_who_write_documents_may_force_new_versions(world: World) -> None:
    """A reader may have the DLU built (it changes only with the record); a new version on demand, however often,
    is for those who may write documents."""
    ours = tilleuls_residents()[0]
    force = {"resourceType": "Parameters", "parameter": [{"name": "force", "valueBoolean": True}]}
    assert world.call("t.infirmier", "POST", f"Patient/{ours}/$dlu", force).status_code == 403
    assert world.call("t.medecin", "POST", f"Patient/{ours}/$dlu", force).status_code == 201
    plain = world.call("t.infirmier", "POST", f"Patient/{ours}/$dlu", {"resourceType": "Parameters"})
    assert plain.status_code == 200  # the one just built is current


def test_sending_a_document_out_needs_the_right_to_write_it_and_its_resident(world: World,
                                                                             built: dict[str, Any]) -> None:
    """Queuing a document for the DMP or an MSSanté address records the send on it: a reader may not; another
    establishment's document is unknown."""
    ours = world.call("t.medecin", "POST", f"Patient/{tilleuls_residents()[0]}/$dlu", {"resourceType": "Parameters"})
    assert ours.status_code in (200, 201)
    mine = ours.get_json()["id"]
    empty = {"resourceType": "Parameters"}
    to = {"resourceType": "Parameters", "parameter": [{"name": "to", "valueString": "urgences@ch.mssante.fr"}]}
    assert world.call("t.infirmier", "POST", f"DocumentReference/{mine}/$dmp-send", empty).status_code == 403
    assert world.call("t.infirmier", "POST", f"DocumentReference/{mine}/$mssante-send", to).status_code == 403
    assert world.call("t.medecin", "POST", f"DocumentReference/{built['id']}/$dmp-send", empty).status_code == 404
    queued = world.call("t.medecin", "POST", f"DocumentReference/{mine}/$dmp-send", empty)
    assert queued.status_code == 202, queued.get_data(as_text=True)
    assert {p["name"] for p in queued.get_json()["parameter"]} == {"job", "state"}
    unset = world.call("t.medecin", "POST", f"DocumentReference/{mine}/$mssante-send", to)
    assert unset.status_code == 503 and "DUI_MSSANTE_SMTP_URL" in unset.get_data(as_text=True)
