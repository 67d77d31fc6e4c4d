"""FHIR JSON -> FHIR XML, driven by the R4 definitions (http://hl7.org/fhir/R4/xml.html).

The reader is ``dui.fhir.xml``; the two follow the same rules:

* elements come in the order of the element definitions (not the JSON key order), so ``extension`` and
  ``modifierExtension`` come first in a data type or a backbone element, after ``text``/``contained`` in a resource;
* a primitive is an element with a ``value`` attribute; its ``id`` and ``extension`` come from the JSON ``_name``
  companion (for arrays, ``_name`` is a parallel array and either side may hold ``null``);
* ``id`` of an element (not of a resource) and ``url`` of an Extension are attributes;
* a choice element is named after its type (``value[x]`` with ``valueQuantity`` -> ``<valueQuantity>``);
* a resource inside a resource (``contained``, ``Bundle.entry.resource``, ``Parameters.parameter.resource``) is
  wrapped in the element that holds it;
* the narrative ``div`` is XHTML in its own namespace, written as the JSON holds it;
* numbers are written as their JSON text (``FhirDecimal`` keeps it), booleans as ``true``/``false``.

A JSON property the definitions do not know cannot be written and raises ``Invalid``: nothing is dropped silently.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any, NamedTuple

from lxml import etree

from dui.errors import Invalid
from dui.fhir.definitions import R4, ElementDef, r4
from dui.fhir.jsontext import FhirDecimal

FHIR_NS = "http://hl7.org/fhir"
XHTML_NS = "http://www.w3.org/1999/xhtml"

_PRIMITIVE, _COMPLEX, _RESOURCE, _XHTML = range(4)
# What an attribute value must escape (a raw newline or tab would be normalised to a space by the reader).
_ESCAPE = re.compile(r'[&<>"\n\r\t]')
_ESCAPES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "\n": "&#10;", "\r": "&#13;", "\t": "&#9;"}
# Characters XML 1.0 cannot carry at all (http://www.w3.org/TR/xml/#charsets), lone surrogates included.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


class _Slot(NamedTuple):
    order: int  # the position of the element definition among its siblings
    name: str  # the XML (and JSON) name: ``valueQuantity`` for ``value[x]`` of type Quantity
    kind: int
    path: str  # where the children of a complex value are defined


def resource_to_xml(resource: dict[str, Any]) -> str:
    """One FHIR resource (its JSON form, as ``jsontext.parse`` reads it) as FHIR XML text, without declaration."""
    return _writer().resource(resource)


def resource_to_bytes(resource: dict[str, Any], *, pretty: bool = False) -> bytes:
    """The XML document of ``resource``, UTF-8, with its XML declaration (indented when ``pretty``)."""
    text = resource_to_xml(resource)
    if pretty:
        return _indented(text)
    return b'<?xml version="1.0" encoding="UTF-8"?>' + text.encode("utf-8")


def _indented(text: str) -> bytes:
    """The document indented, its narratives untouched (whitespace in XHTML is content)."""
    root = etree.fromstring(text.encode("utf-8"), etree.XMLParser(resolve_entities=False, no_network=True,
                                                                  huge_tree=True))
    divs = [d for d in root.iter(f"{{{XHTML_NS}}}div") if not d.getparent().tag.startswith(f"{{{XHTML_NS}}}")]
    holders = []
    for div in divs:  # out of the way while indenting
        holder = etree.Element("narrative")
        div.getparent().replace(div, holder)
        holders.append(holder)
    etree.indent(root, space="  ")
    for holder, div in zip(holders, divs, strict=True):
        div.tail = holder.tail
        holder.getparent().replace(holder, div)
    indented: bytes = etree.tostring(root, encoding="UTF-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + indented


def resource_to_element(resource: dict[str, Any]) -> etree._Element:
    """``resource`` as an lxml tree (what XML Patch works on)."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
    return etree.fromstring(resource_to_xml(resource).encode("utf-8"), parser)


_WRITER: XmlWriter | None = None


def _writer() -> XmlWriter:
    global _WRITER
    if _WRITER is None:
        _WRITER = XmlWriter(r4())
    return _WRITER


class XmlWriter:
    def __init__(self, defs: R4) -> None:
        self.defs = defs
        self._slots: dict[str, dict[str, _Slot]] = {}

    def resource(self, resource: dict[str, Any], *, namespace: bool = True) -> str:
        out: list[str] = []
        self._resource(resource, out, namespace)
        return "".join(out)

    # -- the definitions, as what a JSON key becomes --------------------------------------------------

    def slots(self, path: str) -> dict[str, _Slot]:
        """JSON key -> how to write it, for the children of ``path`` (a type or a backbone path); cached."""
        cached = self._slots.get(path)
        if cached is None:
            cached = {}
            for order, el in enumerate(self.defs.children(path).values()):
                if el.is_choice:
                    for tcode in el.types:
                        name = el.name + tcode[:1].upper() + tcode[1:]
                        cached[name] = self._slot(order, name, el, tcode)
                else:
                    cached[el.name] = self._slot(order, el.name, el, el.types[0] if len(el.types) == 1 else "")
            self._slots[path] = cached
        return cached

    def _slot(self, order: int, name: str, el: ElementDef, tcode: str) -> _Slot:
        if tcode == "xhtml":
            return _Slot(order, name, _XHTML, "")
        if tcode == "Resource" or tcode in self.defs.resource_types:  # Bundle.entry.response.outcome too
            return _Slot(order, name, _RESOURCE, "")
        if tcode and self.defs.is_primitive(tcode):
            return _Slot(order, name, _PRIMITIVE, "")
        if el.content_ref:
            return _Slot(order, name, _COMPLEX, el.content_ref)
        if not tcode or tcode in ("BackboneElement", "Element"):
            return _Slot(order, name, _COMPLEX, el.path)
        return _Slot(order, name, _COMPLEX, tcode)

    # -- writing ----------------------------------------------------------------------------------------

    def _resource(self, resource: Any, out: list[str], namespace: bool) -> None:
        rtype = resource.get("resourceType") if isinstance(resource, dict) else None
        if not isinstance(rtype, str) or rtype not in self.defs.resource_types:
            raise Invalid(f"Cannot write {str(rtype)[:60]!r} as FHIR XML: not an R4 resource type")
        out.append(f'<{rtype} xmlns="{FHIR_NS}">' if namespace else f"<{rtype}>")
        self._children(resource, rtype, out, "resource")
        out.append(f"</{rtype}>")

    def _children(self, obj: dict[str, Any], path: str, out: list[str], context: str) -> None:
        """The child elements of ``obj`` (``context``: "resource", "Extension", or "element" whose ``id`` is an
        attribute already written)."""
        slots = self.slots(path)
        found: list[_Slot] = []
        for key in obj:
            if key == "resourceType" and context == "resource":
                continue
            if context != "resource" and (key == "id" or (key == "url" and context == "Extension")):
                continue
            slot = slots.get(key[1:] if key.startswith("_") else key)
            if slot is None:
                raise Invalid(f"Cannot write {path}.{key[:60]} as FHIR XML: R4 defines no such element")
            found.append(slot)
        if len(found) > 1:
            found = sorted(set(found))
        for slot in found:
            self._element(slot, obj.get(slot.name), obj.get("_" + slot.name), out)

    def _element(self, slot: _Slot, value: Any, companion: Any, out: list[str]) -> None:
        name, kind = slot.name, slot.kind
        if kind == _PRIMITIVE:
            if isinstance(value, list) or isinstance(companion, list):
                values = value if isinstance(value, list) else []
                companions = companion if isinstance(companion, list) else []
                for i in range(max(len(values), len(companions))):
                    self._primitive(name, values[i] if i < len(values) else None,
                                    companions[i] if i < len(companions) else None, out)
            else:
                self._primitive(name, value, companion, out)
            return
        if value is None:
            return
        for item in value if isinstance(value, list) else (value,):
            if kind == _COMPLEX:
                self._complex(name, item, slot.path, out)
            elif kind == _RESOURCE:
                out.append(f"<{name}>")
                self._resource(item, out, namespace=False)
                out.append(f"</{name}>")
            else:
                if not isinstance(item, str):
                    raise Invalid(f"Cannot write {name} as FHIR XML: the narrative is not a string")
                out.append(_div(item))

    def _complex(self, name: str, obj: Any, path: str, out: list[str]) -> None:
        if not isinstance(obj, dict):
            raise Invalid(f"Cannot write {name} as FHIR XML: an object was expected")
        head = f"<{name}"
        if "id" in obj:
            head += f' id="{_attribute(obj["id"])}"'
        extension = path == "Extension"
        if extension and "url" in obj:
            head += f' url="{_attribute(obj["url"])}"'
        out.append(head)
        mark = len(out)
        out.append(">")
        self._children(obj, path, out, "Extension" if extension else "element")
        if len(out) == mark + 1:
            out[mark] = "/>"
        else:
            out.append(f"</{name}>")

    def _primitive(self, name: str, value: Any, companion: Any, out: list[str]) -> None:
        if value is None and companion is None:
            return
        head = f"<{name}"
        extensions = None
        if companion is not None:
            if not isinstance(companion, dict):
                raise Invalid(f"Cannot write _{name} as FHIR XML: an object was expected")
            unknown = set(companion) - {"id", "extension"}
            if unknown:
                raise Invalid(f"Cannot write _{name}.{sorted(unknown)[0][:60]} as FHIR XML: a primitive has only "
                              "id and extension")
            if companion.get("id") is not None:
                head += f' id="{_attribute(companion["id"])}"'
            extensions = companion.get("extension")
        if value is not None:
            head += f' value="{_attribute(value)}"'
        if not extensions:
            out.append(head + "/>")
            return
        out.append(head + ">")
        for extension in extensions if isinstance(extensions, list) else (extensions,):
            self._complex("extension", extension, "Extension", out)
        out.append(f"</{name}>")


def _attribute(value: Any) -> str:
    """A primitive's JSON value as the text of an XML attribute, escaped."""
    if isinstance(value, str):
        text = value
    elif value is True:
        return "true"
    elif value is False:
        return "false"
    elif isinstance(value, FhirDecimal):
        return value.text
    elif isinstance(value, int):
        return str(value)
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise Invalid("Cannot write a decimal that is not finite as FHIR XML")
        text = str(value)
        return format(value, "f") if "E" in text or "e" in text else text
    elif isinstance(value, float):
        return repr(value)
    else:
        raise Invalid(f"Cannot write a {type(value).__name__} as a FHIR XML primitive")
    if _NOT_XML.search(text):
        raise Invalid("The resource holds a character XML 1.0 cannot carry (a control character); read it as JSON")
    return _ESCAPE.sub(lambda m: _ESCAPES[m.group()], text) if _ESCAPE.search(text) else text


_DIV_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
_DECLARATION = re.compile(r"<!\s*(?:DOCTYPE|ENTITY)|<\?xml", re.IGNORECASE)


def _div(text: str) -> str:
    """The narrative as it is, once checked to be one well-formed XHTML ``div`` (the validator refuses any other, so
    this guards against a stored body that escaped it: nothing can break out of the div into the document), with the
    XHTML namespace declared on it if the JSON left it out (the reader would otherwise take it for FHIR)."""
    div = text.strip()
    if not div.startswith("<div") or _DECLARATION.search(div):
        raise Invalid("The narrative is not an XHTML <div>; read the resource as JSON")
    try:
        root = etree.fromstring(div.encode("utf-8"), _DIV_PARSER)
    except (etree.XMLSyntaxError, ValueError):
        raise Invalid("The narrative is not well-formed XHTML; read the resource as JSON") from None
    if root.tag == f"{{{XHTML_NS}}}div":
        return div
    if root.tag == "div":
        return f'<div xmlns="{XHTML_NS}"' + div[4:]
    raise Invalid("The narrative <div> is in another namespace than XHTML; read the resource as JSON")
