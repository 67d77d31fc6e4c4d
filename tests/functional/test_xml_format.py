"""FHIR XML on every interaction (http://hl7.org/fhir/R4/http.html#mime-type): answers in XML when ``_format`` or
``Accept`` asks for it, XML request bodies, XML Patch (RFC 5261) including the official fhir-test-cases, hostile
XML refused, and what is still refused (406, 415). Run on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from lxml import etree
from werkzeug.test import TestResponse

from dui.errors import Invalid, Unprocessable
from dui.fhir import jsontext
from dui.fhir.patch import xml_patch
from dui.fhir.xml import parse_xml
from dui.fhir.xmlwriter import resource_to_xml
from tests.conftest import conformance_dir
from tests.helpers import FhirClient, observation, outcome_codes, patient

FHIR_XML = "application/fhir+xml"
XML_PATCH = "application/xml-patch+xml"
AS_XML = {"Accept": FHIR_XML}
NS = "http://hl7.org/fhir"


def xml_of(resource: dict[str, Any]) -> str:
    return resource_to_xml(resource)


def read_xml(response: TestResponse, status: int = 200) -> dict[str, Any]:
    """The FHIR XML answer, read back; asserts its status and media type."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith(("application/fhir+xml", "application/xml", "text/xml"))
    assert response.data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    return parse_xml(response.data)


def xml_outcome_codes(response: TestResponse) -> list[str]:
    body = read_xml(response, response.status_code)
    assert body["resourceType"] == "OperationOutcome", body
    return [issue["code"] for issue in body["issue"]]


def create_xml(client: FhirClient, resource: dict[str, Any]) -> TestResponse:
    return client.post(resource["resourceType"], xml_of(resource), content_type=FHIR_XML, headers=AS_XML)


# -- answers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "accept", "answered"), [
    ("?_format=xml", None, "application/fhir+xml"),
    ("?_format=application/fhir%2Bxml", None, "application/fhir+xml"),
    ("?_format=application/xml", None, "application/xml"),
    ("?_format=text/xml", None, "text/xml"),
    ("", "application/fhir+xml", "application/fhir+xml"),
    ("", "application/xml", "application/xml"),
    ("", "text/xml", "text/xml"),
    ("", "application/fhir+json;q=0.5, application/fhir+xml", "application/fhir+xml"),
    ("", "application/fhir+xml; fhirVersion=4.0", "application/fhir+xml"),
    ("?_format=xml", "application/fhir+json", "application/fhir+xml"),  # _format wins over Accept
])
def test_read_search_and_capabilities_in_xml(client: FhirClient, query: str, accept: str | None,
                                             answered: str) -> None:
    created = client.create(observation("Patient/x", value=62.50))
    oid = created["id"]
    headers = {"Accept": accept} if accept else {"Accept": ""}
    for path, rtype in ((f"Observation/{oid}", "Observation"), (f"Observation/{oid}/_history/1", "Observation"),
                        ("Observation", "Bundle"), (f"Observation/{oid}/_history", "Bundle"),
                        ("_history", "Bundle"), ("metadata", "CapabilityStatement")):
        answer = client.get(path + query, headers=headers)
        assert answer.headers["Content-Type"] == f"{answered}; charset=utf-8", path
        body = read_xml(answer)
        assert body["resourceType"] == rtype
        as_json = client.get(path).get_json()
        if rtype == "Observation":
            assert body == jsontext.parse(json.dumps(as_json), stored=True)
    read = read_xml(client.get(f"Observation/{oid}{query}", headers=headers))
    assert read["valueQuantity"]["value"].text == "62.5"  # as stored (the helper's JSON wrote 62.5)
    bundle = read_xml(client.get(f"Observation{query}", headers=headers))
    assert bundle["type"] == "searchset" and bundle["entry"][0]["resource"]["id"] == oid


def test_json_stays_the_default(client: FhirClient) -> None:
    pid = client.create(patient())["id"]
    for headers in ({}, {"Accept": "*/*"}, {"Accept": "application/fhir+json"}):
        answer = client.http.get(f"/fhir/Patient/{pid}", headers=headers)
        assert answer.headers["Content-Type"] == "application/fhir+json; charset=utf-8"
        assert answer.get_json()["id"] == pid


def test_capability_statement_lists_xml(client: FhirClient) -> None:
    cs = read_xml(client.get("metadata?_format=xml"))
    assert "application/fhir+xml" in cs["format"] and "xml" in cs["format"]
    assert "application/fhir+json" in cs["format"]
    assert "application/xml-patch+xml" in cs["patchFormat"]


def test_pretty_xml(client: FhirClient) -> None:
    pid = client.create(patient())["id"]
    pretty = client.get(f"Patient/{pid}?_format=xml&_pretty=true")
    assert b"\n  <id value=" in pretty.data
    assert read_xml(pretty) == read_xml(client.get(f"Patient/{pid}?_format=xml"))


# -- writes ----------------------------------------------------------------------------------------------


def test_create_update_and_conditional_update_in_xml(client: FhirClient) -> None:
    xml = f"""<Observation xmlns="{NS}"><status value="final"/>
      <code><coding><system value="http://loinc.org"/><code value="29463-7"/></coding></code>
      <effectiveDateTime value="2026-11-02T09:00:00+01:00"/>
      <valueQuantity><value value="62.50"/><unit value="kg"/></valueQuantity></Observation>"""
    created = client.post("Observation", xml, content_type=FHIR_XML, headers=AS_XML)
    body = read_xml(created, 201)
    oid = body["id"]
    assert created.headers["Location"].endswith(f"Observation/{oid}/_history/1")
    assert body["valueQuantity"]["value"].text == "62.50"
    stored = client.get(f"Observation/{oid}")  # stored as JSON text, read as JSON: the decimal kept its text
    assert b'"value":62.50' in stored.data and stored.get_json()["status"] == "final"

    changed = xml.replace('"final"', '"amended"').replace(f'<Observation xmlns="{NS}">',
                                                          f'<Observation xmlns="{NS}"><id value="{oid}"/>')
    updated = client.put(f"Observation/{oid}", changed, content_type="application/xml")  # JSON answer (Accept)
    assert updated.status_code == 200, updated.get_data(as_text=True)
    assert updated.get_json()["status"] == "amended" and updated.headers["ETag"] == 'W/"2"'

    identified = patient(identifier=[{"system": "urn:ipp", "value": "42"}])
    first = client.put("Patient?identifier=urn:ipp|42", xml_of(identified), content_type=FHIR_XML, headers=AS_XML)
    pid = read_xml(first, 201)["id"]
    identified["gender"] = "male"
    again = client.put("Patient?identifier=urn:ipp|42", xml_of(identified), content_type=FHIR_XML, headers=AS_XML)
    assert read_xml(again)["gender"] == "male" and again.headers["ETag"] == 'W/"2"'
    assert client.get(f"Patient/{pid}").get_json()["gender"] == "male"


def test_conditional_create_search_form_type_history_and_delete_in_xml(client: FhirClient) -> None:
    identified = patient(identifier=[{"system": "urn:ipp", "value": "9"}])
    headers = {**AS_XML, "If-None-Exist": "identifier=urn:ipp|9"}
    first = client.post("Patient", xml_of(identified), content_type=FHIR_XML, headers=headers)
    pid = read_xml(first, 201)["id"]
    again = client.post("Patient", xml_of(identified), content_type=FHIR_XML, headers=headers)
    assert read_xml(again, 200)["id"] == pid
    form = client.http.post("/fhir/Patient/_search", data="identifier=urn:ipp|9",
                            headers={**AS_XML, "Content-Type": "application/x-www-form-urlencoded"})
    found = read_xml(form)
    assert found["type"] == "searchset" and [e["resource"]["id"] for e in found["entry"]] == [pid]
    assert read_xml(client.get("Patient/_history", headers=AS_XML))["type"] == "history"
    deleted = client.delete(f"Patient/{pid}", headers=AS_XML)
    assert deleted.status_code == 204 and deleted.data == b""
    gone = client.get(f"Patient/{pid}", headers=AS_XML)
    assert gone.status_code == 410 and xml_outcome_codes(gone) == ["deleted"]


def test_transaction_in_xml(client: FhirClient) -> None:
    pid = "urn:uuid:7d7b3d5e-1b9b-4f9e-9d1a-0d3b3c2f0a11"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": pid, "resource": patient(), "request": {"method": "POST", "url": "Patient"}},
        {"resource": observation(pid), "request": {"method": "POST", "url": "Observation"}}]}
    answer = client.post("", xml_of(bundle), content_type=FHIR_XML, headers=AS_XML)
    result = read_xml(answer)
    assert result["type"] == "transaction-response"
    patient_entry, obs_entry = result["entry"]
    assert patient_entry["response"]["status"] == "201 Created"
    assert obs_entry["resource"]["subject"]["reference"] == f"Patient/{patient_entry['resource']['id']}"
    batch = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Patient/{patient_entry['resource']['id']}"}},
        {"request": {"method": "GET", "url": "Patient/nope"}}]}
    answered = read_xml(client.post("", xml_of(batch), content_type=FHIR_XML, headers=AS_XML))
    assert [e["response"]["status"][:3] for e in answered["entry"]] == ["200", "404"]
    assert answered["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"


def test_operations_in_xml(client: FhirClient) -> None:
    pid = client.create(patient())["id"]
    client.create(observation(f"Patient/{pid}"))
    everything = read_xml(client.get(f"Patient/{pid}/$everything", headers=AS_XML))
    assert {e["resource"]["resourceType"] for e in everything["entry"]} == {"Patient", "Observation"}
    parameters = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": patient()}]}
    valid = client.post("$validate", xml_of(parameters), content_type=FHIR_XML, headers=AS_XML)
    assert read_xml(valid)["resourceType"] == "OperationOutcome"
    broken = patient(gender="femme")
    refused = client.post("Patient/$validate", xml_of(broken), content_type=FHIR_XML, headers=AS_XML)
    outcome = read_xml(refused, refused.status_code)
    assert any(i["severity"] == "error" and "Patient.gender" in i.get("expression", []) for i in outcome["issue"])


def test_binary_keeps_its_own_type_unless_fhir_xml_is_asked(client: FhirClient) -> None:
    data = b"<cda>x</cda>"
    binary = client.create({"resourceType": "Binary", "contentType": "text/xml",
                            "data": base64.b64encode(data).decode()})
    native = client.get(f"Binary/{binary['id']}", headers={"Accept": "application/xml"})
    assert native.data == data and native.headers["Content-Type"].startswith("text/xml")
    as_fhir = read_xml(client.get(f"Binary/{binary['id']}", headers=AS_XML))
    assert as_fhir["resourceType"] == "Binary" and base64.b64decode(as_fhir["data"]) == data
    assert read_xml(client.get(f"Binary/{binary['id']}?_format=xml"))["contentType"] == "text/xml"


# -- errors ----------------------------------------------------------------------------------------------


def test_errors_are_operation_outcomes_in_xml(client: FhirClient) -> None:
    missing = client.get("Patient/nope", headers=AS_XML)
    assert missing.status_code == 404
    assert xml_outcome_codes(missing) == ["not-found"]
    wrong_type = client.post("Observation", xml_of(patient()), content_type=FHIR_XML, headers=AS_XML)
    assert wrong_type.status_code == 400 and xml_outcome_codes(wrong_type) == ["invalid"]
    unknown = client.post("Patient", f'<Patient xmlns="{NS}"><colour value="blue"/></Patient>',
                          content_type=FHIR_XML, headers=AS_XML)
    assert unknown.status_code == 400
    assert "colour" in read_xml(unknown, 400)["issue"][0]["diagnostics"]
    not_fhir = client.post("Patient", "<Patient><id value='1'/></Patient>", content_type=FHIR_XML)
    assert not_fhir.status_code == 400 and outcome_codes(not_fhir) == ["invalid"]  # JSON: Accept asks for it
    empty = client.post("Patient", "", content_type=FHIR_XML)
    assert empty.status_code == 400
    bad_value = client.post("Patient", f'<Patient xmlns="{NS}"><active value="yes"/></Patient>',
                            content_type=FHIR_XML)
    assert bad_value.status_code == 400 and "boolean" in bad_value.get_json()["issue"][0]["diagnostics"]


LOL = ('<!DOCTYPE lolz [<!ENTITY lol "lol">'
       + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10))
       + "]>")


@pytest.mark.parametrize(("body", "status"), [
    (LOL + f'<Patient xmlns="{NS}"><id value="&lol9;"/></Patient>', 400),
    (f'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><Patient xmlns="{NS}"><id value="&e;"/></Patient>',
     400),
    (f'<!DOCTYPE Patient SYSTEM "http://127.0.0.1:9/x.dtd"><Patient xmlns="{NS}"/>', 400),
    (f'<Patient xmlns="{NS}"><id value="&undeclared;"/></Patient>', 400),
    (f'<?xml version="1.0" encoding="ISO-8859-1"?><Patient xmlns="{NS}"/>', 400),
    (f'<Patient xmlns="{NS}">' + '<extension url="u">' * 150 + "</extension>" * 150 + "</Patient>", 413),
    (f'<Patient xmlns="{NS}">' + '<extension url="u">' * 60 + "</extension>" * 60 + "</Patient>", 413),
    (f'<Patient xmlns="{NS}"><name><family value="' + "x" * (21 * 1024 * 1024) + '"/></name></Patient>', 413),
], ids=["billion laughs", "external entity", "external DTD", "undeclared entity", "not UTF-8", "deep", "deep as JSON",
     "huge"])
def test_hostile_xml_is_refused(client: FhirClient, body: str, status: int) -> None:
    answer = client.post("Patient", body, content_type=FHIR_XML, headers=AS_XML)
    assert answer.status_code == status, answer.get_data(as_text=True)[:500]
    assert xml_outcome_codes(answer)
    assert b"root:" not in answer.data and b"lollol" not in answer.data
    assert client.get("Patient").get_json()["total"] == 0


def test_what_is_still_refused(client: FhirClient) -> None:
    turtle = client.post("Patient", "@prefix fhir: <http://hl7.org/fhir/> .", content_type="text/turtle")
    assert turtle.status_code == 415 and outcome_codes(turtle) == ["not-supported"]
    old = client.post("Patient", xml_of(patient()), content_type="application/fhir+xml; fhirVersion=3.0")
    assert old.status_code == 415
    for refused in (client.get("metadata", headers={"Accept": "text/turtle"}),
                    client.get("metadata?_format=ttl"),
                    client.get("metadata", headers={"Accept": "application/fhir+xml; fhirVersion=5.0"})):
        assert refused.status_code == 406
        assert refused.headers["Content-Type"].startswith("application/fhir+json")
        assert outcome_codes(refused) == ["not-supported"]


# -- XML Patch ---------------------------------------------------------------------------------------------


def _patch(*operations: str) -> str:
    return f'<diff xmlns="{NS}">{"".join(operations)}</diff>'


def test_xml_patch_through_the_api(client: FhirClient) -> None:
    created = client.create(patient())
    path = f"Patient/{created['id']}"
    document = _patch('<replace sel="/f:Patient/f:gender/@value">male</replace>',
                      '<add sel="/f:Patient/f:name[1]"><given value="Marie"/></add>',
                      '<remove sel="/f:Patient/f:birthDate"/>')
    answer = client.patch(path, document, content_type=XML_PATCH, headers={"If-Match": 'W/"1"'})
    assert answer.status_code == 200, answer.get_data(as_text=True)
    body = answer.get_json()
    assert body["gender"] == "male" and body["name"][0]["given"] == ["Hélène", "Marie"] and "birthDate" not in body
    assert answer.headers["ETag"] == 'W/"2"'
    history = client.search(f"{path}/_history")
    assert history["entry"][0]["request"]["method"] == "PATCH"
    as_xml = client.patch(path, _patch('<add sel="/f:Patient"><active value="true"/></add>'),
                          content_type=XML_PATCH, headers=AS_XML)
    assert read_xml(as_xml)["active"] is True


def test_xml_patch_keeps_the_patch_rules(client: FhirClient) -> None:
    created = client.create(patient(identifier=[{"system": "urn:ipp", "value": "7"}]))
    path = f"Patient/{created['id']}"
    stale = client.patch(path, _patch('<remove sel="/f:Patient/f:gender"/>'), content_type=XML_PATCH,
                         headers={"If-Match": 'W/"9"'})
    assert stale.status_code == 412
    nothing = client.patch(path, _patch('<remove sel="/f:Patient/f:deceasedBoolean"/>'), content_type=XML_PATCH)
    assert nothing.status_code == 422
    invalid_code = client.patch(path, _patch('<replace sel="/f:Patient/f:gender/@value">F</replace>'),
                                content_type=XML_PATCH)
    assert invalid_code.status_code == 422 and "code-invalid" in outcome_codes(invalid_code)
    unknown = client.patch(path, _patch('<add sel="/f:Patient"><colour value="blue"/></add>'),
                           content_type=XML_PATCH)
    assert unknown.status_code == 422
    change_id = client.patch(path, _patch('<replace sel="/f:Patient/f:id/@value">other</replace>'),
                             content_type=XML_PATCH)
    assert change_id.status_code == 422
    malformed = client.patch(path, "<diff", content_type=XML_PATCH)
    assert malformed.status_code == 400
    bad_xpath = client.patch(path, _patch('<remove sel="/f:Patient/f:[["/>'), content_type=XML_PATCH)
    assert bad_xpath.status_code == 400
    hostile = client.patch(path, LOL + _patch('<remove sel="&lol9;"/>'), content_type=XML_PATCH)
    assert hostile.status_code == 400
    no_regexp = client.patch(path, f'<diff xmlns="{NS}" xmlns:re="http://exslt.org/regular-expressions">'
                                   '<remove sel="/f:Patient/f:gender[re:test(@value, \'.*\')]"/></diff>',
                             content_type=XML_PATCH)
    assert no_regexp.status_code == 400
    namespace = client.patch(path, _patch('<remove sel="/f:Patient/namespace::xml"/>'), content_type=XML_PATCH)
    assert namespace.status_code == 400 and "namespace" in namespace.get_json()["issue"][0]["diagnostics"]
    no_operation = client.patch(path, _patch(), content_type=XML_PATCH)
    assert no_operation.status_code == 400
    assert client.patch("Patient/unknown", _patch('<remove sel="/f:Patient/f:gender"/>'),
                        content_type=XML_PATCH).status_code == 404
    assert client.get(path).headers["ETag"] == 'W/"1"'
    conditional = client.patch("Patient?identifier=urn:ipp|7", _patch('<add sel="/f:Patient"><active value="true"/>'
                                                                       "</add>"), content_type=XML_PATCH)
    assert conditional.status_code == 200 and conditional.get_json()["active"] is True


def test_fhirpath_patch_as_xml_parameters(client: FhirClient) -> None:
    created = client.create(patient())
    parameters = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": "Patient.gender"},
        {"name": "value", "valueCode": "male"}]}]}
    answer = client.patch(f"Patient/{created['id']}", xml_of(parameters), content_type=FHIR_XML, headers=AS_XML)
    assert read_xml(answer)["gender"] == "male"


def _xml_patch_cases() -> list[Any]:
    try:
        folder = conformance_dir("fhir-test-cases", "r4", "patch")
    except pytest.skip.Exception as absent:
        return [pytest.param(None, marks=pytest.mark.skip(reason=absent.msg))]
    root = etree.parse(str(folder / "xml-patch-tests.xml")).getroot()  # comments kept: some cases patch them
    return [pytest.param(case, id=case.get("name")) for case in root if isinstance(case.tag, str)]


def _shape(node: Any) -> Any:
    """An element as (tag, attributes, namespaces, text, tail, children), blank text ignored; comments too."""
    if isinstance(node, etree._Comment):
        return ("comment", (node.text or "").strip(), (node.tail or "").strip())
    tail = (node.tail or "").strip() if node.getparent() is not None else ""
    return (node.tag, sorted(node.attrib.items()), sorted((k or "", v) for k, v in node.nsmap.items()),
            (node.text or "").strip(), tail, [_shape(child) for child in node])


@pytest.mark.conformance
@pytest.mark.parametrize("case", _xml_patch_cases())
def test_xml_patch_conformance_case(case: Any) -> None:
    """The official XML Patch cases are generic XML documents: they test the patch engine itself."""
    target = next((c for c in case.find("target") if isinstance(c.tag, str)), None)
    patch = case.find(f"{{{NS}}}patch")
    if case.find("error") is not None:
        with pytest.raises((Invalid, Unprocessable)):
            xml_patch.apply(target, patch)
        return
    before = etree.tostring(target)
    patched = xml_patch.apply(target, patch)
    expected = next(c for c in case.find("patched") if isinstance(c.tag, str))
    assert _shape(patched) == _shape(expected)
    assert etree.tostring(target) == before  # the target itself is left as it was
