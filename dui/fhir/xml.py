"""FHIR XML -> FHIR JSON, driven by the R4 definitions (http://hl7.org/fhir/R4/xml.html).

XML does not say which elements repeat or what type a primitive has; the definitions do, so the
reader knows when to build an array, when ``value="true"`` is a boolean, and when a decimal must
keep its text. Untrusted XML goes through ``dui.fhir.xmlsafe``: no DTD, no entities, no network, UTF-8 only,
and limits on size and nesting.
"""

from __future__ import annotations

from typing import Any

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
    return XmlReader(r4()).resource(root)


def element_to_resource(element: etree._Element) -> dict[str, Any]:
    """Read an already-parsed FHIR resource element (e.g. inside a test-case file)."""
    return XmlReader(r4()).resource(element)


class XmlReader:
    def __init__(self, defs: R4) -> None:
        self.defs = defs

    def resource(self, node: etree._Element) -> dict[str, Any]:
        ns, name = _split(node.tag)
        if ns != FHIR_NS or name not in self.defs.resource_types:
            raise Invalid(f"<{name}> is not a FHIR R4 resource in the {FHIR_NS} namespace")
        out: dict[str, Any] = {"resourceType": name}
        self._children(node, name, out)
        return out

    def _children(self, node: etree._Element, path: str, out: dict[str, Any]) -> None:
        children = self.defs.children(path)
        for child in node:
            if not isinstance(child.tag, str):
                continue
            ns, name = _split(child.tag)
            tcode: str | None
            if ns == XHTML_NS and name == "div":
                el, key, tcode = children.get("div"), "div", "xhtml"
            else:
                if ns != FHIR_NS:
                    raise Invalid(f"<{name}> is not in the FHIR namespace")
                el, key, tcode = _resolve(children, name)
            if el is None:
                raise Invalid(f"{path}: unknown element <{name}>")
            value, extension = self._value(child, el, tcode or "")
            if el.is_array:
                values = out.setdefault(key, [])
                extensions = out.get("_" + key)
                values.append(value)
                if extension is not None or extensions is not None:
                    if extensions is None:
                        extensions = out["_" + key] = [None] * (len(values) - 1)
                    extensions.append(extension)
            else:
                if value is not None:
                    out[key] = value
                if extension is not None:
                    out["_" + key] = extension
        for key in [k for k in out if not k.startswith("_") and isinstance(out[k], list)]:
            if all(v is None for v in out[key]):
                del out[key]

    def _value(self, node: etree._Element, el: ElementDef, tcode: str) -> tuple[Any, dict[str, Any] | None]:
        if tcode == "xhtml":
            return etree.tostring(node, encoding="unicode", with_tail=False), None
        if tcode == "Resource":
            inner = [c for c in node if isinstance(c.tag, str)]
            if len(inner) != 1:
                raise Invalid(f"<{el.name}> must hold exactly one resource")
            return self.resource(inner[0]), None
        if tcode and self.defs.is_primitive(tcode):
            extension: dict[str, Any] = {}
            if node.get("id") is not None:
                extension["id"] = node.get("id")
            self._children(node, "Element", extension)
            raw = node.get("value")
            return (_primitive(raw, tcode) if raw is not None else None), (extension or None)
        out: dict[str, Any] = {}
        if node.get("id") is not None:
            out["id"] = node.get("id")
        if node.get("url") is not None:
            out["url"] = node.get("url")
        if el.content_ref:
            path = el.content_ref
        elif tcode in ("BackboneElement", "Element"):
            path = el.path
        else:
            path = tcode
        self._children(node, path, out)
        return out, None


def _resolve(children: dict[str, ElementDef], name: str) -> tuple[ElementDef | None, str, str | None]:
    el = children.get(name)
    if el is not None and not el.is_choice:
        return el, name, (el.types[0] if len(el.types) == 1 else None)
    for candidate in children.values():
        if candidate.is_choice and name.startswith(candidate.name):
            suffix = name[len(candidate.name):]
            for t in candidate.types:
                if t[:1].upper() + t[1:] == suffix:
                    return candidate, name, t
    return None, name, None


def _primitive(raw: str, tcode: str) -> Any:
    if tcode == "boolean":
        if raw not in ("true", "false"):
            raise Invalid(f"'{raw}' is not a boolean")
        return raw == "true"
    if tcode in ("integer", "positiveInt", "unsignedInt"):
        try:
            return int(raw)
        except ValueError:
            raise Invalid(f"'{raw}' is not an integer") from None
    if tcode == "decimal":
        try:
            return FhirDecimal.from_text(raw)
        except ArithmeticError:
            raise Invalid(f"'{raw}' is not a decimal") from None
    return raw


def _split(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return None, tag
