"""FHIR JSON -> XML -> JSON gives back the same resource (dui.fhir.xmlwriter, dui.fhir.xml), on every resource of the
R4 core definition bundles and every ANS example; XML -> JSON -> XML on hand-written samples.

Values are compared exactly, decimals by their text (``37.50`` is not ``37.5``). The narrative ``div`` is compared
as XHTML, the way any XML parser reads it: the writer writes it as the JSON holds it, but XML itself does not keep
``\\r\\n`` (read as ``\\n``), a newline inside an attribute (read as a space), or the choice between ``<td/>`` and
``<td></td>``; the div of the JSON is read through the same parser before the comparison.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from lxml import etree

from dui.errors import Invalid
from dui.fhir import jsontext
from dui.fhir.xml import XHTML_NS, _xhtml, parse_xml
from dui.fhir.xmlwriter import resource_to_bytes, resource_to_xml
from tests.conftest import conformance_dir

CORE_BUNDLES = ["profiles-resources.json", "profiles-types.json", "valuesets.json", "search-parameters.json",
                "v3-codesystems.json", "v2-tables.json", "conceptmaps.json", "extension-definitions.json",
                "compartmentdefinition-patient.json"]
_DIV_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)


def _canonical(value: Any, divs: bool = True) -> bytes:
    """Sorted keys (XML has the definition order, JSON the client's), decimals as their text, divs as XHTML."""
    return orjson.dumps(_divs(value) if divs else value, default=jsontext.fragment_default,
                        option=orjson.OPT_SORT_KEYS)


def _same(back: dict[str, Any], before: dict[str, Any]) -> bool:
    return _canonical(back, divs=False) == _canonical(before, divs=False) or _canonical(back) == _canonical(before)


def _divs(value: Any) -> Any:
    if isinstance(value, dict):
        out = {k: _divs(v) for k, v in value.items()}
        div = out.get("div")
        if isinstance(div, str) and div.startswith("<div"):
            out["div"] = _xhtml(etree.fromstring(div.encode("utf-8"), _DIV_PARSER))
        return out
    if isinstance(value, list):
        return [_divs(v) for v in value]
    return value


def _load(path: Path) -> Any:
    data = path.read_bytes()
    return jsontext.parse(data.removeprefix(b"\xef\xbb\xbf"), max_depth=10_000, stored=True)


def _round_trip(resources: list[dict[str, Any]]) -> list[str]:
    """The ``Type/id`` of every resource that does not come back the same; raises on the first that cannot be
    written or read."""
    different = []
    for resource in resources:
        xml = resource_to_bytes(resource)
        back = parse_xml(xml, max_bytes=len(xml) + 1, max_depth=200)
        if not _same(back, resource):
            different.append(f"{resource['resourceType']}/{resource.get('id')}")
    return different


def _resources(document: Any) -> list[dict[str, Any]]:
    if not isinstance(document, dict) or not isinstance(document.get("resourceType"), str):
        return []  # a package index, an OpenAPI description
    return [document]


@pytest.mark.conformance
def test_every_resource_of_the_r4_core_definitions_round_trips() -> None:
    folder = conformance_dir("fhir-r4-core")
    resources: list[dict[str, Any]] = []
    for name in CORE_BUNDLES:
        bundle = _load(folder / name)
        if bundle["resourceType"] == "Bundle":
            resources.extend(entry["resource"] for entry in bundle["entry"])
            if name == "conceptmaps.json":
                resources.append(bundle)  # one whole Bundle too: entry.resource as nested resources
        else:
            resources.append(bundle)
    assert len(resources) > 4000
    assert _round_trip(resources) == []


@pytest.mark.conformance
def test_every_ans_example_round_trips() -> None:
    ans = conformance_dir("ans")
    folders = [ans / "tddui-2.2.0" / "examples", *sorted(ans.glob("fr-core/*/extracted")), ans / "pdsm-3.1.1" / "json"]
    resources = [r for folder in folders for path in sorted(folder.rglob("*.json")) for r in _resources(_load(path))]
    assert len(resources) > 200
    assert {r["resourceType"] for r in resources} >= {"Bundle", "StructureDefinition", "Patient", "Encounter"}
    assert _round_trip(resources) == []


def test_the_xml_form_follows_the_r4_rules() -> None:
    resource = jsontext.parse(b"""{"resourceType": "Observation", "status": "final", "id": "o1",
      "valueQuantity": {"unit": "kg", "value": 62.50},
      "code": {"text": "Poids", "extension": [{"url": "http://e/x", "valueDecimal": 1e3}], "id": "c"},
      "extension": [{"valueBoolean": false, "url": "http://e/b"}],
      "text": {"div": "<div xmlns=\\"http://www.w3.org/1999/xhtml\\"><p>62,5 &amp; <b>kg</b></p></div>",
               "status": "generated"},
      "contained": [{"resourceType": "Patient", "id": "p", "_gender": {"extension": [{"url": "u",
                     "valueCode": "x"}]}, "name": [{"given": ["A", null, "C"], "_given": [null, {"id": "g2",
                     "extension": [{"url": "u", "valueString": "B"}]}, {"id": "g3"}]}]}],
      "note": [{"text": "ligne 1\\nligne 2\\t\\"<&>\\""}]}""")
    xml = resource_to_xml(resource)
    assert xml == (
        '<Observation xmlns="http://hl7.org/fhir"><id value="o1"/>'
        '<text><status value="generated"/>'
        '<div xmlns="http://www.w3.org/1999/xhtml"><p>62,5 &amp; <b>kg</b></p></div></text>'
        '<contained><Patient><id value="p"/><name><given value="A"/>'
        '<given id="g2"><extension url="u"><valueString value="B"/></extension></given>'
        '<given id="g3" value="C"/></name>'
        '<gender><extension url="u"><valueCode value="x"/></extension></gender></Patient></contained>'
        '<extension url="http://e/b"><valueBoolean value="false"/></extension>'
        '<status value="final"/>'
        '<code id="c"><extension url="http://e/x"><valueDecimal value="1e3"/></extension><text value="Poids"/></code>'
        '<valueQuantity><value value="62.50"/><unit value="kg"/></valueQuantity>'
        '<note><text value="ligne 1&#10;ligne 2&#9;&quot;&lt;&amp;&gt;&quot;"/></note>'
        '</Observation>')
    back = parse_xml(xml)
    assert _canonical(back) == _canonical(resource)
    assert back["valueQuantity"]["value"].text == "62.50"
    assert back["note"][0]["text"] == 'ligne 1\nligne 2\t"<&>"'


def test_bundle_and_parameters_hold_resources() -> None:
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient", "active": True}}]}
    xml = resource_to_xml(bundle)
    assert '<entry><fullUrl value="urn:uuid:1"/><resource><Patient><active value="true"/></Patient></resource>' in xml
    assert parse_xml(xml) == bundle
    parameters = {"resourceType": "Parameters", "parameter": [
        {"name": "a", "valueInteger": 3}, {"name": "b", "resource": {"resourceType": "Basic", "id": "x"}},
        {"name": "c", "part": [{"name": "d", "valueCode": "e"}]}]}
    xml = resource_to_xml(parameters)
    assert '<parameter><name value="b"/><resource><Basic><id value="x"/></Basic></resource></parameter>' in xml
    assert '<parameter><name value="c"/><part><name value="d"/><valueCode value="e"/></part></parameter>' in xml
    assert parse_xml(xml) == parameters


def test_the_writer_refuses_what_r4_does_not_define() -> None:
    with pytest.raises(Invalid, match="no such element"):
        resource_to_xml({"resourceType": "Patient", "colour": "blue"})
    with pytest.raises(Invalid, match="resource type"):
        resource_to_xml({"resourceType": "Nope"})
    with pytest.raises(Invalid, match=r"XML 1\.0"):
        resource_to_xml({"resourceType": "Patient", "id": "a\x01"})
    for div in ("plain text", '<div xmlns="http://www.w3.org/1999/xhtml">x</div></text><active value="true"/>',
                '<div xmlns="http://www.w3.org/1999/xhtml"><!DOCTYPE x>x</div>', "<div>&nbsp;</div>",
                '<div xmlns="urn:other">x</div>'):
        with pytest.raises(Invalid, match="narrative"):  # nothing breaks out of the div into the document
            resource_to_xml({"resourceType": "Basic", "text": {"status": "generated", "div": div}})


XML_SAMPLES = [
    """<Patient xmlns="http://hl7.org/fhir"><id value="p1"/><meta><versionId value="2"/></meta>
      <text><status value="generated"/><div xmlns="http://www.w3.org/1999/xhtml"><p>Hélène <br/>D.</p>
        <table><tr><td></td></tr></table></div></text>
      <extension url="https://hl7.fr/ig/fhir/core/StructureDefinition/fr-core-patient-birth-list-given-name">
        <valueString value="Hélène Marie"/></extension>
      <identifier><system value="urn:oid:1.2.250.1.213.1.4.8"/><value value="248092A123456"/></identifier>
      <name id="n1"><family value="Dupont"/><given value="Hélène"/>
        <given><extension url="http://hl7.org/fhir/StructureDefinition/data-absent-reason">
          <valueCode value="unknown"/></extension></given></name>
      <gender value="female"/><birthDate value="1931-04-02"/><deceasedBoolean value="false"/>
      <multipleBirthInteger value="2"/>
    </Patient>""",
    """<Observation xmlns="http://hl7.org/fhir"><status value="final"/>
      <code><coding><system value="http://loinc.org"/><code value="29463-7"/></coding></code>
      <subject><reference value="Patient/p1"/></subject><effectiveDateTime value="2026-12-06T10:00:00+01:00"/>
      <valueQuantity><value value="62.50"/><unit value="kg"/>
        <system value="http://unitsofmeasure.org"/><code value="kg"/></valueQuantity>
      <component><code><text value="x"/></code><valueRange><low><value value="1.0e2"/></low></valueRange></component>
    </Observation>""",
    """<Bundle xmlns="http://hl7.org/fhir"><type value="transaction"/>
      <entry><fullUrl value="urn:uuid:a"/><resource><Patient><contained>
        <Organization><id value="o"/><name value="EHPAD"/></Organization></contained>
        <managingOrganization><reference value="#o"/></managingOrganization></Patient></resource>
        <request><method value="POST"/><url value="Patient"/></request></entry>
    </Bundle>""",
    """<Questionnaire xmlns="http://hl7.org/fhir"><status value="active"/>
      <item><linkId value="1"/><type value="group"/><item><linkId value="1.1"/><type value="decimal"/>
        <initial><valueDecimal value="0.10"/></initial>
        <item><linkId value="1.1.1"/><type value="string"/></item></item></item>
    </Questionnaire>""",
]


def _normalized(xml: bytes | str) -> bytes:
    parser = etree.XMLParser(remove_blank_text=True, resolve_entities=False, no_network=True)
    root = etree.fromstring(xml.encode("utf-8") if isinstance(xml, str) else xml, parser)
    return etree.tostring(root, method="c14n")


@pytest.mark.parametrize("xml", XML_SAMPLES)
def test_xml_to_json_to_xml_gives_the_same_xml(xml: str) -> None:
    resource = parse_xml(xml)
    again = resource_to_bytes(jsontext.parse(jsontext.dump(resource), stored=True))
    assert _normalized(again) == _normalized(xml)


def test_pretty_xml_reads_the_same() -> None:
    resource = parse_xml(XML_SAMPLES[0])
    pretty = resource_to_bytes(resource, pretty=True)
    assert pretty.startswith(b"<?xml") and b"\n  <id" in pretty
    assert parse_xml(pretty) == resource


def test_a_narrative_div_without_its_namespace_is_written_in_it() -> None:
    xml = resource_to_xml({"resourceType": "Basic", "text": {"status": "generated", "div": "<div><p>x</p></div>"},
                           "code": {"text": "c"}})
    assert f'<div xmlns="{XHTML_NS}"><p>x</p></div>' in xml
    assert parse_xml(xml)["text"]["div"] == f'<div xmlns="{XHTML_NS}"><p>x</p></div>'
