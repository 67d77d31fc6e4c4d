"""Profiles as data, with a small loader: the DUI's own definitions (``definitions/``) and the validator; see
README.md.

This package never imports ``dui``, Flask or SQLAlchemy.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

__all__ = ["CANONICAL", "definitions"]

# The canonical base of the DUI's own conformance resources: ``{CANONICAL}/StructureDefinition/<id>``. The
# OperationDefinitions and SearchParameters ship under it too; a server publishes those (its API, not its data) under
# a base of its own.
CANONICAL = "https://dui.example.org/fhir"


def definitions() -> list[dict[str, Any]]:
    """The conformance resources shipped with the package, as shipped."""
    import json

    folder = resources.files(__name__).joinpath("definitions")
    if not folder.is_dir():
        return []
    return [json.loads(item.read_text(encoding="utf-8")) for item in folder.iterdir() if item.name.endswith(".json")]
