"""The CDA builders (``dui.documents.cda``): header facts and sections read back with XPath, then the three
documents of a rich record, of an empty one (nothing but the identity) and of an identity without INS checked
against CDA_extended.xsd and the CI-SIS schematrons of the material (tests marked ``conformance``)."""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import pytest
from lxml import etree

from dui.documents import cda
from dui.documents.record import Code, Person, ResidentRecord, Transfer
from tests.cda_factory import empty_record, make_ids, make_record, make_transfer, unqualified_identity
from tests.conftest import conformance_dir

NS = {"cda": "urn:hl7-org:v3", "xsi": "http://www.w3.org/2001/XMLSchema-instance"}
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
DLU_TYPE = Code("74207-2", "Dossier de liaison d'urgence", "http://loinc.org")

DLU_SECTIONS = ("11302-7", "11450-4", "11348-0", "48765-2", "10160-0", "18776-5", "42348-3", "42545-4", "30954-2",
                "11369-6", "55107-7", "55112-7")
FLUDT_SECTIONS = ("42545-4", "8716-3", "30954-2", "10160-0", "47420-5", "46264-8", "55112-7")


def parse(xml: bytes) -> etree._Element:
    assert xml.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    return etree.fromstring(xml)


def xp(root: etree._Element, path: str) -> list:  # type: ignore[type-arg]
    return root.xpath(path, namespaces=NS)  # type: ignore[no-any-return]


def one(root: etree._Element, path: str) -> str:
    found = xp(root, path)
    assert len(found) == 1, (path, found)
    return str(found[0])


def build(kind: str, record: ResidentRecord, transfer: Transfer | None = None) -> bytes:
    if kind == "dlu":
        return cda.dlu(record, make_ids("DLU"))
    if kind == "fludt":
        return cda.fludt(record, transfer or make_transfer(), make_ids("FLUDT"))
    return cda.n1(record, make_ids("N1"), PDF, "Dossier de liaison d'urgence (PDF)", DLU_TYPE)


# --- header ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "template"), [("dlu", "1.2.250.1.213.1.1.1.22"),
                                                ("fludt", "1.2.250.1.213.1.1.1.23"),
                                                ("n1", "1.3.6.1.4.1.19376.1.2.20")])
def test_header_identifies_the_document(kind: str, template: str) -> None:
    root = parse(build(kind, make_record()))
    assert xp(root, "cda:realmCode/@code") == ["FR"]
    assert xp(root, "cda:typeId/@extension") == ["POCD_HD000040"]
    assert xp(root, "cda:templateId/@root") == ["2.16.840.1.113883.2.8.2.1", "1.2.250.1.213.1.1.1.1", template]
    assert one(root, "cda:id/@root") == "1.2.250.1.999.1.2"
    assert one(root, "cda:id/@extension").endswith("-p1-3")
    assert one(root, "cda:setId/@extension").endswith("-p1")
    assert one(root, "cda:versionNumber/@value") == "3"
    assert one(root, "cda:effectiveTime/@value") == "20260312103000+0100"
    assert one(root, "cda:confidentialityCode/@code") == "N"
    assert one(root, "cda:languageCode/@code") == "fr-FR"
    assert one(root, "cda:code/@code") == "74207-2"
    assert one(root, "cda:code/@codeSystem") == cda.LOINC


def test_the_ins_is_written_only_when_the_identity_is_qualified() -> None:
    qualified = parse(build("dlu", make_record()))
    ids = xp(qualified, "cda:recordTarget/cda:patientRole/cda:id")
    assert [(i.get("root"), i.get("extension")) for i in ids] == [
        ("1.2.250.1.213.1.4.10", "236056912312345"), ("1.2.250.1.999.1.1.42", "R-000042")]
    for kind in ("dlu", "fludt", "n1"):
        root = parse(build(kind, make_record(identity=unqualified_identity())))
        ids = xp(root, "cda:recordTarget/cda:patientRole/cda:id")
        assert [(i.get("root"), i.get("extension")) for i in ids] == [("1.2.250.1.999.1.1.42", "R-000042")]
        assert b"236056912312345" not in etree.tostring(root)


def test_the_patient_names_birth_date_gender_and_birth_place() -> None:
    root = parse(build("dlu", make_record()))
    patient = "cda:recordTarget/cda:patientRole/cda:patient"
    assert one(root, f"{patient}/cda:name/cda:family[@qualifier='BR']/text()") == "MARTIN"
    assert one(root, f"{patient}/cda:name/cda:given[@qualifier='BR']/text()") == "Hélène"
    assert one(root, f"{patient}/cda:name/cda:given[not(@qualifier)]/text()") == "Hélène Marie"
    assert one(root, f"{patient}/cda:name/cda:family[@qualifier='CL']/text()") == "DURAND"
    assert one(root, f"{patient}/cda:administrativeGenderCode/@code") == "F"
    assert one(root, f"{patient}/cda:birthTime/@value") == "19360514"
    assert one(root, f"{patient}/cda:birthplace/cda:place/cda:addr/cda:county/text()") == "69123"
    unknown = make_record(identity=dataclasses.replace(make_record().identity, sex="unknown", birth_place_code=None,
                                                       birth_place=None, used_family=None, used_given=None))
    root = parse(build("dlu", unknown))
    assert one(root, f"{patient}/cda:administrativeGenderCode/@code") == "U"
    assert xp(root, f"{patient}/cda:birthplace") == []
    assert xp(root, f"{patient}/cda:name/*[@qualifier='CL']") == []


def test_the_gp_is_the_pcp_participant_and_the_relatives_are_informants() -> None:
    root = parse(build("dlu", make_record()))
    participant = "cda:participant[@typeCode='INF'][cda:functionCode/@code='PCP']"
    assert one(root, f"{participant}/cda:associatedEntity/cda:id/@extension") == "810001234567"
    assert one(root, f"{participant}/cda:associatedEntity/cda:associatedPerson/cda:name/cda:family/text()") == \
        "BERNARD"
    assert one(root, "cda:informant/cda:relatedEntity[@classCode='NOK']/cda:relatedPerson/cda:name/cda:given/"
                     "text()") == "Sophie"
    assert one(root, "cda:informant/cda:relatedEntity[@classCode='ECON']/cda:relatedPerson/cda:name/cda:given/"
                     "text()") == "Marc"
    empty = parse(build("dlu", empty_record()))
    assert xp(empty, "cda:informant") == []
    # the volet wants the PCP participant even when the record names no GP: it says it does not know who
    assert one(empty, f"{participant}/cda:associatedEntity/cda:associatedPerson/cda:name/cda:family/"
                      "@nullFlavor") == "UNK"


def test_author_custodian_encounter_and_service_event() -> None:
    root = parse(build("dlu", make_record()))
    assert one(root, "cda:author/cda:assignedAuthor/cda:id/@extension") == "810007654321"
    org = "cda:author/cda:assignedAuthor/cda:representedOrganization"
    assert one(root, f"{org}/cda:id/@root") == "1.2.250.1.71.4.2.2"
    assert one(root, f"{org}/cda:id/@extension") == "1690000001"
    assert one(root, f"{org}/cda:standardIndustryClassCode/@code") == "ETABLISSEMENT"
    assert one(root, "cda:custodian/cda:assignedCustodian/cda:representedCustodianOrganization/cda:id/"
                     "@extension") == "1690000001"
    assert one(root, "cda:documentationOf/cda:serviceEvent/cda:code/@code") == "34117-2"
    encounter = "cda:componentOf/cda:encompassingEncounter"
    assert one(root, f"{encounter}/cda:location/cda:healthCareFacility/cda:code/@code") == "SA17"
    assert one(root, f"{encounter}/cda:effectiveTime/cda:low/@value") == "20230901"
    fludt = parse(build("fludt", make_record()))
    assert one(fludt, "cda:documentationOf/cda:serviceEvent/cda:code/@code") == "28651-8"
    # no coordinator: the establishment's software writes, the establishment answers for the document
    device = parse(build("dlu", empty_record()))
    assert one(device, "cda:author/cda:assignedAuthor/cda:assignedAuthoringDevice/cda:softwareName/text()") == \
        "DUI 0.1.0"
    assert one(device, "cda:legalAuthenticator/cda:assignedEntity/cda:id/@extension") == "1690000001"
    assert one(device, f"{encounter}/cda:effectiveTime/cda:low/@nullFlavor") == "UNK"


# --- body --------------------------------------------------------------------------------------------------------


def section_codes(root: etree._Element) -> list[str]:
    return [str(c) for c in xp(root, "cda:component/cda:structuredBody/cda:component/cda:section/cda:code/@code")]


def test_every_dlu_section_once() -> None:
    assert sorted(section_codes(parse(build("dlu", make_record())))) == sorted(DLU_SECTIONS)
    # the comment is the only section left out when the record has nothing to say
    assert sorted(section_codes(parse(build("dlu", empty_record())))) == sorted(set(DLU_SECTIONS) - {"55112-7"})


def test_every_fludt_section_once() -> None:
    assert sorted(section_codes(parse(build("fludt", make_record())))) == sorted(FLUDT_SECTIONS)
    plain = parse(build("fludt", empty_record(), Transfer(reason="Chute")))
    assert sorted(section_codes(plain)) == sorted(set(FLUDT_SECTIONS) - {"55112-7"})


def section(root: etree._Element, code: str) -> etree._Element:
    found = xp(root, f"cda:component/cda:structuredBody/cda:component/cda:section[cda:code/@code='{code}']")
    assert len(found) == 1
    return found[0]  # type: ignore[no-any-return]


def test_codes_map_to_cda_systems_and_uncoded_items_point_at_the_narrative() -> None:
    root = parse(build("dlu", make_record()))
    problems = section(root, "11450-4")
    values = xp(problems, ".//cda:observation/cda:value")
    assert (values[0].get("code"), values[0].get("codeSystem")) == ("I50.9", cda.ICD10)
    uncoded = values[2]
    assert uncoded.get("nullFlavor") == "UNK"
    ref = one(uncoded, "cda:originalText/cda:reference/@value")
    assert xp(problems, f"cda:text//cda:content[@ID='{ref[1:]}']/text()") == ["Arthrose des genoux (non codée)"]
    # a medicine coded in ATC: the CI-SIS wants CIS in code, so ATC is a translation
    treatments = section(root, "10160-0")
    code = xp(treatments, ".//cda:manufacturedMaterial/cda:code")[0]
    assert code.get("nullFlavor") == "OTH"
    assert one(code, "cda:translation/@codeSystem") == cda.ATC
    # every narrative reference resolves to an ID of the document
    ids = set(xp(root, "//@ID"))
    refs = {str(r)[1:] for r in xp(root, "//cda:reference/@value")}
    assert refs <= ids


def test_state_results_and_checklist_of_the_dlu() -> None:
    root = parse(build("dlu", make_record()))
    state = section(root, "42545-4")
    observations = {o.get("code"): o for o in xp(state, "cda:entry/cda:observation/cda:code")}
    assert len(observations) == 15
    value = {c: one(o.getparent(), "cda:value/@value") if not xp(o.getparent(), "cda:value/@nullFlavor") else None
             for c, o in observations.items()}
    assert value["62476001"] == "true" and value["248046000"] == "false" and value["24199005"] is None
    assert "Se déplace avec un déambulateur" in "".join(state.itertext())
    bmr = section(root, "30954-2")
    assert one(bmr, "cda:entry/cda:observation[cda:code/@code='U83.71']/cda:value/@value") == "true"
    checklist = section(root, "55107-7")
    assert len(xp(checklist, "cda:entry/cda:organizer")) == 14
    assert xp(checklist, ".//cda:observation[not(@negationInd)]/cda:value/@code") == ["DLU_006", "DLU_009"]
    empty = parse(build("dlu", empty_record()))
    assert xp(section(empty, "30954-2"), ".//cda:observation/cda:value/@nullFlavor") == ["NI"]
    assert xp(section(empty, "48765-2"), ".//cda:observation/cda:value/@code") == ["no-allergy-info"]


def test_fludt_transfer_vitals_meal_and_devices() -> None:
    root = parse(build("fludt", make_record()))
    events = section(root, "42545-4")
    assert one(events, "cda:entry/cda:observation/cda:code/@code") == "57277-6"
    assert one(events, "cda:entry/cda:observation/cda:value/text()").startswith("Dyspnée brutale")
    vitals = section(root, "8716-3")
    quantities = {o.get("code"): o.getnext() for o in xp(vitals, ".//cda:observation/cda:code")}
    values = [(c, one(q.getparent(), "cda:value/@value"), one(q.getparent(), "cda:value/@unit"))
              for c, q in quantities.items()]
    assert ("8310-5", "37.8", "Cel") in values and ("8867-4", "78", "/min") in values
    assert one(section(root, "30954-2"), ".//cda:observation[cda:code/@code='DLU_002']/cda:value/@value") == "true"
    assert "Petit déjeuner complet" in "".join(section(root, "47420-5").itertext())
    devices = xp(section(root, "46264-8"), "cda:entry/cda:observation/cda:code/@code")
    assert devices == ["Q021003", "P0102", "Y2145", "GEN-092.02.01"]


def test_n1_carries_the_pdf() -> None:
    root = parse(build("n1", make_record()))
    text = xp(root, "cda:component/cda:nonXMLBody/cda:text")[0]
    assert (text.get("mediaType"), text.get("representation")) == ("application/pdf", "B64")
    assert base64.b64decode(text.text) == PDF
    assert xp(root, "cda:participant") == []
    with pytest.raises(ValueError, match="PDF"):
        cda.n1(make_record(), make_ids("N1"), b"<html/>", "x", DLU_TYPE)


def test_text_is_escaped_and_round_trips() -> None:
    hostile = "O'Brien <script>alert(1)</script> & \"co\""
    record = make_record(identity=dataclasses.replace(make_record().identity, birth_family=hostile),
                         comment=hostile, gp=Person(family=hostile, given=None, role="Médecin traitant"))
    for kind in ("dlu", "fludt", "n1"):
        xml = build(kind, record, make_transfer(reason=hostile))
        assert b"<script>" not in xml
        root = parse(xml)
        assert one(root, "cda:recordTarget//cda:family[@qualifier='BR']/text()") == hostile


def test_the_same_inputs_give_the_same_document() -> None:
    assert build("dlu", make_record()) == build("dlu", make_record())


def test_fhir_dates_become_hl7_timestamps() -> None:
    assert cda.fhir_ts("2020-03-27") == "20200327"
    assert cda.fhir_ts("2020-03") == "202003"
    assert cda.fhir_ts("2020-03-27T15:35:00+01:00") == "20200327153500+0100"
    assert cda.fhir_ts("2020-03-27T15:35:00Z") == "20200327153500+0000"
    assert cda.fhir_ts("hier") is None


def test_document_ids_refuse_a_naive_time() -> None:
    with pytest.raises(ValueError, match="aware"):
        make_ids(effective=make_ids().effective.replace(tzinfo=None))


# --- conformance: CDA_extended.xsd and the CI-SIS schematrons ----------------------------------------------------

RECORDS = {
    "rich": lambda: (make_record(), make_transfer()),
    "empty": lambda: (empty_record(), Transfer(reason="Chute dans la chambre")),
    "no-ins": lambda: (make_record(identity=unqualified_identity()), make_transfer()),
    "no-known-allergy": lambda: (make_record(allergies=(), no_known_allergy=True), make_transfer()),
}
# Beyond the volet's own schematron (what conformance.check runs), the profiles TestContenuCDA runs on every
# document: IHE sections and entries, the CI-SIS content models, the ANS models and the structuration minimale.
PROFILES = ("schematrons/profils/IHE.sch", "schematrons/profils/CI-SIS_ModelesDeContenusCDA.sch",
            "schematrons/profils/CI-SIS_Modeles_ANS.sch",
            "schematrons/profils/structurationMinimale/ASIP-STRUCT-MIN-StrucMin.sch")


@pytest.fixture(scope="module")
def material() -> Path:
    return conformance_dir("cda")


@pytest.mark.conformance
@pytest.mark.parametrize("kind", ["dlu", "fludt", "n1"])
@pytest.mark.parametrize("name", sorted(RECORDS))
def test_documents_conform(material: Path, kind: str, name: str) -> None:
    from dui.documents import conformance

    record, transfer = RECORDS[name]()
    xml = build(kind, record, transfer)
    report = conformance.check(xml, material)
    assert report.xsd_errors == ()
    assert [f.line() for f in report.errors] == []
    root = conformance.read_document(xml)
    for profile in PROFILES:
        findings, _ = conformance.run_schematron(root, material / profile)
        assert [f.line() for f in findings if not f.is_warning] == [], profile


def test_no_known_allergy_is_said_only_when_the_record_says_it() -> None:
    ids = make_ids()
    stated = etree.fromstring(cda.dlu(make_record(allergies=(), no_known_allergy=True), ids))
    unstated = etree.fromstring(cda.dlu(make_record(allergies=()), ids))
    path = "//cda:section[cda:code/@code='48765-2']//cda:observation/cda:value/@code"
    assert stated.xpath(path, namespaces=NS) == ["no-known-allergies"]
    assert unstated.xpath(path, namespaces=NS) == ["no-allergy-info"]
