"""Every parser of untrusted XML refuses entities, DTDs, non-UTF-8, oversize and deep nesting, before expanding or
fetching anything: FHIR XML (dui.fhir.xml), narratives (dui.fhir.structure), INSi messages (ins.insi.wire)."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dui.errors import Invalid, TooLarge
from dui.fhir import xmlsafe
from dui.fhir.structure import StructureChecker
from dui.fhir.xml import parse_xml
from ins.insi import wire

LOL = ('<!DOCTYPE lolz [<!ENTITY lol "lol">'
       + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">' for i in range(1, 10))
       + "]>")
PATIENT = '<Patient xmlns="http://hl7.org/fhir"><id value="{}"/></Patient>'


def billion_laughs() -> str:
    return LOL + PATIENT.format("&lol9;")


def quadratic() -> str:
    return f'<!DOCTYPE x [<!ENTITY a "{"a" * 50_000}">]>' + PATIENT.format("&a;" * 50_000)


def external(target: str) -> str:
    return f'<!DOCTYPE x [<!ENTITY e SYSTEM "{target}">]>' + PATIENT.format("&e;")


def deep(levels: int, leaf: str = "") -> str:
    return "<a>" * levels + leaf + "</a>" * levels


@pytest.fixture
def secret(tmp_path: Path) -> str:
    path = tmp_path / "secret.txt"
    path.write_text("TOP-SECRET-CONTENT")
    return path.as_uri()


@pytest.fixture
def listener() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server that records every path asked of it: no parser may call it."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'<!ENTITY e "FETCHED">')

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


def attacks(secret: str, url: str) -> dict[str, str]:
    return {
        "billion laughs": billion_laughs(),
        "quadratic blowup": quadratic(),
        "external entity (file)": external(secret),
        "external entity (http)": external(url + "/entity"),
        "external DTD": f'<!DOCTYPE Patient SYSTEM "{url}/dtd">' + PATIENT.format("1"),
        "parameter entity": f'<!DOCTYPE x [<!ENTITY % p SYSTEM "{url}/param"> %p;]>' + PATIENT.format("&e;"),
        "doctype, spaced and lower case": "<! doctype Patient>" + PATIENT.format("1"),
        "UTF-16 declared": '<?xml version="1.0" encoding="UTF-16"?>' + PATIENT.format("1"),
        "Latin-1 declared": '<?xml version="1.0" encoding="ISO-8859-1"?>' + PATIENT.format("1"),
    }


ATTACKS = list(attacks("file:///x", "http://x"))


@pytest.mark.parametrize("name", ATTACKS)
def test_fhir_xml_refuses(name: str, secret: str, listener: tuple[str, list[str]]) -> None:
    url, hits = listener
    started = time.perf_counter()
    with pytest.raises(Invalid) as refused:
        parse_xml(attacks(secret, url)[name])
    assert time.perf_counter() - started < 0.5  # refused, not expanded
    assert "TOP-SECRET" not in str(refused.value) and "FETCHED" not in str(refused.value)
    assert hits == []


@pytest.mark.parametrize("name", ATTACKS)
def test_insi_messages_refuse(name: str, secret: str, listener: tuple[str, list[str]]) -> None:
    url, hits = listener
    with pytest.raises(wire.XmlRefused):
        wire.parse_xml(attacks(secret, url)[name].encode())
    assert hits == []


@pytest.mark.parametrize("name", ATTACKS)
def test_narratives_refuse(name: str, secret: str, listener: tuple[str, list[str]]) -> None:
    url, hits = listener
    document = attacks(secret, url)[name].replace(PATIENT.split("{}")[0], "").split("<id")[0]
    div = document + '<div xmlns="http://www.w3.org/1999/xhtml">&e;&lol9;</div>'
    issues = StructureChecker().check({"resourceType": "Patient", "text": {"status": "generated", "div": div}})
    assert [i.expression for i in issues] == [("Patient.text.div",)], issues
    assert "TOP-SECRET" not in issues[0].diagnostics
    assert hits == []


def test_nesting_limits() -> None:
    assert xmlsafe.depth(xmlsafe.parse_untrusted(deep(100).encode()), 100) == 100
    for levels in (101, 300, 50_000):
        with pytest.raises(xmlsafe.UnsafeXml, match=r"nested deeper than 100|not well-formed"):
            xmlsafe.parse_untrusted(deep(levels).encode())
    with pytest.raises(wire.XmlRefused, match="nested deeper than 64"):
        wire.parse_xml(deep(65).encode())
    wire.parse_xml(deep(64).encode())
    fhir = '<Patient xmlns="http://hl7.org/fhir">' + "<extension url='u'>" * 120 + "</extension>" * 120 + "</Patient>"
    with pytest.raises(TooLarge):
        parse_xml(fhir)
    narrative = '<div xmlns="http://www.w3.org/1999/xhtml">' + deep(64) + "</div>"
    issues = StructureChecker().check({"resourceType": "Patient", "text": {"status": "generated", "div": narrative}})
    assert "nested deeper than 64" in issues[0].diagnostics


@pytest.mark.parametrize(("parse", "refusal"), [
    (lambda data: parse_xml(data, max_bytes=4096), TooLarge),
    (lambda data: wire.parse_xml(data, max_bytes=4096), wire.XmlRefused),
    (lambda data: xmlsafe.parse_untrusted(data, max_bytes=4096), xmlsafe.UnsafeXml),
])
def test_oversize_is_refused_before_parsing(parse: Callable[[bytes], object], refusal: type[Exception]) -> None:
    parse(PATIENT.format("x" * 3000).encode())
    with pytest.raises(refusal, match="larger than 4096 bytes"):
        parse(PATIENT.format("x" * 5000).encode())


def test_default_size_limits() -> None:
    huge = PATIENT.format("x" * (xmlsafe.MAX_BYTES + 1)).encode()
    with pytest.raises(TooLarge):
        parse_xml(huge)
    with pytest.raises(wire.XmlRefused, match="larger than"):
        wire.parse_xml(b"<x>" + b"y" * wire.MAX_XML_BYTES + b"</x>")


def test_utf8_documents_still_parse() -> None:
    assert parse_xml('<?xml version="1.0" encoding="UTF-8"?>' + PATIENT.format("a"))["id"] == "a"
    assert parse_xml(b"\xef\xbb\xbf" + PATIENT.format("b").encode())["id"] == "b"
    assert parse_xml(PATIENT.format("&lt;!DOCTYPE-is-text&gt;"))["id"] == "<!DOCTYPE-is-text>"
    narrative = '<div xmlns="http://www.w3.org/1999/xhtml"><!-- a comment --><p>Hélène &amp; Zoé</p></div>'
    assert StructureChecker().check({"resourceType": "Patient", "text": {"status": "generated", "div": narrative}}) \
        == []
