"""A received CDA read into plain values and FHIR resources (dui.documents.received): the official FLUDR and DLU
examples of the CI-SIS (TestContenuCDA, ../shared/conformance/cda/ExemplesCDA), small synthetic CDAs for the
edge cases, and hostile bytes refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dui.documents.received import read_cda, to_resources
from dui.documents.received_fhir import SOURCE_EXTENSION
from dui.documents.received_model import (
    Attachment,
    Comment,
    Device,
    Diagnosis,
    ReceivedDocument,
    State,
    Treatment,
)
from dui.errors import Invalid, TooLarge, Unprocessable
from dui.fhir.validation import Validator
from fhir_profiles.context import Context
from fhir_profiles.validator import ProfileValidator
from tests.conftest import conformance_dir

RECORDED = "2026-03-02T10:15:00+01:00"
XSI = 'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'


def example(name: str) -> bytes:
    path: Path = conformance_dir("cda", "ExemplesCDA") / name
    if not path.exists():
        pytest.skip(f"conformance material absent: {path}")
    return path.read_bytes()


@pytest.fixture(scope="module")
def fludr() -> ReceivedDocument:
    return read_cda(example("DLU-EHPAD-FLUDR_2022.01.xml"))


def cda(body: str, *, template: str = "1.2.250.1.213.1.1.1.24", header: str = "") -> bytes:
    """A minimal CDA R2 of the given kind around ``body`` (the components of structuredBody)."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3" {XSI}>
  <templateId root="{template}" extension="2022.01"/>
  <id root="1.2.3.4.5" extension="DOC-1"/>
  <code code="74207-2" codeSystem="2.16.840.1.113883.6.1"/>
  <title>Synthetic</title>
  <effectiveTime value="20250102080910"/>
  <setId root="1.2.3.4.6"/>
  <versionNumber value="2"/>
  <recordTarget><patientRole>
    <id root="1.2.250.1.213.1.4.11" extension="123456789012345"/>
    <patient><name><family qualifier="BR">SYNTH</family><given>ANNE</given></name>
      <administrativeGenderCode code="F" codeSystem="2.16.840.1.113883.5.1"/><birthTime value="19400101"/></patient>
  </patientRole></recordTarget>
  {header}
  <component><structuredBody>{body}</structuredBody></component>
</ClinicalDocument>""".encode()


def section(code: str, text: str, entries: str = "", title: str = "Titre") -> str:
    return (f'<component><section><code code="{code}" codeSystem="2.16.840.1.113883.6.1"/><title>{title}</title>'
            f"<text>{text}</text>{entries}</section></component>")


# -- the official FLUDR --------------------------------------------------------------------------------------------


def test_fludr_header(fludr: ReceivedDocument) -> None:
    assert fludr.kind == "FLUDR"
    assert fludr.title == "FICHE DE LIAISON D'URGENCE/DOCUMENT DE RETOUR DU SERVICE DES URGENCES VERS L'EHPAD"
    assert (fludr.id.root, fludr.id.extension) == ("1.2.250.1.213.1.1.1.24.2022.1.1", None)
    assert fludr.set_id is not None and fludr.set_id.root == "1.2.250.1.213.1.1.1.24.2022.1"
    assert fludr.version == 1
    assert fludr.effective == "2020-03-28T17:55:00+01:00"
    assert fludr.code is not None and fludr.code.code == "74207-2"


def test_fludr_patient_as_named(fludr: ReceivedDocument) -> None:
    p = fludr.patient
    assert (p.ins, p.ins_oid, p.ins_kind) == ("279035121518989", "1.2.250.1.213.1.4.10", "TEST")
    assert [(i.root, i.extension) for i in p.ids] == [("1.2.3.4.567.8.9.10", "1234567890121")]
    assert (p.birth_family, p.used_family) == ("PAT-TROIS", "PAT-TROIS")
    assert (p.birth_given, p.first_given, p.used_given) == ("DOMINIQUE MARIE-LOUISE", "DOMINIQUE", "DOMINIQUE")
    assert p.birth_date == "1979-03-28"
    assert (p.gender_code, p.gender) == ("F", "female")


def test_fludr_author_custodian_encounter(fludr: ReceivedDocument) -> None:
    author = fludr.author
    assert author is not None
    assert author.name == "Pierre PETIT"
    assert author.id is not None and (author.id.root, author.id.extension) == ("1.2.250.1.71.4.2.1", "801234545872")
    assert author.organization == "CHU DE NANTERRE"
    assert author.organization_id is not None and author.organization_id.extension == "1137051849"
    assert fludr.custodian is not None and fludr.custodian.name == "CHU DE NANTERRE"
    enc = fludr.encounter
    assert enc is not None
    assert (enc.start, enc.end) == ("2020-03-27T15:35:00+01:00", "2020-03-28T17:55:00+01:00")
    assert enc.facility is not None and enc.facility.code == "SA01"
    assert enc.responsible is not None and enc.responsible.name == "Pierre PETIT"


def test_fludr_exit_diagnosis(fludr: ReceivedDocument) -> None:
    [dx] = fludr.of(Diagnosis)
    assert dx.code is not None
    assert (dx.code.code, dx.code.display, dx.code.oid) == ("J41.0", "Bronchite chronique simple",
                                                             "2.16.840.1.113883.6.3")
    assert dx.text == "Bronchite chronique simple"
    assert dx.start == "2020-03-28"
    assert dx.section == "11535-2"
    assert dx.location == ("/ClinicalDocument/component/structuredBody/component[2]/section/entry/act/"
                           "entryRelationship/observation")
    assert dx.entry_id is not None and dx.entry_id.root == "B47243F7-6470-43DC-97FA-4FA67A384BF4"


def test_fludr_exit_treatment(fludr: ReceivedDocument) -> None:
    [tx] = fludr.of(Treatment)
    assert tx.text == "AMPICILLINE PANPHARMA 500 mg, poudre et solution pour préparation injectable"
    assert tx.product is not None and (tx.product.code, tx.product.oid) == ("68496001", "1.2.250.1.213.2.3.1")
    assert (tx.start, tx.end) == ("2020-03-28", "2020-04-04")
    assert (tx.dose_low, tx.dose_high, tx.dose_unit, tx.dose) == (2, 4, "CP", "de 2 à 4 CP")
    assert (tx.period, tx.period_unit, tx.frequency) == (1, "d", "par jour")
    assert tx.section == "10183-2" and tx.location.endswith("component[3]/section/entry/substanceAdministration")


def test_fludr_devices(fludr: ReceivedDocument) -> None:
    devices = fludr.of(Device)
    assert [(d.text, d.code.code if d.code else None, d.present, d.site.display if d.site else None)
            for d in devices] == [
        ("Lunettes", "Q021003", True, None),
        ("Prothèse dentaire (Haut)", "P0102", True, "supérieur"),
        ("Prothèse dentaire (bas)", "P0102", True, "inférieur"),
        ("Prothèse auditive (droite)", "Y2145", True, "droit"),
        ("Prothèse auditive (gauche)", "Y2145", True, "gauche"),
        ("Autres dispositifs ou objets personnels", "GEN-092.02.01", None, None),
    ]
    assert devices[0].detail == "oui"
    assert devices[-1].detail == "texte libre"
    assert [d.location.rsplit("/", 2)[-2] for d in devices] == [f"entry[{n}]" for n in range(1, 7)]


def test_fludr_state_attachments_comment(fludr: ReceivedDocument) -> None:
    reason, transfer = fludr.of(State)
    assert reason.code is not None and reason.code.code == "15515-0"
    assert reason.detail == "Autorisation de retour à l'EHPAD"
    assert transfer.event and transfer.value_text == "EHPAD DE BOULOGNE-BILLANCOURT"
    assert (transfer.start, transfer.end) == ("2020-03-28T16:00:00+01:00", "2020-03-28T16:05:00+01:00")
    attachments = fludr.of(Attachment)
    assert [(a.code.code if a.code else None, a.text, a.media_type, a.embedded) for a in attachments] == [
        ("DLU_020", "Ordonnance de sortie", "application/pdf", True),
        ("DLU_021", "Copie du dossier des urgences", "application/pdf", True),
    ]
    [comment] = fludr.of(Comment)
    assert comment.text == "(Texte libre)"
    assert fludr.notes == ()


# -- FHIR resources --------------------------------------------------------------------------------------------------


def resources(doc: ReceivedDocument, encounter: str | None = "Encounter/e1") -> list[tuple[str, dict[str, Any]]]:
    return to_resources(doc, "Patient/p1", "DocumentReference/d1", encounter, RECORDED)


def test_fludr_resources_are_valid_r4_and_traced(fludr: ReceivedDocument) -> None:
    pairs = resources(fludr)
    validator = Validator()
    for url, resource in pairs:
        assert url.startswith("urn:uuid:")
        assert "id" not in resource
        assert validator.issues(resource) == [], resource["resourceType"]
    assert len({url for url, _ in pairs}) == len(pairs)
    types = [r["resourceType"] for _, r in pairs]
    # the reason of the return, the diagnosis, the treatment, six devices, then the Provenance
    assert types == ["Observation", "Condition", "MedicationStatement"] + ["Observation"] * 6 + ["Provenance"]
    *created, (_, prov) = pairs
    assert [t["reference"] for t in prov["target"]] == [url for url, _ in created]
    assert prov["entity"] == [{"role": "source", "what": {"reference": "DocumentReference/d1"}}]
    assert prov["recorded"] == RECORDED
    assert prov["agent"][0]["who"]["display"] == "CHU DE NANTERRE"
    assert prov["agent"][0]["who"]["identifier"] == {"system": "urn:oid:1.2.250.1.71.4.2.2", "value": "1137051849"}
    for _, resource in created:
        [ext] = resource["extension"]
        parts = {e["url"]: e for e in ext["extension"]}
        assert ext["url"] == SOURCE_EXTENSION
        assert parts["document"]["valueReference"] == {"reference": "DocumentReference/d1"}
        assert parts["location"]["valueString"].startswith("/ClinicalDocument/component/structuredBody/")
        assert resource["subject"] == {"reference": "Patient/p1"}


def test_the_traceability_extension_is_defined_and_checked(fludr: ReceivedDocument) -> None:
    profiles = ProfileValidator(Context())
    pairs = resources(fludr)
    for _, resource in pairs:
        assert [p for p in profiles.validate(resource) if p.severity != "information"] == [], resource["resourceType"]
    broken = pairs[1][1]
    broken["extension"][0]["extension"].pop()  # no location
    assert any("location" in p.message for p in profiles.validate(broken) if p.severity == "error")


def test_condition(fludr: ReceivedDocument) -> None:
    [condition] = [r for _, r in resources(fludr) if r["resourceType"] == "Condition"]
    assert condition["code"]["coding"] == [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "J41.0",
                                            "display": "Bronchite chronique simple"}]
    assert condition["category"][0]["coding"][0]["code"] == "encounter-diagnosis"
    assert condition["clinicalStatus"]["coding"][0]["code"] == "active"
    assert condition["encounter"] == {"reference": "Encounter/e1"}
    assert condition["onsetDateTime"] == "2020-03-28"
    assert condition["evidence"] == [{"detail": [{"reference": "DocumentReference/d1"}]}]
    assert condition["identifier"] == [{"system": "urn:ietf:rfc:3986",
                                        "value": "urn:uuid:b47243f7-6470-43dc-97fa-4fa67a384bf4"}]
    without = [r for _, r in resources(fludr, encounter=None) if r["resourceType"] == "Condition"]
    assert "encounter" not in without[0]


def test_medication_statement(fludr: ReceivedDocument) -> None:
    [ms] = [r for _, r in resources(fludr) if r["resourceType"] == "MedicationStatement"]
    assert ms["status"] == "active"
    assert ms["medicationCodeableConcept"]["coding"][0] == {
        "system": "urn:oid:1.2.250.1.213.2.3.1", "code": "68496001",
        "display": "AMPICILLINE PANPHARMA 500 mg, poudre et solution pour préparation injectable"}
    assert ms["effectivePeriod"] == {"start": "2020-03-28", "end": "2020-04-04"}
    assert ms["derivedFrom"] == [{"reference": "DocumentReference/d1"}]
    assert ms["informationSource"]["display"] == "CHU DE NANTERRE"
    [dosage] = ms["dosage"]
    assert dosage["text"] == "de 2 à 4 CP ; par jour"
    assert dosage["timing"] == {"repeat": {"period": 1, "periodUnit": "d"}}
    assert dosage["doseAndRate"] == [{"doseRange": {"low": {"value": 2, "unit": "CP"},
                                                    "high": {"value": 4, "unit": "CP"}}}]


def test_device_observations(fludr: ReceivedDocument) -> None:
    devices = [r for _, r in resources(fludr) if r["resourceType"] == "Observation"
               and r["extension"][0]["extension"][1]["valueCoding"]["code"] == "46264-8"]
    glasses, upper, *_, other = devices
    assert glasses["code"]["coding"][0] == {"system": "urn:oid:1.2.250.1.213.2.68", "code": "Q021003",
                                            "display": "LUNETTES PRÊTES À PORTER (OU LUNETTES MONTÉES)"}
    assert glasses["code"]["text"] == "Lunettes" and glasses["valueBoolean"] is True
    assert upper["bodySite"]["coding"][0]["system"] == "http://snomed.info/sct"
    assert other["valueString"] == "texte libre"
    assert glasses["derivedFrom"] == [{"reference": "DocumentReference/d1"}]


# -- synthetic edge cases -------------------------------------------------------------------------------------------


def test_no_coded_entries_gives_narrative_items() -> None:
    body = (section("11535-2", "<table><thead><tr><th>Date</th><th>Diagnostic</th></tr></thead><tbody>"
                               "<tr><td>02/01/2025</td><td>Chute sans gravité</td></tr>"
                               "<tr><td>02/01/2025</td><td>Plaie du cuir chevelu</td></tr></tbody></table>")
            + section("10183-2", "<list><item>Paracétamol 1 g si douleur</item></list>")
            + section("46264-8", "<paragraph>Revenue sans ses lunettes</paragraph>"))
    doc = read_cda(cda(body))
    dx = doc.of(Diagnosis)
    assert [(d.text, d.coded, d.code) for d in dx] == [("02/01/2025 ; Chute sans gravité", False, None),
                                                        ("02/01/2025 ; Plaie du cuir chevelu", False, None)]
    assert dx[0].location.endswith("section/text/table/tbody/tr[1]")
    assert [t.text for t in doc.of(Treatment)] == ["Paracétamol 1 g si douleur"]
    assert [d.text for d in doc.of(Device)] == ["Revenue sans ses lunettes"]
    pairs = resources(doc)
    validator = Validator()
    for _, resource in pairs:
        assert validator.issues(resource) == []
    conditions = [r for _, r in pairs if r["resourceType"] == "Condition"]
    assert [c["code"] for c in conditions] == [{"text": "02/01/2025 ; Chute sans gravité"},
                                               {"text": "02/01/2025 ; Plaie du cuir chevelu"}]
    assert "identifier" not in conditions[0]


def test_no_information_entries_are_noted_not_imported() -> None:
    problem = ('<entry><act classCode="ACT" moodCode="EVN"><code nullFlavor="NA"/>'
               '<entryRelationship typeCode="SUBJ"><observation classCode="OBS" moodCode="EVN">'
               '<templateId root="1.2.250.1.213.1.1.3.37"/><code code="282291009" codeSystem="2.16.840.1.113883.6.96"/>'
               '<value xsi:type="CD" nullFlavor="NI"/></observation></entryRelationship></act></entry>')
    negated = ('<entry><act classCode="ACT" moodCode="EVN"><entryRelationship typeCode="SUBJ">'
               '<observation classCode="OBS" moodCode="EVN" negationInd="true">'
               '<templateId root="1.2.250.1.213.1.1.3.37"/>'
               '<value xsi:type="CD" code="J41.0" codeSystem="2.16.840.1.113883.6.3"/></observation>'
               '</entryRelationship></act></entry>')
    treatment = ('<entry><substanceAdministration classCode="SBADM" moodCode="INT"><consumable><manufacturedProduct>'
                 '<manufacturedMaterial><code nullFlavor="NI"/></manufacturedMaterial></manufacturedProduct>'
                 '</consumable></substanceAdministration></entry>')
    device = ('<entry><observation classCode="OBS" moodCode="EVN"><code nullFlavor="NASK"/>'
              '<value xsi:type="BL" nullFlavor="NI"/></observation></entry>')
    without = ('<entry><observation classCode="OBS" moodCode="EVN"><id root="1.2.3.9" extension="D2"/>'
               '<code code="P0102" codeSystem="1.2.250.1.213.2.68" displayName="PROTHÈSES DENTAIRES"/>'
               '<value xsi:type="BL" value="false"/></observation></entry>')
    body = (section("11535-2", "Aucune information", problem + negated)
            + section("10183-2", "Aucun traitement", treatment)
            + section("46264-8", "Sans prothèse dentaire", device + without))
    doc = read_cda(cda(body))
    assert doc.of(Diagnosis) == [] and doc.of(Treatment) == []
    assert [(n.section, n.reason.split(":")[0].split(" (")[0]) for n in doc.notes] == [
        ("11535-2", "no information"), ("11535-2", "negated"), ("10183-2", "no information"),
        ("46264-8", "no information")]
    assert all(n.location.startswith("/ClinicalDocument/component/structuredBody/") for n in doc.notes)
    [dentures] = doc.of(Device)
    assert dentures.present is False and dentures.text == "PROTHÈSES DENTAIRES"
    [(_, obs), (_, prov)] = resources(doc)
    assert obs["valueBoolean"] is False
    assert obs["identifier"] == [{"system": "urn:oid:1.2.3.9", "value": "D2"}]
    assert Validator().issues(obs) == [] and Validator().issues(prov) == []


def test_times_without_offset_and_partial_dates() -> None:
    doc = read_cda(cda(""))
    assert doc.effective == "2025-01-02T08:09:10+01:00"  # Europe/Paris in winter
    assert read_cda(cda(""), timezone="UTC").effective == "2025-01-02T08:09:10+00:00"
    assert doc.patient.birth_date == "1940-01-01"
    assert (doc.patient.ins_kind, doc.patient.first_given) == ("DEMO", "ANNE")
    assert doc.version == 2 and doc.id.extension == "DOC-1"
    assert doc.items == () and to_resources(doc, "Patient/p", "DocumentReference/d", None, RECORDED) == []


def test_other_kinds_are_read_without_fludr_items() -> None:
    dlu = read_cda(example("DLU-EHPAD-DLU_2022.01.xml"))
    assert dlu.kind == "DLU"
    assert dlu.items == () and dlu.notes == ()
    assert dlu.patient.ins is not None and dlu.patient.birth_date is not None
    assert resources(dlu) == []
    for template, kind in (("1.2.250.1.213.1.1.1.23", "FLUDT"), ("1.2.250.1.213.1.1.1.13", "VSM"),
                           ("1.3.6.1.4.1.19376.1.2.20", "N1"), ("1.2.3", "CDA")):
        assert read_cda(cda(section("11535-2", "x"), template=template)).kind == kind


def test_missing_id_or_patient_is_unprocessable() -> None:
    no_id = cda("").replace(b'<id root="1.2.3.4.5" extension="DOC-1"/>', b"")
    with pytest.raises(Unprocessable, match="no id"):
        read_cda(no_id)
    no_patient = cda("").split(b"<recordTarget>")[0] + cda("").split(b"</recordTarget>")[1]
    with pytest.raises(Unprocessable, match="names no patient"):
        read_cda(no_patient)


# -- hostile bytes ---------------------------------------------------------------------------------------------------

LOL = ('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
       + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10))
       + ']><ClinicalDocument xmlns="urn:hl7-org:v3"><title>&lol9;</title></ClinicalDocument>')


@pytest.mark.parametrize(("data", "error", "message"), [
    (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
     b'<ClinicalDocument xmlns="urn:hl7-org:v3"><title>&e;</title></ClinicalDocument>',
     Invalid, "DOCTYPE or an entity declaration is refused"),
    (LOL.encode(), Invalid, "DOCTYPE or an entity declaration is refused"),
    (b'<Patient xmlns="http://hl7.org/fhir"><id value="x"/></Patient>', Invalid,
     "Not a CDA R2 document: the root element is <Patient>"),
    (b"<ClinicalDocument><id root='1'/></ClinicalDocument>", Invalid, "is not in the CDA namespace urn:hl7-org:v3"),
    (b"%PDF-1.7 this is not XML", Invalid, "not well-formed XML"),
    (b"", Invalid, "not well-formed XML"),
    ('<?xml version="1.0" encoding="ISO-8859-1"?><ClinicalDocument xmlns="urn:hl7-org:v3"/>'.encode("latin-1"),
     Invalid, "only UTF-8"),
    (b"<a>" * 200 + b"</a>" * 200, TooLarge, "nested deeper"),
], ids=["xxe", "billion-laughs", "fhir-root", "no-namespace", "not-xml", "empty", "latin-1", "deep"])
def test_hostile_bytes_are_refused(data: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message) as caught:
        read_cda(data)
    assert "passwd" not in str(caught.value) and "root:" not in str(caught.value)


def test_oversize_is_refused_before_parsing() -> None:
    with pytest.raises(TooLarge, match="larger than 100 bytes"):
        read_cda(cda(""), max_bytes=100)
