"""``_summary`` and ``_elements``: returning part of each resource (http://hl7.org/fhir/R4/search.html#summary).

A shortened resource carries the ``SUBSETTED`` tag, so that nobody mistakes it for the whole and
writes it back. Summary elements are those the R4 definitions flag ``isSummary``, recursively into
backbone elements; mandatory elements are always kept.
"""

from __future__ import annotations

from typing import Any

from dui.fhir.definitions import R4

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED",
             "display": "subsetted"}
ALWAYS = ("resourceType", "id", "meta")


def shape(resource: dict[str, Any], defs: R4, summary: str | None, elements: tuple[str, ...] | None) -> dict[str, Any]:
    """The part of ``resource`` a client asked for (the resource itself when nothing is asked)."""
    rtype = resource.get("resourceType", "")
    if elements is not None:
        wanted = set(elements) | set(ALWAYS) | _mandatory(defs, rtype)
        shaped = {k: v for k, v in resource.items() if k.lstrip("_") in wanted or _choice_of(defs, rtype, k, wanted)}
        return _tagged(shaped)
    if summary == "true":
        return _tagged(_summary(defs, rtype, resource, top=True))
    if summary == "text":
        keep = {"text", *ALWAYS} | _mandatory(defs, rtype)
        return _tagged({k: v for k, v in resource.items() if k.lstrip("_") in keep})
    if summary == "data":
        return _tagged({k: v for k, v in resource.items() if k != "text"})
    return resource


def _summary(defs: R4, path: str, node: dict[str, Any], top: bool) -> dict[str, Any]:
    children = defs.children(path)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if top and key in ALWAYS:
            out[key] = value
            continue
        name = key.lstrip("_")
        el = children.get(name) or next((c for c in children.values() if c.is_choice and name.startswith(c.name)),
                                        None)
        if el is None or not (el.summary or el.min >= 1):
            continue
        if el.types in (("BackboneElement",),) and isinstance(value, list | dict):
            items = value if isinstance(value, list) else [value]
            shaped = [_summary(defs, el.path, item, top=False) if isinstance(item, dict) else item for item in items]
            out[key] = shaped if isinstance(value, list) else shaped[0]
        else:
            out[key] = value
    return out


def _mandatory(defs: R4, rtype: str) -> set[str]:
    return {name for name, el in defs.children(rtype).items() if el.min >= 1}


def _choice_of(defs: R4, rtype: str, key: str, wanted: set[str]) -> bool:
    children = defs.children(rtype)
    return any(c.is_choice and c.name in wanted and key.lstrip("_").startswith(c.name) for c in children.values())


def _tagged(resource: dict[str, Any]) -> dict[str, Any]:
    meta = dict(resource.get("meta") or {})
    tags = [t for t in meta.get("tag", []) if not (isinstance(t, dict) and t.get("code") == "SUBSETTED")]
    meta["tag"] = [*tags, SUBSETTED]
    out: dict[str, Any] = {k: resource[k] for k in ("resourceType", "id") if k in resource}
    out["meta"] = meta
    out.update((k, v) for k, v in resource.items() if k not in out)
    return out
