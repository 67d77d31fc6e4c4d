"""Small synthetic profiles for the snapshot and validator tests: differentials over core R4 types."""

from __future__ import annotations

from typing import Any

from fhir_profiles.context import Context
from fhir_profiles.package import Package

R4 = "http://hl7.org/fhir/StructureDefinition/"
EX = "http://example.org/fhir/StructureDefinition/"


def el(element_id: str, **facts: Any) -> dict[str, Any]:
    """A differential element; its path is its id without slice names."""
    path = ".".join(segment.split(":")[0] for segment in element_id.split("."))
    slice_name = element_id.rsplit(".", 1)[-1].partition(":")[2]
    extra = {"sliceName": slice_name} if slice_name and "sliceName" not in facts else {}
    return {"id": element_id, "path": path, **extra, **facts}


def profile(name: str, type_: str, *elements: dict[str, Any], base: str | None = None,
            kind: str = "resource", **more: Any) -> dict[str, Any]:
    return {
        "resourceType": "StructureDefinition", "id": name, "url": EX + name, "name": name, "status": "active",
        "kind": kind, "abstract": False, "type": type_, "derivation": "constraint",
        "baseDefinition": base or R4 + type_,
        "differential": {"element": [{"id": type_, "path": type_}, *elements]}, **more,
    }


def extension(name: str, value_types: list[str], contexts: tuple[str, ...] = ("Element",),
              modifier: bool = False) -> dict[str, Any]:
    """A simple extension: one value of ``value_types``, usable on ``contexts``."""
    sd = profile(
        name, "Extension",
        el("Extension.extension", max="0"),
        el("Extension.url", fixedUri=EX + name),
        el("Extension.value[x]", min=1, type=[{"code": t} for t in value_types]),
        kind="complex-type",
        context=[{"type": "element", "expression": c} for c in contexts],
    )
    if modifier:
        sd["differential"]["element"][0]["isModifier"] = True
    return sd


def context(*resources: dict[str, Any]) -> Context:
    return Context([Package(name="example.test", version="1.0.0", resources=tuple(resources))], shipped=False)
