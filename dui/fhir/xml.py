"""FHIR XML -> FHIR JSON, driven by the R4 definitions (http://hl7.org/fhir/R4/xml.html).

XML does not say which elements repeat or what type a primitive has; the definitions do, so the
reader knows when to build an array, when ``value="true"`` is a boolean, and when a decimal must
keep its text. Untrusted XML goes through ``dui.fhir.xmlsafe``: no DTD, no entities, no network, UTF-8 only,
and limits on size and nesting.

The rules are those the writer (``dui.fhir.xmlwriter``) follows: a primitive's ``value`` attribute is its JSON
value, its ``id`` attribute and ``extension`` children its ``_name`` companion (a parallel array, ``null`` where an
occurrence has none, for repeating elements); ``id`` and an Extension's ``url`` are attributes; a choice element is
read by its type suffix; ``contained``, ``Bundle.entry.resource``, ``Bundle.entry.response.outcome`` and
``Parameters.parameter.resource`` hold one resource; the narrative ``div`` (XHTML namespace) becomes its XHTML text,
an empty element written ``<td></td>``. Order is not enforced. Refused (``Invalid``): an element R4 does not define
where it stands, an element outside the FHIR namespace, text content, attributes other than these, a non-repeating
element given twice, and values outside the lexical forms of boolean, integer and decimal.
"""

from __future__ import annotations

import copy
import re
from typing import Any, NamedTuple

from lxml import etree

from dui.errors import Invalid, TooLarge
from dui.fhir.definitions import R4, ElementDef, r4
from dui.fhir.jsontext import FhirDecimal
from dui.fhir.xmlsafe import MAX_BYTES, MAX_DEPTH, UnsafeXml, parse_untrusted

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"


def parse_xml(data: bytes | str, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """Read one FHIR resource in XML into its JSON form; raise ``Invalid`` on anything else (``TooLarge`` beyond
    ``max_bytes`` or ``max_depth``)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if len(raw) > max_bytes:
        raise TooLarge(f"The XML body is larger than {max_bytes} bytes")
    try:
        root = parse_untrusted(raw, max_bytes=max_bytes, max_depth=max_depth)
    except UnsafeXml as exc:
        if "nested deeper" in str(exc):
            raise TooLarge(f"The XML body is refused: {exc}") from None
        raise Invalid(f"The XML body is refused: {exc}") from None
    return _reader().resource(root)


def element_to_resource(element: etree._Element) -> dict[str, Any]:
    """Read an already-parsed FHIR resource element (e.g. inside a test-case file, or a patched resource)."""
    return _reader().resource(element)


_READER: XmlReader | None = None


def _reader() -> XmlReader:
    global _READER
    if _READER is None:
        _READER = XmlReader(r4())
    return _READER


_PRIMITIVE, _COMPLEX, _RESOURCE, _XHTML = range(4)


class _Slot(NamedTuple):
    key: str  # the JSON name (``valueQuantity``)
    kind: int
    tcode: str  # the type of a primitive
    path: str  # where the children of a complex value are defined
    is_array: bool


class XmlReader:
    def __init__(self, defs: R4) -> None:
        self.defs = defs
        self._slots: dict[str, dict[str, _Slot]] = {}

    def resource(self, node: etree._Element) -> dict[str, Any]:
        ns, name = _split(node.tag) if isinstance(node.tag, str) else (None, "?")
        if ns != FHIR_NS or name not in self.defs.resource_types:
            raise Invalid(f"<{name}> is not a FHIR R4 resource in the {FHIR_NS} namespace")
        if node.text is not None and not node.text.isspace():
            raise Invalid(f"<{name}>: text content is not FHIR XML")
        out: dict[str, Any] = {"resourceType": name}
        self._children(node, name, out)
        return out

    def slots(self, path: str) -> dict[str, _Slot]:
        """XML tag (``{namespace}name``) -> how to read it, for the children of ``path``; cached."""
        cached = self._slots.get(path)
        if cached is None:
            cached = {}
            for el in self.defs.children(path).values():
                if el.is_choice:
                    for tcode in el.types:
                        name = el.name + tcode[:1].upper() + tcode[1:]
                        cached[f"{{{FHIR_NS}}}{name}"] = self._slot(name, el, tcode)
                elif el.types == ("xhtml",):
                    cached[f"{{{XHTML_NS}}}{el.name}"] = self._slot(el.name, el, "xhtml")
                else:
                    tcode = el.types[0] if len(el.types) == 1 else ""
                    cached[f"{{{FHIR_NS}}}{el.name}"] = self._slot(el.name, el, tcode)
            self._slots[path] = cached
        return cached

    def _slot(self, key: str, el: ElementDef, tcode: str) -> _Slot:
        if tcode == "xhtml":
            return _Slot(key, _XHTML, tcode, "", el.is_array)
        if tcode == "Resource" or tcode in self.defs.resource_types:  # Bundle.entry.response.outcome too
            return _Slot(key, _RESOURCE, tcode, "", el.is_array)
        if tcode and self.defs.is_primitive(tcode):
            return _Slot(key, _PRIMITIVE, tcode, "", el.is_array)
        if el.content_ref:
            path = el.content_ref
        elif not tcode or tcode in ("BackboneElement", "Element"):
            path = el.path
        else:
            path = tcode
        return _Slot(key, _COMPLEX, tcode, path, el.is_array)

    def _children(self, node: etree._Element, path: str, out: dict[str, Any]) -> None:
        slots = self.slots(path)
        arrays: list[str] = []
        for child in node:
            tag = child.tag
            if not isinstance(tag, str):
                continue  # a comment or a processing instruction
            tail = child.tail
            if tail is not None and not tail.isspace():
                raise Invalid(f"{path}: text outside a value attribute ('{tail.strip()[:40]}') is not FHIR XML")
            slot = slots.get(tag)
            if slot is None:
                ns, name = _split(tag)
                if ns != FHIR_NS:
                    raise Invalid(f"{path}: <{name}> is not in the FHIR namespace")
                raise Invalid(f"{path}: unknown element <{name}>")
            value, extension = self._value(child, slot)
            key = slot.key
            if slot.is_array:
                values = out.get(key)
                if values is None:
                    values = out[key] = []
                    arrays.append(key)
                extensions = out.get("_" + key)
                values.append(value)
                if extension is not None or extensions is not None:
                    if extensions is None:
                        extensions = out["_" + key] = [None] * (len(values) - 1)
                    extensions.append(extension)
            else:
                if key in out or "_" + key in out:
                    raise Invalid(f"{path}: <{key}> is given more than once, but it does not repeat")
                if value is not None:
                    out[key] = value
                if extension is not None:
                    out["_" + key] = extension
        for key in arrays:  # primitives that only have extensions: ``"_given": [{...}]`` alone
            if all(v is None for v in out[key]):
                del out[key]

    def _value(self, node: etree._Element, slot: _Slot) -> tuple[Any, dict[str, Any] | None]:
        kind = slot.kind
        if kind != _XHTML:
            text = node.text
            if text is not None and not text.isspace():
                raise Invalid(f"<{slot.key}>: text content ('{text.strip()[:40]}') is not FHIR XML; a primitive's "
                              "value is its value attribute")
        if kind == _PRIMITIVE:
            attributes = node.attrib
            if len(attributes) > ("value" in attributes) + ("id" in attributes):
                raise Invalid(f"<{slot.key}> has attributes other than value and id")
            extension: dict[str, Any] | None = None
            element_id = node.get("id")
            if element_id is not None or len(node):
                extension = {"id": element_id} if element_id is not None else {}
                self._children(node, "Element", extension)
            raw = node.get("value")
            return (_primitive(raw, slot.tcode) if raw is not None else None), (extension or None)
        if kind == _COMPLEX:
            if len(node.attrib) and any(name not in ("id", "url") for name in node.attrib):
                raise Invalid(f"<{slot.key}> has attributes other than id (and url for an extension)")
            out: dict[str, Any] = {}
            element_id = node.get("id")
            if element_id is not None:
                out["id"] = element_id
            if slot.path == "Extension":
                url = node.get("url")
                if url is not None:
                    out["url"] = url
            self._children(node, slot.path, out)
            return out, None
        if kind == _RESOURCE:
            inner = [c for c in node if isinstance(c.tag, str)]
            if len(inner) != 1:
                raise Invalid(f"<{slot.key}> must hold exactly one resource")
            return self.resource(inner[0]), None
        return _xhtml(node), None


# The lexical forms of http://hl7.org/fhir/R4/datatypes.html (Python's int() and Decimal() accept more: "+1", " 1",
# "1_000", "NaN", "Infinity").
_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]{0,18})")
_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def _primitive(raw: str, tcode: str) -> Any:
    if tcode == "boolean":
        if raw not in ("true", "false"):
            raise Invalid(f"'{raw[:40]}' is not a boolean")
        return raw == "true"
    if tcode in ("integer", "positiveInt", "unsignedInt"):
        if not _INTEGER.fullmatch(raw):
            raise Invalid(f"'{raw[:40]}' is not an integer")
        return int(raw)
    if tcode == "decimal":
        if not _DECIMAL.fullmatch(raw):
            raise Invalid(f"'{raw[:40]}' is not a decimal")
        try:
            return FhirDecimal.from_text(raw)
        except (ArithmeticError, ValueError):
            raise Invalid(f"'{raw[:40]}' is not a decimal a double can hold") from None
    return raw


_VOID = frozenset(f"{{{XHTML_NS}}}{name}" for name in (
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"))


def _xhtml(node: etree._Element) -> str:
    """The narrative div as XHTML text: its own namespace declared on it, none of those of the FHIR document, and
    an element without content written ``<td></td>`` (as HTML reads it), except the void ones (``<br/>``)."""
    node = copy.deepcopy(node)  # a copy keeps only the namespaces it uses
    for element in node.iter():
        if isinstance(element.tag, str) and element.text is None and len(element) == 0 and element.tag not in _VOID:
            element.text = ""
    text: str = etree.tostring(node, encoding="unicode", with_tail=False)
    return text


def _split(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return None, tag
