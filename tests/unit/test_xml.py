"""FHIR XML reading (http://hl7.org/fhir/R4/xml.html) with a hardened parser."""

from __future__ import annotations

from decimal import Decimal

import pytest

from dui.errors import Invalid
from dui.fhir.xml import parse_xml


def test_types_and_arrays_come_from_the_definitions() -> None:
    resource = parse_xml("""<Observation xmlns="http://hl7.org/fhir">
      <status value="final"/><code><text value="Poids"/></code>
      <valueQuantity><value value="62.50"/><unit value="kg"/></valueQuantity>
      <component><code><text value="a"/></code><valueBoolean value="true"/></component>
    </Observation>""")
    assert resource["valueQuantity"]["value"] == Decimal("62.50")
    assert str(resource["valueQuantity"]["value"].text) == "62.50"
    assert resource["component"][0]["valueBoolean"] is True
    assert isinstance(resource["component"], list)


def test_primitive_extensions_and_narrative() -> None:
    resource = parse_xml("""<Patient xmlns="http://hl7.org/fhir">
      <text><status value="generated"/><div xmlns="http://www.w3.org/1999/xhtml"><p>Hélène</p></div></text>
      <name><given value="A"/><given><extension url="u"><valueString value="x"/></extension></given></name>
    </Patient>""")
    assert resource["text"]["div"].startswith("<div")
    assert resource["name"][0]["given"] == ["A", None]
    assert resource["name"][0]["_given"] == [None, {"extension": [{"url": "u", "valueString": "x"}]}]


@pytest.mark.parametrize("xml", [
    '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
    '<Patient xmlns="http://hl7.org/fhir"><id value="&e;"/></Patient>',
    '<Patient xmlns="http://hl7.org/fhir"><nope value="1"/></Patient>',
    '<Patient><id value="1"/></Patient>',
    "<Patient",
    '<Patient xmlns="http://hl7.org/fhir"><gender>female</gender></Patient>',  # text instead of value
    '<Patient xmlns="http://hl7.org/fhir"><gender valu="female"/></Patient>',  # an attribute FHIR does not have
    '<Patient xmlns="http://hl7.org/fhir"><name use="official"/></Patient>',
    '<Patient xmlns="http://hl7.org/fhir"><active value="true"/>stray text</Patient>',
    '<Patient xmlns="http://hl7.org/fhir"><gender value="male"/><gender value="female"/></Patient>',  # not repeating
    '<Patient xmlns="http://hl7.org/fhir"><active value="TRUE"/></Patient>',
    '<Observation xmlns="http://hl7.org/fhir"><valueInteger value="1_000"/></Observation>',
    '<Observation xmlns="http://hl7.org/fhir"><valueInteger value="+1"/></Observation>',
    '<Observation xmlns="http://hl7.org/fhir"><valueQuantity><value value="NaN"/></valueQuantity></Observation>',
    '<Observation xmlns="http://hl7.org/fhir"><valueQuantity><value value=" 1.5"/></valueQuantity></Observation>',
    '<Observation xmlns="http://hl7.org/fhir"><valueString value="x"/><valueBoolean value="true"/>'
    '<status value="final"/><valueQuantity><valu/></valueQuantity></Observation>',
    '<Patient xmlns="http://hl7.org/fhir"><contained/></Patient>',
    '<Patient xmlns="http://hl7.org/fhir"><text><div><p>not XHTML</p></div></text></Patient>',
])
def test_refusals(xml: str) -> None:
    with pytest.raises(Invalid):
        parse_xml(xml)
