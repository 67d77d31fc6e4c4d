"""Generate the base FHIR R4 (4.0.1) conformance data of ``fhir_profiles``.

Reads the official definitions (CC0) from ``../shared/conformance/fhir-r4-core`` and writes, under
``fhir_profiles/r4/``:

- ``structure.json.gz``: every StructureDefinition of R4 (types, resources, core profiles, core extensions)
  with its snapshot, reduced to machine facts: ids, paths, slice names, cardinalities, base, types and target
  profiles, content references, bindings, invariants (key, severity, expression, the best-practice flag),
  modifier and summary flags,
  fixed and pattern values, slicing;
- ``terminology.json.gz``: every ValueSet (compose with concept codes and filters, expansion codes) and
  CodeSystem (content, case sensitivity, hierarchy, nested concept codes with their display and code/boolean
  properties).

No prose (short, definition, comment, requirements, human, xpath, designation, the displays of value sets) is
kept; the display of a code system's concept is kept, since it is what the terminology operations answer with.
The output is deterministic: re-running on the same source gives the same bytes. Elements of the redistributed snapshots
that are not FHIR R4 are left out, as in ``generate_r4_definitions.py`` (same test, listed when run).

Run: ``python scripts/generate_profile_base.py [path/to/fhir-r4-core] [output folder]``.
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generate_r4_definitions import in_json_schema  # the sibling script

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = ROOT.parent / "shared" / "conformance" / "fhir-r4-core"
DEFAULT_OUT = ROOT / "fhir_profiles" / "r4"

SD_FILES = ("profiles-types.json", "profiles-resources.json", "extension-definitions.json")
TERMINOLOGY_FILES = ("valuesets.json", "v2-tables.json", "v3-codesystems.json")
SD_KEYS = ("resourceType", "id", "url", "version", "name", "fhirVersion", "kind", "abstract", "type",
           "baseDefinition", "derivation", "context", "contextInvariant")
TYPE_EXTENSIONS = {
    "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type",
    "http://hl7.org/fhir/StructureDefinition/regex",
}
CONCEPT_PROPERTY_VALUES = ("valueCode", "valueBoolean", "valueInteger")


BEST_PRACTICE = "http://hl7.org/fhir/StructureDefinition/elementdefinition-bestpractice"


def is_best_practice(constraint: dict[str, Any]) -> bool:
    """A "should" of the spec (dom-6, con-3): kept as the flag it is, so a validator can tell it apart."""
    return any(x.get("url") == BEST_PRACTICE and x.get("valueBoolean") is True
               for x in constraint.get("extension", []))

def load(source: Path, name: str) -> dict[str, Any]:
    with open(source / name, encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def element_type(t: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    extensions = [x for x in t.get("extension", []) if x["url"] in TYPE_EXTENSIONS]
    if extensions:
        out["extension"] = extensions
    out["code"] = t["code"]
    for key in ("profile", "targetProfile", "aggregation", "versioning"):
        if key in t:
            out[key] = t[key]
    return out


def element(el: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"id": el["id"], "path": el["path"]}
    if "sliceName" in el:
        out["sliceName"] = el["sliceName"]
    out["min"] = el["min"]
    out["max"] = el["max"]
    out["base"] = {k: el["base"][k] for k in ("path", "min", "max")}
    if "contentReference" in el:
        out["contentReference"] = el["contentReference"]
    if "type" in el:
        out["type"] = [element_type(t) for t in el["type"]]
    for key, value in el.items():
        if key.startswith(("fixed", "pattern", "minValue", "maxValue", "defaultValue")) or key == "maxLength":
            out[key] = value
    if "constraint" in el:
        out["constraint"] = [
            {**{k: c[k] for k in ("key", "severity", "expression", "source") if k in c},
             **({"extension": [{"url": BEST_PRACTICE, "valueBoolean": True}]} if is_best_practice(c) else {})}
            for c in el["constraint"]
        ]
    if "isModifier" in el:
        out["isModifier"] = el["isModifier"]
    if "isSummary" in el:
        out["isSummary"] = el["isSummary"]
    if "binding" in el:
        out["binding"] = {k: el["binding"][k] for k in ("strength", "valueSet") if k in el["binding"]}
    if "slicing" in el:
        out["slicing"] = {k: el["slicing"][k] for k in ("discriminator", "ordered", "rules") if k in el["slicing"]}
    return out


def not_r4(sd: dict[str, Any], schema: dict[str, Any]) -> set[str]:
    """Paths of a specialization's snapshot that are not FHIR R4 (back-ported by the redistributor)."""
    declared = {el["path"] for el in sd.get("differential", {}).get("element", [])}
    name = sd["type"]
    dropped: set[str] = set()
    for el in sd["snapshot"]["element"][1:]:
        path = el["path"]
        own = el["base"]["path"].split(".")[0] == name
        if (own and path not in declared) or not in_json_schema(schema, path):
            dropped.add(path)
    return dropped


def under(path: str, roots: set[str]) -> bool:
    parts = path.split(".")
    return any(".".join(parts[:i]) in roots for i in range(2, len(parts) + 1))


def structure_definitions(source: Path) -> tuple[list[dict[str, Any]], list[str]]:
    schema = load(source, "fhir.schema.json")["definitions"]
    raw = [
        entry["resource"]
        for name in SD_FILES
        for entry in load(source, name)["entry"]
        if entry["resource"]["resourceType"] == "StructureDefinition"
    ]
    dropped: set[str] = set()
    for sd in raw:
        if sd.get("derivation") == "specialization" and sd["kind"] != "logical":
            dropped |= not_r4(sd, schema)
    out = []
    for sd in raw:
        reduced = {k: sd[k] for k in SD_KEYS if k in sd}
        elements = [el for el in sd["snapshot"]["element"] if not under(el["path"], dropped)]
        reduced["snapshot"] = {"element": [element(el) for el in elements]}
        out.append(reduced)
    out.sort(key=lambda sd: sd["url"])
    roots = sorted(p for p in dropped if not under(p.rsplit(".", 1)[0], dropped))
    return out, roots


def concepts(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for c in items:
        item: dict[str, Any] = {"code": c["code"]}
        if isinstance(c.get("display"), str):
            item["display"] = c["display"]  # what $lookup and $expand answer with (docs/fhir-api.md, Terminology)
        props = [
            {"code": p["code"], **{k: p[k] for k in CONCEPT_PROPERTY_VALUES if k in p}}
            for p in c.get("property", [])
            if any(k in p for k in CONCEPT_PROPERTY_VALUES)
        ]
        if props:
            item["property"] = props
        if c.get("concept"):
            item["concept"] = concepts(c["concept"])
        out.append(item)
    return out


def compose_part(inc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: inc[k] for k in ("system", "version") if k in inc}
    if "concept" in inc:
        out["concept"] = [{"code": c["code"]} for c in inc["concept"]]
    if "filter" in inc:
        out["filter"] = [{k: f[k] for k in ("property", "op", "value")} for f in inc["filter"]]
    if "valueSet" in inc:
        out["valueSet"] = inc["valueSet"]
    return out


def contains(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for c in items:
        if "code" in c:
            out.append({k: c[k] for k in ("system", "version", "code", "abstract", "inactive") if k in c})
        out.extend(contains(c.get("contains", [])))
    return out


def value_set(vs: dict[str, Any]) -> dict[str, Any]:
    out = {k: vs[k] for k in ("resourceType", "id", "url", "version", "name") if k in vs}
    if "compose" in vs:
        compose = {part: [compose_part(i) for i in vs["compose"][part]] for part in ("include", "exclude")
                   if part in vs["compose"]}
        if "inactive" in vs["compose"]:
            compose["inactive"] = vs["compose"]["inactive"]
        out["compose"] = compose
    if "expansion" in vs:
        out["expansion"] = {"contains": contains(vs["expansion"].get("contains", []))}
    return out


def code_system(cs: dict[str, Any]) -> dict[str, Any]:
    keys = ("resourceType", "id", "url", "version", "name", "content", "caseSensitive", "hierarchyMeaning",
            "valueSet", "supplements")
    out = {k: cs[k] for k in keys if k in cs}
    if "concept" in cs:
        out["concept"] = concepts(cs["concept"])
    return out


def terminology(source: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    value_sets: dict[str, dict[str, Any]] = {}
    code_systems: dict[str, dict[str, Any]] = {}
    for name in TERMINOLOGY_FILES:
        for entry in load(source, name)["entry"]:
            r = entry["resource"]
            if r["resourceType"] == "ValueSet":
                value_sets.setdefault(r["url"], value_set(r))
            elif r["resourceType"] == "CodeSystem":
                code_systems.setdefault(r["url"], code_system(r))
    return [value_sets[u] for u in sorted(value_sets)], [code_systems[u] for u in sorted(code_systems)]


def write(path: Path, data: dict[str, Any]) -> int:
    """Deterministic gzip (no name, no timestamp) of compact, key-ordered JSON; returns the compressed size."""
    raw = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    with open(path, "wb") as f, gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0, compresslevel=9) as gz:
        gz.write(raw)
    return path.stat().st_size


def main(argv: list[str]) -> None:
    source = Path(argv[0]) if argv else DEFAULT_SOURCE
    out = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT
    info = dict(
        line.split("=", 1) for line in (source / "version.info").read_text().splitlines() if "=" in line
    )
    provenance = {
        "fhirVersion": info["version"],
        "buildId": info["buildId"],
        "date": info["date"],
        "source": "HL7 FHIR R4 definitions (CC0), machine facts only",
    }
    sds, left_out = structure_definitions(source)
    value_sets, code_systems = terminology(source)
    out.mkdir(parents=True, exist_ok=True)
    size_sd = write(out / "structure.json.gz", {"_provenance": provenance, "structureDefinitions": sds})
    size_tx = write(out / "terminology.json.gz",
                    {"_provenance": provenance, "valueSets": value_sets, "codeSystems": code_systems})
    print("left out (not FHIR R4):", ", ".join(left_out))
    print(f"structure.json.gz: {len(sds)} StructureDefinitions, {size_sd:,} bytes")
    print(f"terminology.json.gz: {len(value_sets)} ValueSets, {len(code_systems)} CodeSystems, {size_tx:,} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
