"""Generate the compact FHIR R4 (4.0.1) machine facts the service needs.

Reads the official definitions (CC0) from ``../shared/conformance/fhir-r4-core`` and writes, under
``dui/fhir/definitions/r4/``:

- ``structure.json``: every resource and data type with its elements (path, min, max, types,
  summary flag, required binding, content reference) and the regex of every primitive type;
- ``search_parameters.json``: the search parameters of every resource type, with the FHIRPath
  expression restricted to that type (``.where(resolve() is X)`` becomes a target filter, since
  fhirpathpy does not implement ``resolve()``);
- ``valuesets.json``: the codes of the value sets bound *required* to ``code`` elements, when they
  can be enumerated from the core code systems;
- ``compartment_patient.json``: the Patient compartment (resource type -> parameters).

Only machine facts are kept (paths, types, cardinalities, expressions, bindings, codes); no prose.
Run: ``python scripts/generate_r4_definitions.py [path/to/fhir-r4-core]``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = ROOT.parent / "shared" / "conformance" / "fhir-r4-core"
OUT = ROOT / "dui" / "fhir" / "definitions" / "r4"
FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"


def load(source: Path, name: str) -> dict:
    with open(source / name, encoding="utf-8") as f:
        return json.load(f)


def type_code(t: dict) -> str:
    for ext in t.get("extension", []):
        if ext["url"] == FHIR_TYPE_EXT:
            return ext.get("valueUrl") or ext.get("valueUri")
    return t["code"]


def structures(source: Path) -> tuple[dict, dict, set[str]]:
    """Types and their elements, primitive regexes, and the value sets bound required to codes."""
    types: dict[str, dict] = {}
    regexes: dict[str, str] = {}
    bound_sets: set[str] = set()
    schema = load(source, "fhir.schema.json")["definitions"]
    dropped: list[str] = []
    for fname in ("profiles-types.json", "profiles-resources.json"):
        for entry in load(source, fname)["entry"]:
            sd = entry["resource"]
            if sd["resourceType"] != "StructureDefinition" or sd["kind"] == "logical":
                continue
            if sd.get("derivation") == "constraint":
                continue  # profiles (SimpleQuantity, MoneyQuantity...) are not types on the wire
            name = sd["id"]
            elements: dict[str, list] = {}
            declared = {el["path"] for el in sd.get("differential", {}).get("element", [])}
            added: list[str] = []
            for el in sd["snapshot"]["element"][1:]:
                path = el["path"]
                # The redistributed snapshots carry a few elements that are not FHIR R4 (later-version
                # elements back-ported by the redistributor, such as Binary.url or Meta.project). An
                # element of the type's own that its differential does not declare is one of them.
                own = el["base"]["path"].split(".")[0] == name
                if (
                    (own and path not in declared)
                    or not in_json_schema(schema, path)
                    or any(path.startswith(a + ".") for a in added)
                ):
                    added.append(path)
                    dropped.append(path)
                    continue
                if sd["kind"] == "primitive-type":
                    if path.endswith(".value"):
                        for t in el.get("type", []):
                            for ext in t.get("extension", []):
                                if ext["url"] == REGEX_EXT:
                                    regexes[name] = ext["valueString"]
                    continue
                binding = el.get("binding") or {}
                codes = [type_code(t) for t in el.get("type", [])]
                if sd["kind"] == "resource" and path == name + ".id":
                    codes = ["id"]  # the snapshot types it System.String; on the wire it is an id
                vs = None
                if binding.get("strength") == "required" and codes == ["code"] and binding.get("valueSet"):
                    vs = binding["valueSet"].split("|")[0]
                    bound_sets.add(vs)
                ref = el.get("contentReference")
                elements[path] = [
                    el["min"],
                    el["max"],
                    codes,
                    1 if el.get("isSummary") else 0,
                    vs,
                    ref[1:] if ref else None,
                ]
            types[name] = {
                "kind": sd["kind"],
                "abstract": bool(sd.get("abstract")),
                "base": (sd.get("baseDefinition") or "").rsplit("/", 1)[-1] or None,
                "elements": elements,
            }
    print("left out (not FHIR R4):", ", ".join(p for p in dropped if not any(p.startswith(q + ".") for q in dropped)))
    return types, regexes, bound_sets


def in_json_schema(schema: dict, path: str) -> bool:
    """False when the official JSON schema has the parent of ``path`` and not ``path`` itself."""
    segments = path.split(".")
    if len(segments) < 2:
        return True
    parent = segments[0] if len(segments) == 2 else segments[0] + "_" + segments[-2][:1].upper() + segments[-2][1:]
    # Backbone definitions whose names collide are numbered (ClaimResponse_Detail1): try them all.
    candidates = [d for n, d in schema.items() if n == parent or (n.startswith(parent) and n[len(parent):].isdigit())]
    candidates = [d for d in candidates if "properties" in d]
    if not candidates:
        return True
    name = segments[-1]
    for definition in candidates:
        if name.endswith("[x]"):
            if any(p.startswith(name[:-3]) for p in definition["properties"]):
                return True
        elif name in definition["properties"]:
            return True
    return False


def split_union(expression: str) -> list[str]:
    """Split a FHIRPath expression on top-level ``|``."""
    parts, depth, quote, current = [], 0, False, []
    for ch in expression:
        if ch == "'" :
            quote = not quote
        elif not quote and ch == "(":
            depth += 1
        elif not quote and ch == ")":
            depth -= 1
        if ch == "|" and depth == 0 and not quote:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(ch)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


# Known errors of the R4 definitions, corrected here (each one is listed in the README of the output).
COMPONENT_ERRATA = {
    # The two component expressions are swapped: relatesto is the target (a reference), relation the code.
    "http://hl7.org/fhir/SearchParameter/DocumentReference-relationship": {"relatesto": "target", "relation": "code"},
}

RESOLVE_IS = re.compile(r"\.where\(resolve\(\) is ([A-Za-z]+)\)")
LEADING_TYPE = re.compile(r"^\(*([A-Z][A-Za-z]+)(?:[.\s)]|$)")


def search_parameters(source: Path, resource_types: list[str]) -> dict:
    by_type: dict[str, dict] = {t: {} for t in resource_types}
    bundle = load(source, "search-parameters.json")
    url_to_code = {e["resource"]["url"]: e["resource"]["code"] for e in bundle["entry"]}
    for entry in bundle["entry"]:
        sp = entry["resource"]
        if sp["type"] == "special" or not sp.get("expression"):
            continue  # _text, _content, _query, _has, near: handled (or refused) by the query layer
        bases = sp["base"]
        if bases in (["Resource"], ["DomainResource"]):
            bases = resource_types
        parts = split_union(sp["expression"])
        for rtype in bases:
            if rtype not in by_type:
                continue
            exprs = []
            for part in parts:
                m = LEADING_TYPE.match(part)
                owner = m.group(1) if m else None
                if owner not in (rtype, "Resource", "DomainResource"):
                    continue
                target = None
                r = RESOLVE_IS.search(part)
                if r:
                    target = r.group(1)
                    part = RESOLVE_IS.sub("", part)
                if owner in ("Resource", "DomainResource"):
                    part = part.replace(owner + ".", rtype + ".", 1)
                exprs.append([part, target])
            if not exprs:
                continue
            item = {"type": sp["type"], "expr": exprs, "url": sp["url"]}
            if sp.get("target"):
                item["target"] = sorted(sp["target"])
            if sp.get("component"):
                fixes = COMPONENT_ERRATA.get(sp["url"], {})
                item["component"] = []
                for c in sp["component"]:
                    comp_code = url_to_code.get(c["definition"], c["definition"])
                    item["component"].append([comp_code, fixes.get(comp_code, c["expression"])])
            if sp.get("modifier"):
                item["modifier"] = sp["modifier"]
            if sp.get("comparator"):
                item["comparator"] = sp["comparator"]
            by_type[rtype][sp["code"]] = item
    return {t: dict(sorted(p.items())) for t, p in by_type.items()}


def value_sets(source: Path, wanted: set[str]) -> dict:
    cs_codes: dict[str, list[str]] = {}
    vs_by_url: dict[str, dict] = {}

    def concepts(items: list[dict]) -> list[str]:
        out = []
        for c in items:
            out.append(c["code"])
            out.extend(concepts(c.get("concept", [])))
        return out

    for fname in ("valuesets.json", "v3-codesystems.json", "v2-tables.json"):
        for entry in load(source, fname)["entry"]:
            r = entry["resource"]
            if r["resourceType"] == "CodeSystem" and r.get("content") == "complete":
                cs_codes[r["url"]] = concepts(r.get("concept", []))
            elif r["resourceType"] == "ValueSet":
                vs_by_url[r["url"]] = r

    resource_names = None

    def expand(url: str, seen: set[str]) -> list[str] | None:
        if url in seen:
            return None
        vs = vs_by_url.get(url)
        if vs is None or "compose" not in vs:
            return None
        codes: list[str] = []
        for inc in vs["compose"].get("include", []):
            if inc.get("filter"):
                return None
            if inc.get("valueSet"):
                for sub in inc["valueSet"]:
                    sub_codes = expand(sub.split("|")[0], seen | {url})
                    if sub_codes is None:
                        return None
                    codes.extend(sub_codes)
            if "system" in inc:
                if inc.get("concept"):
                    codes.extend(c["code"] for c in inc["concept"])
                elif inc["system"] in cs_codes:
                    codes.extend(cs_codes[inc["system"]])
                else:
                    return None
        for exc in vs["compose"].get("exclude", []):
            if exc.get("concept"):
                drop = {c["code"] for c in exc["concept"]}
                codes = [c for c in codes if c not in drop]
            else:
                return None
        return sorted(set(codes))

    out = {}
    for url in sorted(wanted):
        codes = expand(url, set())
        if codes:
            out[url] = codes
    del resource_names
    return out


def value_set_systems(source: Path, wanted: set[str]) -> dict:
    """The one code system of each required value set drawn from a single system (for implied systems)."""
    out = {}
    for fname in ("valuesets.json",):
        for entry in load(source, fname)["entry"]:
            vs = entry["resource"]
            if vs["resourceType"] != "ValueSet" or vs["url"] not in wanted:
                continue
            systems = {inc.get("system") for inc in vs.get("compose", {}).get("include", [])}
            if len(systems) == 1 and None not in systems:
                out[vs["url"]] = systems.pop()
    return dict(sorted(out.items()))


def compartment(source: Path) -> dict:
    cd = load(source, "compartmentdefinition-patient.json")
    return {r["code"]: r["param"] for r in cd["resource"] if r.get("param")}


def main() -> None:
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SOURCE
    version = (source / "version.info").read_text().strip()
    types, regexes, bound = structures(source)
    # A resource type the JSON schema does not list is not R4's: the redistributed snapshots carry SubscriptionStatus
    # (R4B and later), left out with its search parameters.
    official = set(load(source, "fhir.schema.json")["discriminator"]["mapping"])
    later = sorted(n for n, t in types.items() if t["kind"] == "resource" and not t["abstract"] and n not in official)
    if later:
        print(f"left out, not resource types of R4: {', '.join(later)}")
    types = {n: t for n, t in types.items() if n not in later}
    resource_types = sorted(
        n for n, t in types.items() if t["kind"] == "resource" and not t["abstract"]
    )
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {"fhirVersion": "4.0.1", "source": "HL7 FHIR R4 definitions (CC0)", "version.info": version}

    def write(name: str, data: dict) -> None:
        with open(OUT / name, "w", encoding="utf-8") as f:
            json.dump({"_provenance": meta, **data}, f, separators=(",", ":"), sort_keys=False)
            f.write("\n")

    write("structure.json", {"resourceTypes": resource_types, "regex": regexes, "types": types})
    write("search_parameters.json", {"parameters": search_parameters(source, resource_types)})
    write("valuesets.json", {"codes": value_sets(source, bound), "systems": value_set_systems(source, bound)})
    write("compartment_patient.json", {"members": compartment(source)})
    print(f"wrote {len(types)} types, {len(resource_types)} resource types to {OUT}")


if __name__ == "__main__":
    main()
