"""The AGGIR evaluation (``POST /api/residents/{id}/evaluations/aggir``) and the direction's indicators
(``GET /api/indicators``, ``dui report``): docs/staff-api.md, "Indicators". Over HTTP and the CLI, on SQLite and
PostgreSQL.

The expected figures are worked out here by hand from the demo data as written in ``dui/demo/data.py`` (the GIR of
each demo resident, stays begun long before the month, one room each) and from what each test adds; never from the
code under test."""

from __future__ import annotations

import io
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pypdf
import pypdfium2
import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from dui.demo.data import ESTABLISHMENTS, resident_bundle, setup_bundle
from dui.documents import dmp_feed
from dui.fhir import bodies
from tests.functional.test_staff_api import token
from tests.helpers import FhirClient

PARC, TILLEULS = ESTABLISHMENTS[1]["finess"], ESTABLISHMENTS[0]["finess"]
ANCHOR = date(2026, 11, 30)  # the demo's anchor: every stay began at least 60 days before it, and has no end
MONTH = "2026-11"
DAYS_IN_MONTH = 30
# The GIR written for each demo resident in dui/demo/data.py (DEMO_GIR): residents 1, 3, 5 stay at Le Parc (one
# room each), residents 2, 4, 6 at Les Tilleuls.
WRITTEN_GIR = {"demo-resident-001": 2, "demo-resident-002": 4, "demo-resident-003": 3, "demo-resident-004": 1,
               "demo-resident-005": 5, "demo-resident-006": 4}
PARC_RESIDENTS = ("demo-resident-001", "demo-resident-003", "demo-resident-005")
FIRST, SECOND, THIRD = PARC_RESIDENTS
THEIRS = "demo-resident-002"  # a Tilleuls resident
# GMP points per GIR, as the issue gives them
POINTS = {1: 1000, 2: 840, 3: 660, 4: 420, 5: 250, 6: 70}
PARIS = ZoneInfo("Europe/Paris")
BLUE = (0x1F, 0x5F, 0xA8)  # the bars of the GIR chart


def by_hand_gmp(girs: list[int]) -> float:
    return round(sum(POINTS[g] for g in girs) / len(girs), 1)


def french(value: float) -> str:
    return f"{value:.1f}".replace(".", ",")


@pytest.fixture
def demo(client: FhirClient) -> FhirClient:
    for bundle in (setup_bundle(), *(resident_bundle(i, ANCHOR) for i in range(1, 7))):
        answer = client.post("", bundle)
        assert answer.status_code == 200, answer.get_data(as_text=True)
    return client


@pytest.fixture
def web(app: Flask, demo: FhirClient) -> FlaskClient:
    return app.test_client()


def staff(app: Flask, role: str, finess: str = PARC) -> dict[str, str]:
    return token(app, "staff", role, finess)


def indicators(app: Flask, web: FlaskClient, month: str = MONTH, finess: str = PARC) -> dict[str, Any]:
    answer = web.get(f"/api/indicators?month={month}", headers=staff(app, "direction", finess))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    found: dict[str, Any] = answer.get_json()
    return found


def evaluate(app: Flask, web: FlaskClient, pid: str, gir: int, day: str, role: str = "infirmier") -> Any:
    answer = web.post(f"/api/residents/{pid}/evaluations/aggir", json={"gir": gir, "evaluated_on": day},
                      headers=staff(app, role))
    assert answer.status_code == 201, answer.get_data(as_text=True)
    return answer


def this_month(app: Flask) -> str:
    return app.extensions["dui"].clock().astimezone(PARIS).strftime("%Y-%m")


def test_the_gmp_of_the_demo_residents_computed_by_hand_is_the_apis(app: Flask, web: FlaskClient) -> None:
    parc = indicators(app, web)
    hand = by_hand_gmp([WRITTEN_GIR[r] for r in PARC_RESIDENTS])
    assert parc["gmp"]["value"] == hand and parc["gmp"]["evaluated"] == 3 and parc["gmp"]["not_evaluated"] == 0
    assert parc["gmp"]["by_gir"] == {str(g): sum(1 for r in PARC_RESIDENTS if WRITTEN_GIR[r] == g) for g in POINTS}
    tilleuls = indicators(app, web, finess=TILLEULS)
    assert tilleuls["gmp"]["value"] == by_hand_gmp([WRITTEN_GIR[r] for r in WRITTEN_GIR if r not in PARC_RESIDENTS])
    assert tilleuls["gmp"]["value"] != parc["gmp"]["value"]  # each establishment its own residents
    # three residents, each there the whole month, one room each
    assert parc["residents_present"] == 3 and parc["places"] == 3 and parc["complete"] is True
    assert parc["resident_days"] == 3 * DAYS_IN_MONTH and parc["days"] == DAYS_IN_MONTH
    assert parc["occupancy"] == 1.0
    assert parc["pmp"] == {"status": "not recorded", "value": None, "recorded": 0}
    assert parc["falls"] == {"count": 0, "per_1000_resident_days": 0.0}
    assert parc["name"] == ESTABLISHMENTS[1]["name"] and parc["establishment"] == PARC


def test_an_evaluation_is_a_tddui_questionnaire_response_and_the_latest_before_the_months_end_counts(
        app: Flask, web: FlaskClient, demo: FhirClient) -> None:
    answer = web.post(f"/api/residents/{FIRST}/evaluations/aggir", headers=staff(app, "infirmier"),
                      json={"gir": 1, "evaluated_on": "2026-11-20", "note": "Grabataire depuis sa chute"})
    assert answer.status_code == 201 and answer.headers["ETag"] == 'W/"1"'
    view = answer.get_json()
    assert (view["gir"], view["code"], view["evaluated_on"], view["resident_id"]) == (1, "MED-339", "2026-11-20",
                                                                                      FIRST)
    stored = demo.get(f"QuestionnaireResponse/{view['id']}").get_json()
    assert stored["meta"]["profile"] == [
        "https://interop.esante.gouv.fr/ig/fhir/tddui/StructureDefinition/tddui-questionnaire-response"]
    assert stored["identifier"]["system"] == "https://identifiant-medicosocial-evaluation.esante.gouv.fr"
    assert stored["identifier"]["value"].startswith(f"3{PARC}/000001-EVAL-")
    assert stored["item"][0]["linkId"] == "resultat-eval"
    assert stored["item"][0]["answer"][0]["valueCoding"] == {
        "system": "https://smt.esante.gouv.fr/fhir/CodeSystem/terminologie-cisis", "code": "MED-339",
        "display": "GIR-1"}
    found = demo.search(f"QuestionnaireResponse?subject=Patient/{FIRST}&evaluation-result=https://smt.esante.gouv.fr/"
                        "fhir/CodeSystem/terminologie-cisis|MED-339")
    assert [e["resource"]["id"] for e in found["entry"]] == [view["id"]]
    # two evaluations of the same day: the one written last counts
    evaluate(app, web, SECOND, 4, "2026-11-25")
    evaluate(app, web, SECOND, 2, "2026-11-25", role="medecin")
    # after the month's end: not November's
    evaluate(app, web, FIRST, 6, "2026-12-02", role="medecin")
    november = indicators(app, web)
    assert november["gmp"]["value"] == by_hand_gmp([1, 2, WRITTEN_GIR[THIRD]])
    december = indicators(app, web, "2026-12")
    assert december["gmp"]["value"] == by_hand_gmp([6, 2, WRITTEN_GIR[THIRD]])
    assert indicators(app, web, "2026-10")["gmp"]["value"] == by_hand_gmp([WRITTEN_GIR[r] for r in PARC_RESIDENTS])


def test_who_may_evaluate_and_who_may_read_the_indicators(app: Flask, web: FlaskClient) -> None:
    body = {"gir": 3, "evaluated_on": "2026-11-02"}
    evaluators = {role: web.post(f"/api/residents/{FIRST}/evaluations/aggir", json=body,
                                 headers=staff(app, role)).status_code
                  for role in ("medecin", "infirmier", "aide-soignant", "aes-amp", "psychologue", "kinesitherapeute",
                               "administratif", "direction")}
    assert evaluators == {"medecin": 201, "infirmier": 201, "aide-soignant": 403, "aes-amp": 403,
                          "psychologue": 403, "kinesitherapeute": 403, "administratif": 403, "direction": 403}
    theirs = web.post(f"/api/residents/{THEIRS}/evaluations/aggir", json=body, headers=staff(app, "medecin"))
    assert theirs.status_code == 404 and theirs.mimetype == "application/problem+json"
    readers = {role: web.get(f"/api/indicators?month={MONTH}", headers=staff(app, role)).status_code
               for role in ("direction", "medecin", "infirmier", "aide-soignant", "administratif",
                            "kinesitherapeute", "administrateur")}
    assert readers == {"direction": 200, "medecin": 200, "infirmier": 403, "aide-soignant": 403,
                       "administratif": 403, "kinesitherapeute": 403, "administrateur": 403}
    refused = web.get(f"/api/indicators?month={MONTH}", headers=staff(app, "infirmier"))
    assert refused.mimetype == "application/problem+json" and "direction" in refused.get_json()["detail"]
    assert web.get(f"/api/indicators?month={MONTH}").status_code == 401


def test_resident_days_occupancy_and_falls_per_thousand_days(app: Flask, web: FlaskClient,
                                                             demo: FhirClient) -> None:
    # the third resident left on 15 November (a date: the 15th is a day of her stay)
    stay = demo.get(f"Encounter/{THIRD}-sejour").get_json()
    stay["status"] = "finished"
    stay["period"]["end"] = "2026-11-15"
    assert demo.put(f"Encounter/{THIRD}-sejour", stay).status_code == 200
    aide = staff(app, "aide-soignant")
    falls = [(FIRST, "2026-11-10T08:00:00+01:00", aide), (THIRD, "2026-11-12T23:30:00+01:00", aide),
             (FIRST, "2026-12-01T00:10:00+01:00", aide),  # December, in Paris
             (FIRST, "2026-10-31T23:50:00+01:00", aide),  # October
             (THEIRS, "2026-11-10T09:00:00+01:00", staff(app, "aide-soignant", TILLEULS))]  # not Le Parc's
    ids = []
    for pid, moment, headers in falls:
        answer = web.post(f"/api/residents/{pid}/falls", json={"occurred_at": moment}, headers=headers)
        assert answer.status_code == 201, answer.get_data(as_text=True)
        ids.append(answer.get_json()["ids"][0])
    november = indicators(app, web)
    resident_days = 30 + 30 + 15
    assert november["resident_days"] == resident_days and november["residents_present"] == 3
    assert november["occupancy"] == round(resident_days / (3 * 30), 4)
    assert november["falls"] == {"count": 2, "per_1000_resident_days": round(2 * 1000 / resident_days, 2)}
    # a fall recorded in error is no fall
    wrong = demo.get(f"Observation/{ids[1]}").get_json()
    wrong["status"] = "entered-in-error"
    assert demo.put(f"Observation/{ids[1]}", wrong).status_code == 200
    assert indicators(app, web)["falls"]["count"] == 1
    assert indicators(app, web, finess=TILLEULS)["falls"]["count"] == 1
    # in December the third resident is gone, and so is her GIR from the GMP
    december = indicators(app, web, "2026-12")
    assert december["residents_present"] == 2 and december["falls"]["count"] == 1
    assert december["gmp"]["value"] == by_hand_gmp([WRITTEN_GIR[FIRST], WRITTEN_GIR[SECOND]])
    # a month before anyone came: nobody, nothing to divide by
    empty = indicators(app, web, "2000-01")
    assert (empty["residents_present"], empty["resident_days"], empty["gmp"]["value"], empty["occupancy"]) == (
        0, 0.0, None, 0.0)
    assert empty["falls"]["per_1000_resident_days"] is None and empty["dlu"]["freshness"] is None


def test_pmp_only_when_recorded(app: Flask, web: FlaskClient, demo: FhirClient) -> None:
    assert indicators(app, web)["pmp"]["status"] == "not recorded"
    for pid, points, day in ((FIRST, 300, "2026-06-01"), (FIRST, 420, "2026-11-03"), (SECOND, 180, "2026-11-04"),
                             (THIRD, 900, "2026-12-03")):  # after November: not November's
        observation = {"resourceType": "Observation", "status": "final",
                       "code": {"coding": [{"system": "https://dui.example.org/fhir/CodeSystem/dui-observation",
                                            "code": "pathos-points"}]},
                       "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": day,
                       "valueQuantity": {"value": points, "unit": "points", "system": "http://unitsofmeasure.org",
                                         "code": "{points}"}}
        assert demo.post("Observation", observation).status_code == 201
    assert indicators(app, web)["pmp"] == {"status": "recorded", "value": round((420 + 180) / 2, 1), "recorded": 2}


def test_transfers_dlu_freshness_and_dmp_feed_of_the_month(app: Flask, web: FlaskClient, demo: FhirClient) -> None:
    month = this_month(app)
    fludt = demo.post(f"Patient/{FIRST}/$fludt", {"resourceType": "Parameters", "parameter": [
        {"name": "reason", "valueString": "Chute avec douleur de hanche"}]})
    assert fludt.status_code == 201, fludt.get_data(as_text=True)
    dlus = {}
    for pid in (FIRST, SECOND):
        built = demo.post(f"Patient/{pid}/$dlu", {"resourceType": "Parameters"})
        assert built.status_code == 201, built.get_data(as_text=True)
        dlus[pid] = built.get_json()["id"]
    # the second resident's record changes after her DLU: it is stale until rebuilt
    assert web.post(f"/api/residents/{SECOND}/falls", json={}, headers=staff(app, "aide-soignant")).status_code == 201
    svc = app.extensions["dui"]
    with svc.unit_of_work(write=True) as session:  # what `dui worker` records when the DMP took it
        dmp_feed.set_state(svc.repository(session), dlus[FIRST], "sent", svc.clock())
    queued = demo.post(f"DocumentReference/{dlus[SECOND]}/$dmp-send", {"resourceType": "Parameters"})
    assert queued.status_code == 202, queued.get_data(as_text=True)
    found = indicators(app, web, month)
    assert found["hospital_transfers"] == {"fludt": 1, "residents": 1}
    assert found["dlu"] == {"current": 1, "stale": 1, "missing": 1, "freshness": round(1 / 3, 4)}
    assert found["dmp"] == {"dlu_built": 2, "reached_dmp": 1, "queued": 1, "refused": 0, "not_queued": 0,
                            "rate": 0.5}
    assert found["complete"] is False and found["until"] == found["as_of"]
    assert indicators(app, web, month, TILLEULS)["hospital_transfers"]["fludt"] == 0


def test_the_indicators_read_no_resource_body(app: Flask, web: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stored bodies are encrypted at rest: the indicators are SQL on the search index, not resources loaded."""
    opened = []
    original = bodies.Bodies.open

    def counting(self: bodies.Bodies, *args: Any) -> bytes | None:
        opened.append(args[0])
        return original(self, *args)

    monkeypatch.setattr(bodies.Bodies, "open", counting)
    assert indicators(app, web)["residents_present"] == 3
    assert opened == []
    web.get(f"/api/residents/{FIRST}", headers=staff(app, "infirmier"))
    assert opened  # the probe works: a resident's page opens bodies


def test_bad_months_and_bodies_are_problems_never_500(app: Flask, web: FlaskClient, demo: FhirClient) -> None:
    director = staff(app, "direction")
    months = {query: web.get(f"/api/indicators{query}", headers=director)
              for query in ("?month=2026-13", "?month=2026-1", "?month=2999-01", "", "?month=2026-11&month=2026-10",
                            "?month=2026-11&unit=x", "?month=0000-01", "?month=%00")}
    assert {q: a.status_code for q, a in months.items()} == dict.fromkeys(months, 422)
    assert all(a.mimetype == "application/problem+json" for a in months.values())
    thirteen = months["?month=2026-13"].get_json()["errors"]
    assert [(e["field"], e["detail_fr"]) for e in thirteen] == [("month", "2026-13 n'est pas un mois : le mois va "
                                                                          "de 01 à 12")]
    assert months["?month=2999-01"].get_json()["errors"][0]["detail_fr"] == "2999-01 n'a pas commencé"
    nurse = staff(app, "infirmier")
    url = f"/api/residents/{FIRST}/evaluations/aggir"
    before = demo.search(f"QuestionnaireResponse?subject=Patient/{FIRST}&_summary=count")["total"]
    tomorrow = (app.extensions["dui"].clock().astimezone(PARIS).date().toordinal() + 1)
    cases = {"gir 7": {"gir": 7, "evaluated_on": "2026-11-02"}, "gir text": {"gir": "3", "evaluated_on": "2026-11-02"},
             "gir 0": {"gir": 0, "evaluated_on": "2026-11-02"}, "no date": {"gir": 3},
             "bad date": {"gir": 3, "evaluated_on": "2026-02-30"},
             "tomorrow": {"gir": 3, "evaluated_on": date.fromordinal(tomorrow).isoformat()},
             "unknown": {"gir": 3, "evaluated_on": "2026-11-02", "score": 12},
             "long note": {"gir": 3, "evaluated_on": "2026-11-02", "note": "x" * 4001}}
    answers = {name: web.post(url, json=body, headers=nurse) for name, body in cases.items()}
    assert {n: a.status_code for n, a in answers.items()} == dict.fromkeys(cases, 422)
    fields = {n: [e["field"] for e in a.get_json()["errors"]] for n, a in answers.items()}
    assert fields == {"gir 7": ["gir"], "gir text": ["gir"], "gir 0": ["gir"], "no date": ["evaluated_on"],
                      "bad date": ["evaluated_on"], "tomorrow": ["evaluated_on"], "unknown": ["score"],
                      "long note": ["note"]}
    assert answers["tomorrow"].get_json()["errors"][0]["detail_fr"] == ("L'évaluation ne peut pas être datée après "
                                                                         "aujourd'hui")
    assert web.post(url, data="{", headers={**nurse, "Content-Type": "application/json"}).status_code == 400
    assert demo.search(f"QuestionnaireResponse?subject=Patient/{FIRST}&_summary=count")["total"] == before


def test_openapi_describes_the_new_endpoints(web: FlaskClient) -> None:
    paths = web.get("/api/openapi.json").get_json()["paths"]
    assert set(paths["/api/residents/{rid}/evaluations/aggir"]) == {"post"}
    indicators_get = paths["/api/indicators"]["get"]
    assert indicators_get["parameters"][0]["name"] == "month" and "403" in indicators_get["responses"]


# -- dui report ------------------------------------------------------------------------------------------------


def run_report(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["report", *args])


def test_the_report_has_the_apis_figures_and_readable_charts(app: Flask, web: FlaskClient, tmp_path: Path) -> None:
    assert web.post(f"/api/residents/{FIRST}/falls", json={"occurred_at": "2026-11-10T08:00:00+01:00"},
                    headers=staff(app, "aide-soignant")).status_code == 201
    api = indicators(app, web)
    target = tmp_path / "report.pdf"
    done = run_report(app, "--month", MONTH, "--establishment", PARC, "--output", str(target))
    assert done.exit_code == 0, done.output
    assert str(target) in done.output
    text = pypdf.PdfReader(target).pages[0].extract_text()
    hand = by_hand_gmp([WRITTEN_GIR[r] for r in PARC_RESIDENTS])
    assert api["gmp"]["value"] == hand
    assert f"GMP (GIR moyen pondéré) {french(hand)}" in " ".join(text.split())
    assert "Novembre 2026 : du 01/11/2026 au 30/11/2026" in text and PARC in text
    assert "PMP (PATHOS moyen pondéré) non renseigné" in " ".join(text.split())
    assert f"Chutes 1 ({api['falls']['per_1000_resident_days']:.2f}".replace(".", ",") in " ".join(text.split())
    pdf = pypdfium2.PdfDocument(target)
    assert len(pdf) == 2
    for number in range(len(pdf)):
        image = pdf[number].render(scale=2).to_pil().convert("RGB")
        image.save(tmp_path / f"report-page-{number + 1}.png")
        assert _ink(image, BLUE) > 2000  # the GIR chart's bars are drawn
    pdf.close()
    png = tmp_path / "report.png"
    drawn = run_report(app, "--month", MONTH, "--establishment", PARC, "--format", "png", "--output", str(png))
    assert drawn.exit_code == 0, drawn.output
    with Image.open(io.BytesIO(png.read_bytes())) as image:
        assert image.format == "PNG" and image.size == (1753, 1240)
        assert _ink(image.convert("RGB"), BLUE) > 2000


def _ink(image: Image.Image, color: tuple[int, int, int]) -> int:
    """How many pixels have ``color`` (give or take antialiasing)."""
    colors = image.getcolors(image.width * image.height) or []
    return sum(n for n, pixel in colors if all(abs(a - b) <= 8 for a, b in zip(pixel, color, strict=True)))


def test_report_errors_are_one_line(app: Flask, web: FlaskClient, tmp_path: Path) -> None:
    cases = {"bad month": ["--month", "2026-13", "--establishment", PARC],
             "not begun": ["--month", "2999-01", "--establishment", PARC],
             "which one": ["--month", MONTH],
             "unknown": ["--month", MONTH, "--establishment", "999999999"],
             "unwritable": ["--month", MONTH, "--establishment", PARC, "--output", str(tmp_path / "no" / "r.pdf")]}
    for name, args in cases.items():
        result = run_report(app, *args)
        assert result.exit_code != 0, name
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: "), (name, result.output)
    assert "2026-13 is not a month" in run_report(app, *cases["bad month"]).output
    assert ", ".join(sorted([PARC, TILLEULS])) in run_report(app, *cases["which one"]).output  # not the hospital


def test_a_month_whose_clocks_change_keeps_its_days(app: Flask, web: FlaskClient) -> None:
    """A month whose clocks change (October) still has 31 days, and a resident there all month 31 resident-days."""
    october = indicators(app, web, "2026-10")
    assert october["days"] == 31 and october["resident_days"] == 3 * 31 and october["occupancy"] == 1.0
    assert datetime.fromisoformat(october["from"].replace("Z", "+00:00")).astimezone(PARIS).day == 1
