"""Profiles as data, with a small loader. No profile ships yet; see README.md.

This package never imports ``dui``, Flask or SQLAlchemy.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

__all__ = ["CANONICAL", "definitions"]

# The canonical base of the DUI's own conformance resources (StructureDefinitions, CodeSystems,
# OperationDefinitions): ``{CANONICAL}/StructureDefinition/<id>``.
CANONICAL = "https://dui.example.org/fhir"


def definitions() -> list[dict[str, Any]]:
    """The profile resources shipped with the package (none yet)."""
    import json

    folder = resources.files(__name__).joinpath("definitions")
    if not folder.is_dir():
        return []
    return [json.loads(item.read_text(encoding="utf-8")) for item in folder.iterdir() if item.name.endswith(".json")]
