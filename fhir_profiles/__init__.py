"""Profiles as data, with a small loader: the DUI's own definitions (``definitions/``) and the validator; see
README.md.

This package never imports ``dui``, Flask or SQLAlchemy.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

__all__ = ["CANONICAL", "GUIDE", "definitions", "guide"]

# The canonical base of the DUI's own conformance resources: ``{CANONICAL}/StructureDefinition/<id>``. The
# OperationDefinitions and SearchParameters ship under it too; a server publishes those (its API, not its data) under
# a base of its own.
CANONICAL = "https://dui.example.org/fhir"


VERSION = "0.1.0"  # of the shipped definitions (each says so), and of their ImplementationGuide
GUIDE = f"{CANONICAL}/ImplementationGuide/dui"
# What the shipped definitions build on: the TDDUI transcriptions derive from FR Core 2.1.0's profiles
DEPENDS_ON = ({"id": "fr-core", "uri": "https://hl7.fr/ig/fhir/core/ImplementationGuide/hl7.fhir.fr.core",
               "packageId": "hl7.fhir.fr.core", "version": "2.1.0"},)


def definitions() -> list[dict[str, Any]]:
    """The conformance resources shipped with the package, as shipped, and the ImplementationGuide that lists them
    (``guide``)."""
    import json

    folder = resources.files(__name__).joinpath("definitions")
    if not folder.is_dir():
        return []
    found = [json.loads(item.read_text(encoding="utf-8")) for item in folder.iterdir() if item.name.endswith(".json")]
    return [*found, guide(found)]


def guide(shipped: list[dict[str, Any]]) -> dict[str, Any]:
    """The ImplementationGuide of the shipped definitions, made from them: each one listed, so the list cannot
    drift from the folder."""
    listed = sorted(shipped, key=lambda r: (str(r.get("resourceType")), str(r.get("id"))))
    return {
        "resourceType": "ImplementationGuide",
        "id": "dui",
        "url": GUIDE,
        "version": VERSION,
        "name": "DUIBackend",
        "title": "DUI backend: the service's own definitions",
        "status": "active",
        "publisher": "DUI backend",
        "description": "The profiles, extensions, code systems, value sets, search parameters and operations of the "
                       "DUI backend (the resident's record of an EHPAD), and its transcriptions of the TDDUI profiles "
                       "and of the R4 vital-sign profiles.",
        "packageId": "dui",
        "fhirVersion": ["4.0.1"],
        "dependsOn": [dict(item) for item in DEPENDS_ON],
        "definition": {"resource": [
            {"reference": {"reference": f"{r['resourceType']}/{r['id']}"},
             "name": str(r.get("title") or r.get("name") or r["id"]), "exampleBoolean": False}
            for r in listed]},
    }
