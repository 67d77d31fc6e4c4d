"""Conformance of CDA documents to the CI-SIS: the extended CDA schema, then the ANS schematrons of the model.

The material is a checkout of ANS TestContenuCDA (https://github.com/ansforge/TestContenuCDA-3-0): the folder
that holds ``schematrons/`` and ``infrastructure/``. None of it ships with the project (``DUI_CDA_MATERIAL``).

The schematrons are ISO Schematron bound to XSLT 2 (``queryBinding="xslt2"``), which lxml's ``isoschematron``
cannot run, and the material carries no ISO skeleton. ``compile_schematron`` turns one into an XSLT 3 stylesheet
run by SaxonC-HE (``saxonche``):

- ``<include href>`` is replaced by the element of the file it names, recursively, relative to the including file
  (a file name that differs in case only is accepted: the material is written on Windows);
- an abstract pattern is instantiated by every ``<pattern is-a>``: its rules are copied with each ``$param``
  replaced by its text in every query attribute (``context``, ``test``, ``select``, ``value``, ``path``,
  ``subject``), longest names first, in one pass; abstract rules are copied in place of ``<extends rule>``;
- ``<ns>`` become namespace declarations; ``<let>`` of the schema and of patterns become global variables, those
  of rules local ones; ``<value-of>`` and ``<name>`` are evaluated in messages;
- ISO semantics: a node is matched within a pattern by its first matching rule only (one mode per pattern, rule
  priorities by document order), and every pattern walks the whole tree, attributes included;
- the stylesheet's static base URI is the schematron's, so ``document('../jeuxDeValeurs/JDV_....xml')`` (the
  value sets) resolves the way the schematron's authors wrote it;
- the phase ``#ALL`` runs unless another is asked for (``#DEFAULT``: the schema's ``defaultPhase``).
- an assert or report whose test reads a file the material lacks (``doc('...')``, or ``document($v)`` of a global
  let holding the path) is left out and listed as not checked, instead of failing the whole run.

Findings are failed asserts and successful reports. A finding whose ``role`` is ``warning`` or ``info`` is a
warning; every other one is an error: the ANS schematrons write their successful reports without a role as errors
("Erreur de conformité ..."). Compiled stylesheets are cached per schematron file, for the life of the process.

The document is read by ``dui.fhir.xmlsafe`` (no DTD, no entity, UTF-8, limits); Saxon receives that tree
re-serialised, never the caller's bytes. Messages quote the document (``<value-of>``): they are for the one who
asked for the check, never for logs.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lxml import etree

from dui.errors import Invalid, TooLarge, Unavailable, Unprocessable
from dui.fhir.xmlsafe import MAX_BYTES, UnsafeXml, parse_untrusted

SCH_NS = "http://purl.oclc.org/dsdl/schematron"
XSL_NS = "http://www.w3.org/1999/XSL/Transform"
XS_NS = "http://www.w3.org/2001/XMLSchema"
XML_NS = "http://www.w3.org/XML/1998/namespace"
CDA_NS = "urn:hl7-org:v3"
_S = f"{{{SCH_NS}}}"
_X = f"{{{XSL_NS}}}"
WARNING_ROLES = frozenset({"warning", "warn", "info", "information", "caution", "hint"})
QUERY_ATTRIBUTES = ("context", "test", "select", "value", "path", "subject")
MAX_DOCUMENT_BYTES = MAX_BYTES  # an official DLU example with its attached PDF weighs 1.1 MB

SCHEMA = "infrastructure/cda/CDA_extended.xsd"
# The model of a document, by the templateId it declares; the first match wins (a DLU also declares the CI-SIS's
# 1.2.250.1.213.1.1.1.1, "structuration minimale", as every CI-SIS document does).
MODELS: tuple[tuple[str, str, str], ...] = (
    ("1.2.250.1.213.1.1.1.22", "DLU-EHPAD DLU", "schematrons/CI-SIS_DLU-EHPAD-DLU_2022.01.sch"),
    ("1.2.250.1.213.1.1.1.23", "DLU-EHPAD FLUDT", "schematrons/CI-SIS_DLU-EHPAD-FLUDT_2022.01.sch"),
    ("1.2.250.1.213.1.1.1.24", "DLU-EHPAD FLUDR", "schematrons/CI-SIS_DLU-EHPAD-FLUDR_2022.01.sch"),
    # XDS-SD, a CDA R2 level 1 document (a PDF in nonXMLBody): no model of its own; the CI-SIS's "structuration
    # minimale" (template 1.2.250.1.213.1.1.1.1) is what TestContenuCDA checks it against, and it has the rules
    # proper to N1 documents (nonXMLBody: exactly the three templateIds 2.16.840.1.113883.2.8.2.1,
    # 1.2.250.1.213.1.1.1.1, 1.3.6.1.4.1.19376.1.2.20).
    ("1.3.6.1.4.1.19376.1.2.20", "XDS-SD N1 (structuration minimale)",
     "schematrons/profils/structurationMinimale/ASIP-STRUCT-MIN-StrucMin.sch"),
)


class SchematronError(Exception):
    """The schematron cannot be read or compiled: a fault of the material, not of the document checked."""


class MaterialMissing(Unavailable):
    """The conformance material (a TestContenuCDA checkout) is not where it was said to be."""


@dataclass(frozen=True)
class Assertion:
    """An assert or report of a compiled schematron, as written (after includes and abstract patterns)."""

    kind: str  # "assert" or "report"
    pattern: str
    context: str
    test: str
    role: str | None
    flag: str | None
    id: str | None


@dataclass(frozen=True)
class Unchecked:
    """An assert or report left out: a file its test reads (a value set) is not in the material."""

    pattern: str
    context: str
    missing: str  # the file, as the schematron names it

    def line(self) -> str:
        return f"not checked [{self.pattern}] a rule on {self.context}: {self.missing} is not in the material"


@dataclass(frozen=True)
class Finding:
    """A failed assert or a successful report: where (XPath, ``cda:`` for HL7 v3) and what the schematron says."""

    kind: str  # "assert" (failed) or "report" (successful)
    pattern: str
    location: str
    message: str
    role: str | None = None
    flag: str | None = None
    id: str | None = None
    context: str = ""
    test: str = ""

    @property
    def is_warning(self) -> bool:
        return (self.role or "").lower() in WARNING_ROLES

    def line(self) -> str:
        level = "warning" if self.is_warning else "error"
        what = f"{self.kind} {self.id}" if self.id else self.kind
        return f"{level} [{self.pattern}] {what} at {self.location}: {self.message}"


@dataclass(frozen=True)
class XsdError:
    line: int
    path: str
    message: str

    def text(self) -> str:
        return f"xsd line {self.line} {self.path}: {self.message}"


@dataclass(frozen=True)
class Report:
    model: str
    schematron: str  # relative to the material
    xsd_errors: tuple[XsdError, ...]
    findings: tuple[Finding, ...]
    unchecked: tuple[Unchecked, ...] = ()

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if not f.is_warning)

    @property
    def warnings(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.is_warning)

    @property
    def ok(self) -> bool:
        return not self.xsd_errors and not self.errors


# --- reading the schematron ------------------------------------------------------------------------------------

def _read_xml(path: Path) -> etree._Element:
    try:
        return parse_untrusted(path.read_bytes())
    except (OSError, UnsafeXml) as exc:
        raise SchematronError(f"{path}: {exc}") from None


def _resolve_includes(element: etree._Element, base: Path, stack: tuple[Path, ...]) -> None:
    """Replace every ``<include href>`` under ``element`` by the root element of the file it names."""
    for include in list(element.iter(f"{_S}include")):
        href = include.get("href", "")
        if not href or "#" in href:
            raise SchematronError(f"{base}: include {href!r} is not a file reference")
        target = _existing((base.parent / href).resolve())
        if target in stack:
            raise SchematronError(f"{target}: included by itself")
        root = _read_xml(target)
        _resolve_includes(root, target, (*stack, target))
        root.tail = include.tail
        parent = include.getparent()
        if parent is None:
            raise SchematronError(f"{base}: an include cannot be the root")
        parent.replace(include, root)


def _existing(path: Path) -> Path:
    """``path``, or the file whose name differs from it in case only: TestContenuCDA is written on Windows, and some
    of its includes spell a file name otherwise than the file (``E_directiveAnticipee_int.sch``)."""
    if path.exists() or not path.parent.is_dir():
        return path
    matches = [p for p in path.parent.iterdir() if p.name.lower() == path.name.lower()]
    return matches[0] if len(matches) == 1 else path


def _substituter(params: dict[str, str]) -> Any:
    if not params:
        return lambda text: text
    names = sorted(params, key=len, reverse=True)
    pattern = re.compile(r"\$(" + "|".join(re.escape(n) for n in names) + r")")
    return lambda text: pattern.sub(lambda m: params[m.group(1)], text)


def _instantiate(schema: etree._Element) -> None:
    """Instantiate every ``<pattern is-a>`` from its abstract pattern, then drop the abstract ones."""
    abstract = {p.get("id"): p for p in schema.iter(f"{_S}pattern") if p.get("abstract") == "true"}
    for pattern in list(schema.iter(f"{_S}pattern")):
        base_id = pattern.get("is-a")
        if not base_id:
            continue
        base = abstract.get(base_id)
        if base is None:
            raise SchematronError(f"pattern {pattern.get('id')!r} is-a {base_id!r}: no such abstract pattern")
        params = {p.get("name", ""): p.get("value", "") for p in pattern.findall(f"{_S}param")}
        substitute = _substituter(params)
        instance = etree.Element(f"{_S}pattern", id=pattern.get("id") or base_id)
        for child in base:
            if not isinstance(child.tag, str) or child.tag in (f"{_S}p", f"{_S}title"):
                continue
            copy = deepcopy(child)
            for node in copy.iter():
                for name in QUERY_ATTRIBUTES:
                    if node.get(name) is not None:
                        node.set(name, substitute(node.get(name)))
            instance.append(copy)
        instance.tail = pattern.tail
        parent = pattern.getparent()
        assert parent is not None
        parent.replace(pattern, instance)
    for pattern in abstract.values():
        parent = pattern.getparent()
        if parent is not None:
            parent.remove(pattern)


def _rule_body(rule: etree._Element, abstract_rules: dict[str, etree._Element],
               stack: tuple[str, ...] = ()) -> list[etree._Element]:
    """The lets, asserts and reports of ``rule``, those of the abstract rules it extends copied in place."""
    body: list[etree._Element] = []
    for child in rule:
        if child.tag == f"{_S}extends":
            name = child.get("rule", "")
            if name in stack:
                raise SchematronError(f"abstract rule {name!r} extends itself")
            base = abstract_rules.get(name)
            if base is None:
                raise SchematronError(f"extends {name!r}: no such abstract rule")
            body.extend(_rule_body(base, abstract_rules, (*stack, name)))
        elif child.tag in (f"{_S}let", f"{_S}assert", f"{_S}report"):
            body.append(child)
    return body


# --- generating XSLT 3 -----------------------------------------------------------------------------------------

class _Builder:
    def __init__(self, schema: etree._Element, source: Path, phase: str | None) -> None:
        self.schema = schema
        self.source = source
        self.phase = phase
        self.assertions: list[Assertion] = []
        self.unchecked: list[Unchecked] = []
        self.strings: dict[str, str] = {}  # global lets whose value is a string literal (value set paths)

    def namespaces(self) -> dict[str, str]:
        nsmap = {"xsl": XSL_NS, "xs": XS_NS}
        for ns in self.schema.iter(f"{_S}ns"):
            prefix, uri = ns.get("prefix", ""), ns.get("uri", "")
            if prefix == "xml":
                continue
            if nsmap.get(prefix, uri) != uri:
                raise SchematronError(f"prefix {prefix!r} bound to two namespaces ({nsmap[prefix]}, {uri})")
            nsmap[prefix] = uri
        return nsmap

    def active_patterns(self) -> list[etree._Element]:
        patterns = [p for p in self.schema.iter(f"{_S}pattern") if p.get("abstract") != "true"]
        phase = self.phase or "#ALL"
        if phase == "#DEFAULT":
            phase = self.schema.get("defaultPhase") or "#ALL"
        if phase == "#ALL":
            return patterns
        for candidate in self.schema.iter(f"{_S}phase"):
            if candidate.get("id") == phase:
                ids = {a.get("pattern") for a in candidate.iter(f"{_S}active")}
                return [p for p in patterns if p.get("id") in ids]
        raise SchematronError(f"no phase {phase!r} in {self.source}")

    def build(self) -> etree._Element:
        out = etree.Element(f"{_X}stylesheet", nsmap=self.namespaces())
        out.set("version", "3.0")
        out.set("exclude-result-prefixes", "#all")
        out.set(f"{{{XML_NS}}}base", self.source.resolve().as_uri())
        etree.SubElement(out, f"{_X}output", method="xml", indent="no", encoding="UTF-8")
        self.global_lets(out)
        abstract_rules = {r.get("id", ""): r for r in self.schema.iter(f"{_S}rule") if r.get("abstract") == "true"}
        main = etree.SubElement(out, f"{_X}template", match="/")
        findings = etree.SubElement(main, "findings")
        for number, pattern in enumerate(self.active_patterns()):
            rules = [r for r in pattern.iter(f"{_S}rule") if r.get("abstract") != "true"]
            if not rules:
                continue
            mode = f"M{number}"
            etree.SubElement(findings, f"{_X}apply-templates", select="/", mode=mode)
            self.pattern(out, pattern, rules, mode, abstract_rules)
        return out

    def global_lets(self, out: etree._Element) -> None:
        seen: dict[str, str] = {}
        holders = [self.schema, *(p for p in self.schema.iter(f"{_S}pattern") if p.get("abstract") != "true")]
        for holder in holders:
            for let in holder.findall(f"{_S}let"):
                name, value = let.get("name", ""), let.get("value")
                if value is None:
                    raise SchematronError(f"let {name!r}: only lets with a value are supported")
                if name in seen:
                    if seen[name] != value:
                        raise SchematronError(f"global let {name!r} given two values")
                    continue
                seen[name] = value
                literal = _STRING.fullmatch(value.strip())
                if literal:
                    self.strings[name] = literal.group(2)
                etree.SubElement(out, f"{_X}variable", name=name, select=value)

    def pattern(self, out: etree._Element, pattern: etree._Element, rules: list[etree._Element], mode: str,
                abstract_rules: dict[str, etree._Element]) -> None:
        etree.SubElement(out, f"{_X}mode", name=mode, **{"on-no-match": "shallow-skip"})
        walk = etree.SubElement(out, f"{_X}template", match="/|*", mode=mode, priority="-10")
        etree.SubElement(walk, f"{_X}apply-templates", select="@*|*", mode=mode)
        etree.SubElement(out, f"{_X}template", match="@*", mode=mode, priority="-10")
        pattern_id = pattern.get("id") or mode
        for index, rule in enumerate(rules):
            context = rule.get("context")
            if not context:
                raise SchematronError(f"pattern {pattern_id!r}: a rule without context")
            template = etree.SubElement(out, f"{_X}template", match=context, mode=mode,
                                        priority=str(len(rules) - index))
            for item in _rule_body(rule, abstract_rules):
                if item.tag == f"{_S}let":
                    if item.get("value") is None:
                        raise SchematronError(f"let {item.get('name')!r}: only lets with a value are supported")
                    etree.SubElement(template, f"{_X}variable", name=item.get("name", ""), select=item.get("value"))
                else:
                    self.assertion(template, item, pattern_id, context, rule.get("subject"))
            etree.SubElement(template, f"{_X}apply-templates", select="@*|*", mode=mode)

    def assertion(self, template: etree._Element, item: etree._Element, pattern_id: str, context: str,
                  rule_subject: str | None) -> None:
        kind = "assert" if item.tag == f"{_S}assert" else "report"
        test = item.get("test")
        if not test:
            raise SchematronError(f"pattern {pattern_id!r}: an {kind} without test")
        for missing in self.missing_files(test):
            self.unchecked.append(Unchecked(pattern_id, context, missing))
            return
        number = len(self.assertions)
        self.assertions.append(Assertion(kind, pattern_id, context, test, item.get("role"), item.get("flag"),
                                         item.get("id")))
        if kind == "assert":
            choose = etree.SubElement(template, f"{_X}choose")
            etree.SubElement(choose, f"{_X}when", test=test)
            holder = etree.SubElement(choose, f"{_X}otherwise")
        else:
            holder = etree.SubElement(template, f"{_X}if", test=test)
        finding = etree.SubElement(holder, "f", n=str(number))
        subject = item.get("subject") or rule_subject
        location = etree.SubElement(finding, f"{_X}attribute", name="loc")
        location.set("select", f"path(({subject})[1])" if subject else "path(.)")
        self.message(finding, item)

    def missing_files(self, test: str) -> list[str]:
        """The files ``test`` reads with ``doc()``/``document()`` of a literal or of a global let holding one, that
        are not there (resolved against the schematron, as the stylesheet will)."""
        missing = []
        for match in _DOC_CALL.finditer(test):
            literal, variable = match.group("literal"), match.group("variable")
            name = literal[1:-1] if literal else self.strings.get(variable or "")
            if name and "://" not in name and not (self.source.parent / name).exists():
                missing.append(name)
        return missing

    def message(self, out: etree._Element, element: etree._Element) -> None:
        if element.text:
            etree.SubElement(out, f"{_X}text").text = element.text
        for child in element:
            if child.tag == f"{_S}value-of":
                etree.SubElement(out, f"{_X}value-of", select=child.get("select", "."))
            elif child.tag == f"{_S}name":
                etree.SubElement(out, f"{_X}value-of", select=f"name({child.get('path', '.')})")
            elif isinstance(child.tag, str):
                self.message(out, child)  # emph, dir, span...: their text
            if child.tail:
                etree.SubElement(out, f"{_X}text").text = child.tail


_STRING = re.compile(r"""(['"])(.*)\1""")
_DOC_CALL = re.compile(r"""\b(?:doc|document)\(\s*(?:(?P<literal>'[^']*'|"[^"]*")|\$(?P<variable>[\w.-]+))\s*\)""")


@dataclass(frozen=True)
class Compilation:
    stylesheet: etree._Element
    assertions: list[Assertion]  # numbered as the stylesheet's findings name them
    unchecked: list[Unchecked]


def compile_schematron(path: Path, phase: str | None = None) -> Compilation:
    """The XSLT 3 stylesheet of the schematron at ``path``, its asserts and reports, and those left out."""
    path = path.resolve()
    schema = _read_xml(path)
    if schema.tag != f"{_S}schema":
        raise SchematronError(f"{path}: not an ISO schematron (root {schema.tag})")
    binding = schema.get("queryBinding", "xslt")
    if binding.lower() not in ("xslt2", "xslt3", "xpath2", "xpath3", "xpath31"):
        raise SchematronError(f"{path}: queryBinding {binding!r} (this runner does XSLT 2 and 3)")
    _resolve_includes(schema, path, (path,))
    _instantiate(schema)
    builder = _Builder(schema, path, phase)
    stylesheet = builder.build()
    return Compilation(stylesheet, builder.assertions, builder.unchecked)


# --- running it with Saxon -------------------------------------------------------------------------------------

class _Compiled:
    def __init__(self, executable: Any, compilation: Compilation) -> None:
        self.executable = executable
        self.assertions = compilation.assertions
        self.unchecked = tuple(compilation.unchecked)


_SAXON: dict[str, Any] = {}
_COMPILED: dict[tuple[Path, str | None], _Compiled] = {}
_COMPILE_LOCK = threading.Lock()
_RUN_LOCK = threading.Lock()  # a PyXsltExecutable is not thread-safe: one run at a time (about 0.02 s each)
_STATS = {"compiles": 0}
_SCHEMAS: dict[Path, etree.XMLSchema] = {}


def compile_count() -> int:
    """How many schematrons this process has compiled (each one once, then cached)."""
    return _STATS["compiles"]


def _processor() -> Any:
    if "processor" not in _SAXON:
        from saxonche import PySaxonProcessor

        _SAXON["processor"] = PySaxonProcessor(license=False)
    return _SAXON["processor"]


def _compiled(path: Path, phase: str | None) -> _Compiled:
    key = (path.resolve(), phase)
    with _COMPILE_LOCK:
        found = _COMPILED.get(key)
        if found is not None:
            return found
        compilation = compile_schematron(key[0], phase)
        text = etree.tostring(compilation.stylesheet, encoding="unicode")
        xslt = _processor().new_xslt30_processor()
        try:
            executable = xslt.compile_stylesheet(stylesheet_text=text, encoding="utf-8")
        except Exception as exc:  # saxonche.PySaxonApiError: a static error of a query the schematron holds
            raise SchematronError(f"{key[0]}: does not compile to XSLT 3: {exc}") from None
        _STATS["compiles"] += 1
        compiled = _COMPILED[key] = _Compiled(executable, compilation)
        return compiled


_QNAME = re.compile(r"Q\{([^}]*)\}")
_PREFIXES = {CDA_NS: "cda:", "": "", "urn:hl7-org:sdtc": "sdtc:", "urn:ihe:pharm": "pharm:",
             "urn:oid:1.3.6.1.4.1.19376.1.3.2": "lab:", "http://www.w3.org/2001/XMLSchema-instance": "xsi:"}


def _readable_path(path: str) -> str:
    return _QNAME.sub(lambda m: _PREFIXES.get(m.group(1), m.group(0)), path)


def run_schematron(root: etree._Element, schematron: Path,
                   phase: str | None = None) -> tuple[list[Finding], tuple[Unchecked, ...]]:
    """The findings of the schematron at ``schematron`` on the document ``root`` (read by ``xmlsafe``), and the
    rules it could not check."""
    compiled = _compiled(schematron, phase)
    processor = _processor()
    text = etree.tostring(root, encoding="unicode")
    with _RUN_LOCK:
        node = processor.parse_xml(xml_text=text, encoding="utf-8")
        try:
            result = compiled.executable.transform_to_string(xdm_node=node)
        except Exception as exc:  # saxonche.PySaxonApiError: a dynamic error (a value set file unreadable...)
            raise SchematronError(f"{schematron}: failed on this document: {exc}") from None
    if not result:
        raise SchematronError(f"{schematron}: no result")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=True)
    out = etree.fromstring(result.encode("utf-8"), parser)
    findings = []
    for element in out.iter("f"):
        meta = compiled.assertions[int(element.get("n", "0"))]
        findings.append(Finding(kind=meta.kind, pattern=meta.pattern, location=_readable_path(element.get("loc", "")),
                                message=" ".join("".join(element.itertext()).split()), role=meta.role,
                                flag=meta.flag, id=meta.id, context=meta.context, test=meta.test))
    return findings, compiled.unchecked


# --- the schema ------------------------------------------------------------------------------------------------

def _schema(path: Path) -> etree.XMLSchema:
    path = path.resolve()
    with _COMPILE_LOCK:
        schema = _SCHEMAS.get(path)
        if schema is None:
            parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
            try:
                schema = _SCHEMAS[path] = etree.XMLSchema(etree.parse(str(path), parser))
            except (OSError, etree.XMLSchemaParseError, etree.XMLSyntaxError) as exc:
                raise SchematronError(f"{path}: {exc}") from None
        return schema


def validate_xsd(root: etree._Element, xsd: Path) -> list[XsdError]:
    """The errors of ``root`` against the XML schema at ``xsd`` (``CDA_extended.xsd``)."""
    schema = _schema(xsd)
    tree = root.getroottree()
    if schema.validate(tree):
        return []
    return [XsdError(e.line, _element_path(tree, e.path), " ".join(e.message.split())) for e in schema.error_log]


def _element_path(tree: etree._ElementTree, path: str | None) -> str:
    """libxml2's ``/*/*[14]/*`` as the schematron findings write it: ``/cda:ClinicalDocument[1]/cda:...``."""
    found = tree.xpath(path) if path else []
    if not found or not isinstance(found[0], etree._Element):
        return path or ""
    steps = []
    node: etree._Element | None = found[0]
    while node is not None:
        name = etree.QName(node)
        index = 1 + sum(1 for _ in node.itersiblings(node.tag, preceding=True))
        prefix = _PREFIXES.get(name.namespace or "", f"Q{{{name.namespace}}}")
        steps.append(f"{prefix}{name.localname}[{index}]")
        node = node.getparent()
    return "/" + "/".join(reversed(steps))


# --- checking a document ---------------------------------------------------------------------------------------

def check_material(material: Path) -> Path:
    """``material`` if it holds a TestContenuCDA checkout (``schematrons/``, ``infrastructure/``), else
    ``MaterialMissing`` saying what is missing."""
    for part in ("schematrons", SCHEMA):
        if not (material / part).exists():
            raise MaterialMissing(f"CDA conformance material not found: {material / part} is missing (a checkout of "
                                  "ansforge/TestContenuCDA-3-0; --material or DUI_CDA_MATERIAL)")
    return material


def read_document(xml: bytes) -> etree._Element:
    """The root of a CDA document, read the hardened way; ``Invalid`` or ``TooLarge`` saying why not."""
    if len(xml) > MAX_DOCUMENT_BYTES:
        raise TooLarge(f"The document is larger than {MAX_DOCUMENT_BYTES} bytes")
    try:
        root = parse_untrusted(xml, max_bytes=MAX_DOCUMENT_BYTES)
    except UnsafeXml as exc:
        if "nested deeper" in str(exc):
            raise TooLarge(f"The document is refused: {exc}") from None
        raise Invalid(f"The document is refused: {exc}") from None
    return root


def model_of(root: etree._Element) -> tuple[str, str]:
    """The model name and the schematron (relative to the material) of a CDA document, by its templateIds."""
    if root.tag != f"{{{CDA_NS}}}ClinicalDocument":
        raise Unprocessable("Not a CDA document: the root is not {urn:hl7-org:v3}ClinicalDocument")
    declared = [t.get("root") for t in root.findall(f"{{{CDA_NS}}}templateId")]
    for template, name, schematron in MODELS:
        if template in declared:
            return name, schematron
    known = ", ".join(f"{t} ({n})" for t, n, _ in MODELS)
    raise Unprocessable(f"No known CDA model among the document's templateIds; known: {known}")


def check(xml: bytes, material: Path, *, phase: str | None = None) -> Report:
    """Check a CDA document against ``CDA_extended.xsd`` and the schematron of its model (``MODELS``)."""
    check_material(material)
    root = read_document(xml)
    model, schematron = model_of(root)
    xsd_errors = validate_xsd(root, material / SCHEMA)
    findings, unchecked = run_schematron(root, material / schematron, phase)
    return Report(model=model, schematron=schematron, xsd_errors=tuple(xsd_errors), findings=tuple(findings),
                  unchecked=unchecked)


def lines(report: Report, *, warnings: bool = False) -> Iterable[str]:
    """One line per XSD error and per finding (warnings only when asked)."""
    for error in report.xsd_errors:
        yield error.text()
    for finding in report.findings:
        if warnings or not finding.is_warning:
            yield finding.line()
