"""The CDA conformance checker: the runner's ISO semantics on a small schematron, then the CI-SIS material (ANS
TestContenuCDA in ../shared/conformance/cda): the official examples pass, broken copies are caught by the rule
that says why, and ``dui documents check`` says so with its exit code."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from lxml import etree

from dui.cli import cli
from dui.documents import conformance
from dui.documents.conformance import Report, check, compile_count, run_schematron
from dui.errors import Invalid, Unprocessable
from dui.fhir.xmlsafe import parse_untrusted
from dui.settings import Settings
from tests.conftest import conformance_dir

NS = {"cda": "urn:hl7-org:v3"}
CDA = "{urn:hl7-org:v3}"
material_test = pytest.mark.conformance

# --- the runner, on a schematron of its own (no material needed) ------------------------------------------------

MAIN = """<?xml version="1.0" encoding="UTF-8"?>
<schema xmlns="http://purl.oclc.org/dsdl/schematron" queryBinding="xslt2">
  <ns prefix="t" uri="urn:t"/>
  <include href="inc/Abstract.sch"/>
  <pattern id="variables"><let name="vs" value="'vs/codes.xml'"/></pattern>
  <pattern id="first-match">
    <rule context="t:item[@kind = 'a']"><report test="true()">specific <value-of select="@code"/></report></rule>
    <rule context="t:item"><report test="true()" flag="seen">general <name/></report></rule>
  </pattern>
  <pattern id="attributes">
    <rule context="@code"><assert test="string-length(.) = 3" role="warning">code <value-of select="."/></assert></rule>
  </pattern>
  <pattern id="in-set" is-a="member">
    <param name="elt" value="t:item"/>
    <param name="elt_label" value="'item'"/>
    <param name="set" value="$vs"/>
  </pattern>
  <pattern id="extends">
    <rule abstract="true" id="has-code"><assert test="@code">no code on <name/></assert></rule>
    <rule context="t:r"><extends rule="has-code"/></rule>
  </pattern>
</schema>
"""
ABSTRACT = """<pattern xmlns="http://purl.oclc.org/dsdl/schematron" abstract="true" id="member">
  <rule context="$elt">
    <let name="c" value="@code"/>
    <assert test="document($set)//code[@v = $c]">[member] <value-of select="$elt_label"/> <value-of select="$c"/>
      not in <value-of select="$set"/></assert>
  </rule>
</pattern>
"""
INSTANCE = b'<r xmlns="urn:t"><item kind="a" code="abc"/><item code="zz"/><item code="xyz"/></r>'


@pytest.fixture
def small_schematron(tmp_path: Path) -> Path:
    (tmp_path / "inc").mkdir()
    (tmp_path / "vs").mkdir()
    (tmp_path / "main.sch").write_text(MAIN, encoding="utf-8")
    # spelt inc/Abstract.sch by the include, as TestContenuCDA's Windows-written includes sometimes do
    (tmp_path / "inc" / "abstract.sch").write_text(ABSTRACT, encoding="utf-8")
    # relative to the schematron that includes the pattern, not to the file that holds it
    (tmp_path / "vs" / "codes.xml").write_text('<codes><code v="abc"/><code v="xyz"/></codes>', encoding="utf-8")
    return tmp_path / "main.sch"


def test_iso_semantics_on_a_small_schematron(small_schematron: Path) -> None:
    findings, unchecked = run_schematron(parse_untrusted(INSTANCE), small_schematron)
    assert not unchecked
    got = sorted((f.pattern, f.kind, f.location, f.message, f.role, f.flag) for f in findings)
    assert got == sorted([
        # first matching rule only: the first item is not also "general"
        ("first-match", "report", "/Q{urn:t}r[1]/Q{urn:t}item[1]", "specific abc", None, None),
        ("first-match", "report", "/Q{urn:t}r[1]/Q{urn:t}item[2]", "general item", None, "seen"),
        ("first-match", "report", "/Q{urn:t}r[1]/Q{urn:t}item[3]", "general item", None, "seen"),
        # attributes are visited
        ("attributes", "assert", "/Q{urn:t}r[1]/Q{urn:t}item[2]/@code", "code zz", "warning", None),
        # the abstract pattern, $elt_label replaced before $elt, the value set read relative to main.sch
        ("in-set", "assert", "/Q{urn:t}r[1]/Q{urn:t}item[2]", "[member] item zz not in vs/codes.xml", None, None),
        ("extends", "assert", "/Q{urn:t}r[1]", "no code on r", None, None),
    ])
    warning = next(f for f in findings if f.pattern == "attributes")
    assert warning.is_warning and not any(f.is_warning for f in findings if f is not warning)


def test_a_missing_value_set_leaves_its_rule_out_and_says_so(small_schematron: Path) -> None:
    (small_schematron.parent / "vs" / "codes.xml").unlink()
    copy = small_schematron.with_name("other.sch")  # compiled on its own: the cache is per file
    copy.write_text(MAIN, encoding="utf-8")
    findings, unchecked = run_schematron(parse_untrusted(INSTANCE), copy)
    assert [(u.pattern, u.missing) for u in unchecked] == [("in-set", "vs/codes.xml")]
    assert not [f for f in findings if f.pattern == "in-set"]


# --- the CI-SIS material ------------------------------------------------------------------------------------------

EXAMPLES = {
    "DLU-EHPAD-DLU_2022.01.xml": "DLU-EHPAD DLU",
    "DLU-EHPAD-FLUDT_2022.01.xml": "DLU-EHPAD FLUDT",
    "DLU-EHPAD-FLUDR_2022.01.xml": "DLU-EHPAD FLUDR",
    "DOC_NON_STRUCTURE_CDA-R2-N1.xml": "XDS-SD N1 (structuration minimale)",
}
# The one rule of the structuration minimale (ART-DECOR's ASIP-STRUCT-MIN-StrucMin.sch) that cannot run: it reads
# ClinicalDocument/code against include/voc-1.2.250.1.213.1.1.5.471-DYNAMIC.xml (JDV_J07_XdsTypeCode_CISIS), a
# value set export TestContenuCDA does not ship (the other thirteen voc-*.xml it reads are there). The runner leaves
# it out and says so, rather than failing the whole run (Saxon's FODC0002) or failing the code.
MISSING_VALUE_SET = "include/voc-1.2.250.1.213.1.1.5.471-DYNAMIC.xml"


@pytest.fixture(scope="module")
def material() -> Path:
    return conformance_dir("cda")


def _example(material: Path, name: str) -> bytes:
    return (material / "ExemplesCDA" / name).read_bytes()


def _broken(material: Path, name: str, edit: Callable[[etree._Element], None]) -> bytes:
    root = parse_untrusted(_example(material, name))
    edit(root)
    return etree.tostring(root, encoding="UTF-8", xml_declaration=True)


def _one(root: etree._Element, path: str) -> etree._Element:
    found = root.xpath(path, namespaces=NS)
    assert len(found) == 1, path
    return found[0]


def _remove(root: etree._Element, path: str) -> None:
    node = _one(root, path)
    parent = node.getparent()
    assert parent is not None
    parent.remove(node)


def _errors(report: Report) -> list[tuple[str, str]]:
    return [(f.pattern, f.message) for f in report.errors]


@material_test
@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_official_examples_conform(material: Path, name: str) -> None:
    report = check(_example(material, name), material)
    assert report.model == EXAMPLES[name]
    assert report.xsd_errors == ()
    assert report.errors == (), [f.line() for f in report.errors]
    expected_unchecked = [MISSING_VALUE_SET] if name.startswith("DOC_NON_STRUCTURE") else []
    assert [u.missing for u in report.unchecked] == expected_unchecked
    assert report.ok


@material_test
def test_a_run_on_the_dlu_example_is_quick_once_compiled(material: Path) -> None:
    data = _example(material, "DLU-EHPAD-DLU_2022.01.xml")  # 1.1 MB, most of it the attached PDF
    check(data, material)
    before = compile_count()
    started = time.perf_counter()
    report = check(data, material)
    elapsed = time.perf_counter() - started
    assert compile_count() == before  # the compiled stylesheet is reused: one compile per schematron and process
    assert report.ok
    assert elapsed < 2.0  # about 0.05 s here (XSD and schematron); the first run adds the compile, about 0.1 s


ENTETE = "Entete_DLU-DLU"
TREATMENTS = "//cda:section[cda:code/@code = '10160-0']/.."  # the component holding the section Traitements
STATE_CODE = ("//cda:section[cda:templateId/@root = '1.3.6.1.4.1.19376.1.7.3.1.1.13.7']/cda:entry[1]/cda:observation"
              "[cda:templateId/@root = '1.3.6.1.4.1.19376.1.5.3.1.4.13']/cda:code")


def _no_birth_time(root: etree._Element) -> None:
    _remove(root, "cda:recordTarget/cda:patientRole/cda:patient/cda:birthTime")


def _other_document_code(root: etree._Element) -> None:
    _one(root, "cda:code").set("code", "11490-0")  # a LOINC document type other than the DLU's 74207-2


def _no_treatments(root: etree._Element) -> None:
    _remove(root, TREATMENTS)


def _code_outside_value_set(root: etree._Element) -> None:
    _one(root, STATE_CODE).set("code", "999999999")


def _null_flavor(root: etree._Element) -> None:
    code = _one(root, STATE_CODE)
    for name in list(code.attrib):
        del code.attrib[name]
    code.set("nullFlavor", "UNK")


@material_test
@pytest.mark.parametrize(("edit", "pattern", "message"), [
    (_no_birth_time, ENTETE, "La date de naissance du patient est obligatoirement présente"),
    (_other_document_code, ENTETE, "L'élément code doit avoir @code =\"74207-2\""),
    (_no_treatments, "variables", 'La section "Traitements" doit être présente une fois'),
    (_code_outside_value_set, "JDV_ObservationEtatPatient",
     "doit faire partie du jeu de valeurs ../jeuxDeValeurs/JDV_ObservationEtatPatient_CISIS.xml"),
    (_null_flavor, "JDV_ObservationEtatPatient", "L'élément \"observation/code\" ne doit pas comporter d'attribut "
                                                 "nullFlavor"),
])
def test_broken_dlu_copies_are_caught_by_their_rule(material: Path, edit: Callable[[etree._Element], None],
                                                    pattern: str, message: str) -> None:
    report = check(_broken(material, "DLU-EHPAD-DLU_2022.01.xml", edit), material)
    assert not report.ok
    assert report.xsd_errors == ()
    assert any(p == pattern and message in m for p, m in _errors(report)), _errors(report)


@material_test
def test_the_value_set_finding_says_where_and_what(material: Path) -> None:
    report = check(_broken(material, "DLU-EHPAD-DLU_2022.01.xml", _code_outside_value_set), material)
    [finding] = report.errors
    assert finding.kind == "assert"
    assert finding.location.startswith("/cda:ClinicalDocument[1]/cda:component[1]/cda:structuredBody[1]/")
    assert finding.location.endswith("/cda:entry[1]/cda:observation[1]/cda:code[1]")
    assert "[999999999:" in finding.message


@material_test
def test_an_element_the_schema_refuses(material: Path) -> None:
    def extra_element(root: etree._Element) -> None:
        patient_role = _one(root, "cda:recordTarget/cda:patientRole")
        patient_role.insert(0, etree.Element(f"{CDA}favouriteColour"))

    report = check(_broken(material, "DLU-EHPAD-DLU_2022.01.xml", extra_element), material)
    assert not report.ok
    assert report.errors == ()  # the schematrons do not look at it
    assert len(report.xsd_errors) == 1
    assert "favouriteColour" in report.xsd_errors[0].message
    assert "This element is not expected" in report.xsd_errors[0].message
    assert report.xsd_errors[0].path == ("/cda:ClinicalDocument[1]/cda:recordTarget[1]/cda:patientRole[1]/"
                                         "cda:favouriteColour[1]")


@material_test
def test_the_structuration_minimale_runs_on_n1_documents(material: Path) -> None:
    report = check(_broken(material, "DOC_NON_STRUCTURE_CDA-R2-N1.xml", _no_birth_time), material)
    messages = [f.message for f in report.errors]
    assert "(CI-SISRecordTarget): element hl7:birthTime is required [min 1x]." in messages
    assert any("les traits de l'INS" in m for m in messages)
    extra = _broken(material, "DOC_NON_STRUCTURE_CDA-R2-N1.xml", lambda root: root.insert(
        4, etree.Element(f"{CDA}templateId", root="1.2.250.1.213.1.1.1.22")))
    # now declared a DLU: the DLU's schematron applies, and finds the DLU's sections missing
    as_dlu = check(extra, material)
    assert as_dlu.model == "DLU-EHPAD DLU"
    assert ("variables", '[CI-SIS_DLU-EHPAD-DLU_2022.01] La section "Traitements" doit être présente une fois. '
            "Cardinalité [1..1].") in _errors(as_dlu)


@material_test
def test_fludt_and_fludr_copies_are_caught(material: Path) -> None:
    for name, pattern in (("DLU-EHPAD-FLUDT_2022.01.xml", "Entete_DLU-FLUDT"),
                          ("DLU-EHPAD-FLUDR_2022.01.xml", "Entete_DLU-FLUDR")):
        report = check(_broken(material, name, _no_birth_time), material)
        assert [p for p, _ in _errors(report)] == [pattern], _errors(report)


@material_test
def test_unreadable_and_unknown_documents(material: Path) -> None:
    with pytest.raises(Invalid, match="DOCTYPE"):
        check(b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>', material)
    with pytest.raises(Invalid, match="not well-formed"):
        check(b"<ClinicalDocument", material)
    with pytest.raises(Unprocessable, match="Not a CDA document"):
        check(b"<x/>", material)
    with pytest.raises(Unprocessable, match="No known CDA model"):
        check(b'<ClinicalDocument xmlns="urn:hl7-org:v3"><templateId root="1.2.3"/></ClinicalDocument>', material)
    with pytest.raises(conformance.MaterialMissing, match="schematrons"):
        check(_example(material, "DLU-EHPAD-FLUDT_2022.01.xml"), material / "nowhere")


# --- the command ---------------------------------------------------------------------------------------------------

@material_test
def test_the_command_on_a_good_and_a_bad_file(material: Path, tmp_path: Path) -> None:
    good = material / "ExemplesCDA" / "DLU-EHPAD-FLUDT_2022.01.xml"
    bad = tmp_path / "fludt-without-birth-time.xml"
    bad.write_bytes(_broken(material, "DLU-EHPAD-FLUDT_2022.01.xml", _no_birth_time))
    runner = CliRunner()

    passed = runner.invoke(cli, ["documents", "check", str(good), "--material", str(material)])
    assert passed.exit_code == 0, passed.output
    assert passed.stdout == f"{good}: conforms to DLU-EHPAD FLUDT (schematrons/CI-SIS_DLU-EHPAD-FLUDT_2022.01.sch)\n"

    failed = runner.invoke(cli, ["documents", "check", str(good), str(bad)], env={"DUI_CDA_MATERIAL": str(material)})
    assert failed.exit_code == 1
    lines = failed.stdout.splitlines()
    assert lines[0].startswith(f"{good}: conforms")
    assert lines[1:] == [f"{bad}: error [Entete_DLU-FLUDT] assert at /cda:ClinicalDocument[1]: [Entete_DLU-FLUDT] "
                         "La date de naissance du patient est obligatoirement présente"]
    assert failed.stderr == "1 of 2 files do not conform\n"


def test_the_command_without_material(tmp_path: Path) -> None:
    document = tmp_path / "doc.xml"
    document.write_bytes(b"<x/>")
    runner = CliRunner()
    missing = runner.invoke(cli, ["documents", "check", str(document), "--material", str(tmp_path / "none")])
    assert missing.exit_code == 2
    assert missing.stdout == ""
    assert missing.stderr.count("\n") == 1 and "CDA conformance material not found" in missing.stderr
    unset = runner.invoke(cli, ["documents", "check", str(document)], env={"DUI_CDA_MATERIAL": ""})
    assert unset.exit_code == 2
    assert "give --material DIR or set DUI_CDA_MATERIAL" in unset.stderr
    helped = runner.invoke(cli, ["documents", "check", "--help"])
    assert helped.exit_code == 0
    for words in ("DUI_CDA_MATERIAL", "TestContenuCDA", "Exit 0", "1 otherwise", "2, in one line"):
        assert words in helped.output


def test_the_material_setting() -> None:
    assert Settings.from_env({}).cda_material is None
    assert Settings.from_env({"DUI_CDA_MATERIAL": ""}).cda_material is None
    assert Settings.from_env({"DUI_CDA_MATERIAL": "/opt/TestContenuCDA"}).cda_material == "/opt/TestContenuCDA"
