"""Check a resource against the base FHIR R4 structure, driven by the generated R4 tables.

Rules (http://hl7.org/fhir/R4/json.html, http://hl7.org/fhir/R4/datatypes.html):
- every property is an element of its parent (choice elements carry their type as a suffix);
- arrays exactly where the cardinality is ``*``, never empty; no ``null`` except to align with the
  ``_element`` array of primitive extensions; no empty objects;
- required elements present (min >= 1);
- primitives of the right JSON type, matching their regex, with a real calendar date, no control
  characters, valid base64;
- ``code`` elements bound *required* to an enumerable value set hold one of its codes;
- narrative ``div`` is well-formed XHTML without active content (invariant txt-1).

Every problem becomes an ``Issue`` with a FHIRPath-like location, so a client sees all of them at
once. The checker is exact R4 (4.0.1); ``dui.fhir.model`` adds the fhir.resources check on top.
"""

from __future__ import annotations

import binascii
import re
from calendar import monthrange
from decimal import Decimal
from typing import Any

from dui.errors import Issue
from dui.fhir.definitions import R4, ElementDef, r4, value_set_codes
from dui.fhir.xmlsafe import UnsafeXml, parse_untrusted

MAX_ISSUES = 100
MAX_STRING_CHARS = 1024 * 1024  # FHIR: "strings SHALL NOT exceed 1MB"
INT32 = (-(2**31), 2**31 - 1)
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
XHTML_NS = "{http://www.w3.org/1999/xhtml}"
XHTML_FORBIDDEN = {
    "script", "object", "applet", "embed", "iframe", "frame", "frameset", "form", "input", "button",
    "select", "textarea", "style", "meta", "link", "base", "head", "body", "html",
}  # fmt: skip
XHTML_MAX_DEPTH = 64  # nesting of a narrative's elements


class _Lookup:
    """Property name -> (element, type code) for one parent path, choice expansions included."""

    __slots__ = ("by_name", "required")

    def __init__(self, children: dict[str, ElementDef]) -> None:
        self.by_name: dict[str, tuple[ElementDef, str | None]] = {}
        self.required: list[tuple[str, ElementDef, tuple[str, ...]]] = []
        for name, el in children.items():
            if el.is_choice:
                keys = tuple(name + t[:1].upper() + t[1:] for t in el.types)
                for key, t in zip(keys, el.types, strict=True):
                    self.by_name[key] = (el, t)
            else:
                keys = (name, "_" + name)
                self.by_name[name] = (el, el.types[0] if len(el.types) == 1 else None)
            if el.min >= 1:
                self.required.append((name, el, keys))


class StructureChecker:
    """Stateless checker; one instance serves every request."""

    def __init__(self, defs: R4 | None = None, codes: dict[str, frozenset[str]] | None = None) -> None:
        self.defs = defs or r4()
        self.codes = value_set_codes() if codes is None else codes
        self._lookups: dict[str, _Lookup] = {}

    def check(self, resource: Any, location: str | None = None) -> list[Issue]:
        """Return every structural problem of ``resource`` (empty when it conforms)."""
        issues: list[Issue] = []
        self._resource(resource, location, issues)
        return issues[:MAX_ISSUES]

    # -- walking -------------------------------------------------------------------------------

    def _lookup(self, path: str) -> _Lookup:
        lookup = self._lookups.get(path)
        if lookup is None:
            lookup = self._lookups[path] = _Lookup(self.defs.children(path))
        return lookup

    def _resource(self, obj: Any, loc: str | None, issues: list[Issue]) -> None:
        if not isinstance(obj, dict):
            _add(issues, loc or "", "A resource must be a JSON object", "structure")
            return
        rtype = obj.get("resourceType")
        if not isinstance(rtype, str):
            _add(issues, loc or "", "The resource has no resourceType", "required")
            return
        if rtype not in self.defs.resource_types:
            _add(issues, loc or "resourceType", f"Unknown resource type '{rtype}' (FHIR R4 4.0.1)", "not-supported")
            return
        self._object(obj, rtype, loc or rtype, issues, is_resource=True)

    def _object(self, obj: dict[str, Any], path: str, loc: str, issues: list[Issue],
                is_resource: bool = False) -> None:
        if not obj:
            _add(issues, loc, "An element cannot be an empty object", "structure")
            return
        lookup = self._lookup(path)
        for key, value in obj.items():
            if len(issues) >= MAX_ISSUES:
                return
            if is_resource and key == "resourceType":
                continue
            is_ext = key.startswith("_")
            found = lookup.by_name.get(key[1:] if is_ext else key)
            if found is None:
                _add(issues, f"{loc}.{key}", f"Unknown element '{key}'", "structure")
                continue
            el, tcode = found
            name = key[1:] if is_ext else key
            if is_ext:
                if tcode is None or not self.defs.is_primitive(tcode):
                    _add(issues, f"{loc}.{key}", f"'{key}' may only accompany a primitive element", "structure")
                else:
                    self._primitive_extension(value, el, f"{loc}.{name}", issues, obj.get(name))
                continue
            self._value(value, el, tcode, f"{loc}.{key}", issues, obj.get("_" + key))
        for name, el, keys in lookup.required:
            if not any(k in obj for k in keys):
                _add(issues, loc, f"Missing required element '{name}' ({el.path} {el.min}..{el.max})", "required")

    def _value(self, value: Any, el: ElementDef, tcode: str | None, loc: str, issues: list[Issue],
               ext: Any) -> None:
        if el.is_array:
            if not isinstance(value, list):
                _add(issues, loc, f"'{el.name}' must be an array ({el.path} 0..{el.max})", "structure")
                return
            if not value:
                _add(issues, loc, "An array cannot be empty; leave the element out", "structure")
                return
            for i, item in enumerate(value):
                if item is None:
                    if not (isinstance(ext, list) and i < len(ext) and ext[i] is not None):
                        _add(issues, f"{loc}[{i}]", "null is only allowed to align with '_' extensions", "structure")
                    continue
                self._item(item, el, tcode, f"{loc}[{i}]", issues)
        else:
            if isinstance(value, list):
                _add(issues, loc, f"'{el.name}' must not be an array ({el.path} max {el.max})", "structure")
                return
            if value is None:
                _add(issues, loc, "null is not a valid value; leave the element out", "structure")
                return
            self._item(value, el, tcode, loc, issues)

    def _item(self, item: Any, el: ElementDef, tcode: str | None, loc: str, issues: list[Issue]) -> None:
        if el.content_ref or tcode in ("BackboneElement", "Element"):
            if not isinstance(item, dict):
                _add(issues, loc, f"'{el.name}' must be a JSON object", "structure")
                return
            self._object(item, el.content_ref or el.path, loc, issues)
        elif tcode == "Resource":
            self._resource(item, loc, issues)
        elif tcode is not None and self.defs.is_primitive(tcode):
            self._primitive(item, tcode, el, loc, issues)
        elif tcode is not None:
            if not isinstance(item, dict):
                _add(issues, loc, f"'{el.name}' must be a JSON object ({tcode})", "structure")
                return
            self._object(item, tcode, loc, issues)

    def _primitive_extension(self, value: Any, el: ElementDef, loc: str, issues: list[Issue],
                             sibling: Any) -> None:
        items = value if el.is_array else [value]
        if el.is_array:
            if not isinstance(value, list):
                _add(issues, loc, f"'_{el.name}' must be an array", "structure")
                return
            if isinstance(sibling, list) and len(sibling) != len(value):
                _add(issues, loc, f"'_{el.name}' must have as many items as '{el.name}'", "structure")
        for i, item in enumerate(items):
            where = f"{loc}[{i}]" if el.is_array else loc
            if item is None and el.is_array:
                continue
            if not isinstance(item, dict):
                _add(issues, where, f"'_{el.name}' must hold objects with id and/or extension", "structure")
                continue
            self._object(item, "Element", where, issues)

    # -- primitives ----------------------------------------------------------------------------

    def _primitive(self, value: Any, tcode: str, el: ElementDef, loc: str, issues: list[Issue]) -> None:
        if tcode == "boolean":
            if not isinstance(value, bool):
                _add(issues, loc, f"'{_leaf(loc)}' must be true or false", "value")
            return
        if tcode in ("integer", "positiveInt", "unsignedInt"):
            if type(value) is not int:
                _add(issues, loc, f"'{_leaf(loc)}' must be a JSON integer", "value")
            elif not INT32[0] <= value <= INT32[1]:
                _add(issues, loc, f"'{_leaf(loc)}' is out of the 32-bit integer range", "value")
            elif tcode == "positiveInt" and value < 1:
                _add(issues, loc, f"'{_leaf(loc)}' must be a positive integer", "value")
            elif tcode == "unsignedInt" and value < 0:
                _add(issues, loc, f"'{_leaf(loc)}' must not be negative", "value")
            return
        if tcode == "decimal":
            if isinstance(value, bool) or not isinstance(value, int | Decimal):
                _add(issues, loc, f"'{_leaf(loc)}' must be a JSON number", "value")
            return
        if not isinstance(value, str):
            _add(issues, loc, f"'{_leaf(loc)}' must be a JSON string ({tcode})", "value")
            return
        if len(value) > MAX_STRING_CHARS:
            _add(issues, loc, f"'{_leaf(loc)}' is longer than 1 MB", "too-long")
            return
        if CONTROL.search(value):
            _add(issues, loc, f"'{_leaf(loc)}' contains a control character", "value")
            return
        if tcode == "xhtml":
            problem = _xhtml_problem(value)
            if problem:
                _add(issues, loc, problem, "value")
            return
        if tcode == "base64Binary":
            if not _is_base64(value):
                _add(issues, loc, f"'{_leaf(loc)}' is not valid base64", "value")
            return
        if tcode in ("string", "markdown"):
            if not value.strip():
                _add(issues, loc, f"'{_leaf(loc)}' cannot be empty or only whitespace", "value")
            return
        pattern = self.defs.regex.get(tcode)
        if pattern is not None and not pattern.fullmatch(value):
            _add(issues, loc, f"'{value[:80]}' is not a valid {tcode}", "value")
            return
        if tcode in ("date", "dateTime", "instant") and len(value) >= 10 and not _real_day(value):
            _add(issues, loc, f"'{value[:40]}' is not a calendar date", "value")
            return
        if el.value_set is not None:
            allowed = self.codes.get(el.value_set)
            if allowed is not None and value not in allowed:
                vs = el.value_set.rsplit("/", 1)[-1]
                _add(issues, loc, f"'{value[:80]}' is not in the required value set {vs} "
                     f"({', '.join(sorted(allowed)[:12])}{'...' if len(allowed) > 12 else ''})", "code-invalid")


def _add(issues: list[Issue], loc: str, message: str, code: str) -> None:
    issues.append(Issue(f"{loc}: {message}" if loc else message, code, expression=(loc,) if loc else ()))


def _leaf(loc: str) -> str:
    return loc.rsplit(".", 1)[-1].split("[", 1)[0]


def _real_day(value: str) -> bool:
    year, month, day = int(value[0:4]), int(value[5:7]), int(value[8:10])
    return 1 <= month <= 12 and 1 <= day <= monthrange(year, month)[1]


def _is_base64(value: str) -> bool:
    compact = "".join(value.split())
    try:
        binascii.a2b_base64(compact.encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return False
    return True


def _xhtml_problem(value: str) -> str | None:
    if not value.lstrip().startswith("<div"):
        return "The narrative must be an XHTML <div>"
    try:
        root = parse_untrusted(value.encode("utf-8"), max_bytes=4 * MAX_STRING_CHARS, max_depth=XHTML_MAX_DEPTH,
                               comments=True)
    except UnsafeXml as exc:
        return f"The narrative is refused: {exc}"
    if root.tag != XHTML_NS + "div":
        return "The narrative <div> must be in the XHTML namespace (http://www.w3.org/1999/xhtml)"
    for node in root.iter():
        if not isinstance(node.tag, str):
            continue  # comments, processing instructions
        local = node.tag.rsplit("}", 1)[-1].lower()
        if local in XHTML_FORBIDDEN:
            return f"The narrative contains a <{local}> element, which FHIR narrative forbids (txt-1)"
        for attr, attr_value in node.attrib.items():
            name = attr.rsplit("}", 1)[-1].lower()
            if name.startswith("on"):
                return f"The narrative contains an event attribute '{name}' (txt-1)"
            if name in ("href", "src") and attr_value.strip().lower().startswith(("javascript:", "vbscript:")):
                return "The narrative contains a script URL (txt-1)"
    return None
