"""The FHIR R4 (4.0.1) machine facts the service runs on, generated from the official definitions.

The JSON files next to this module are produced by ``scripts/generate_r4_definitions.py`` from the
HL7 FHIR R4 definitions (CC0); see ``r4/README.md`` for provenance. They are loaded once, lazily.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any


@dataclass(frozen=True, slots=True)
class ElementDef:
    """One element of a resource or data type (from the StructureDefinition snapshot)."""

    path: str
    min: int
    max: str
    types: tuple[str, ...]
    summary: bool
    value_set: str | None  # required binding of a ``code`` element
    content_ref: str | None  # path whose children this element reuses (Questionnaire.item.item)

    @property
    def name(self) -> str:
        last = self.path.rsplit(".", 1)[-1]
        return last[:-3] if last.endswith("[x]") else last

    @property
    def is_choice(self) -> bool:
        return self.path.endswith("[x]")

    @property
    def is_array(self) -> bool:
        return self.max not in ("0", "1")


@dataclass(frozen=True)
class TypeDef:
    name: str
    kind: str  # primitive-type, complex-type, resource
    abstract: bool
    base: str | None


PRIMITIVE_JSON_TYPES = {
    "boolean": (bool,),
    "integer": (int,),
    "positiveInt": (int,),
    "unsignedInt": (int,),
    "decimal": (int, float),  # plus FhirDecimal, a Decimal
}


def _load(name: str) -> dict[str, Any]:
    data = resources.files(__package__).joinpath("r4", name).read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(data)
    return loaded


class R4:
    """Read-only access to the generated R4 tables."""

    def __init__(self) -> None:
        structure = _load("structure.json")
        self.resource_types: frozenset[str] = frozenset(structure["resourceTypes"])
        self.regex: dict[str, re.Pattern[str]] = {
            name: re.compile(pattern) for name, pattern in structure["regex"].items()
        }
        self.types: dict[str, TypeDef] = {}
        self._children: dict[str, dict[str, ElementDef]] = {}
        self._elements: dict[str, ElementDef] = {}
        for name, t in structure["types"].items():
            self.types[name] = TypeDef(name, t["kind"], t["abstract"], t["base"])
            for path, (mn, mx, types, summary, vs, ref) in t["elements"].items():
                el = ElementDef(path, mn, mx, tuple(types), bool(summary), vs, ref)
                self._elements[path] = el
                parent = path.rsplit(".", 1)[0]
                self._children.setdefault(parent, {})[el.name] = el

    def children(self, path: str) -> dict[str, ElementDef]:
        """Child elements of a type (``"HumanName"``) or of a backbone path (``"Patient.contact"``)."""
        return self._children.get(path, {})

    def element(self, path: str) -> ElementDef | None:
        return self._elements.get(path)

    def is_primitive(self, type_name: str) -> bool:
        t = self.types.get(type_name)
        return t is not None and t.kind == "primitive-type"


@cache
def r4() -> R4:
    """The R4 definitions (loaded on first use, about 30 ms)."""
    return R4()


@cache
def value_set_codes() -> dict[str, frozenset[str]]:
    """Codes of the value sets bound *required* to ``code`` elements, where enumerable."""
    return {url: frozenset(codes) for url, codes in _load("valuesets.json")["codes"].items()}


@cache
def value_set_systems() -> dict[str, str]:
    """The single code system of required value sets drawn from one system (implied token systems)."""
    systems: dict[str, str] = _load("valuesets.json")["systems"]
    return systems


@cache
def search_parameter_table() -> dict[str, dict[str, Any]]:
    """Raw search-parameter rows per resource type (see ``dui.fhir.search.parameters``)."""
    table: dict[str, dict[str, Any]] = _load("search_parameters.json")["parameters"]
    return table


# Members the DUI adds to the R4 Patient compartment: a Binary whose ``securityContext`` is a Patient (a document's
# CDA or PDF, a scanned letter) is part of that resident's record, under the same access rules and audit. The
# parameter is the DUI's own (fhir_profiles ``SearchParameter-Binary-security-context``).
OWN_COMPARTMENT_MEMBERS: dict[str, list[str]] = {"Binary": ["security-context"]}


@cache
def patient_compartment() -> dict[str, list[str]]:
    """Resource type -> the parameters that place it in a Patient's compartment: the R4 CompartmentDefinition
    and ``OWN_COMPARTMENT_MEMBERS``."""
    members: dict[str, list[str]] = dict(_load("compartment_patient.json")["members"])
    members.update(OWN_COMPARTMENT_MEMBERS)
    return members
