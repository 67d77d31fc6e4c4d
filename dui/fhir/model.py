"""The one module that imports fhir.resources (R4B models on pydantic 2).

fhir.resources no longer ships R4 models; R4B is structurally identical to R4 for every resource the
DUI uses (see docs/architecture.md, "FHIR version"). Models are used to *validate* only: the stored
and served JSON stays the client's own text (``dui.fhir.jsontext``), because re-serialising through a
model rewrites decimals and instants.

Resource types that R4B lacks or models differently from R4 are left to the exact R4 checker in
``dui.fhir.structure``, which runs on every write anyway.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from dui.errors import Issue

MODEL_RELEASE = "R4B"

# Present in R4 but absent from the R4B models, or modelled differently (measured by diffing the
# generated R4 element table against the R4B model fields; see docs/architecture.md).
NOT_MODELLED_AS_R4 = frozenset({
    "EffectEvidenceSynthesis", "Evidence", "EvidenceVariable", "MedicinalProduct",
    "MedicinalProductAuthorization", "MedicinalProductContraindication", "MedicinalProductIndication",
    "MedicinalProductIngredient", "MedicinalProductInteraction", "MedicinalProductManufactured",
    "MedicinalProductPackaged", "MedicinalProductPharmaceutical", "MedicinalProductUndesirableEffect",
    "RiskEvidenceSynthesis", "SubstanceNucleicAcid", "SubstancePolymer", "SubstanceProtein",
    "SubstanceReferenceInformation", "SubstanceSourceMaterial", "SubstanceSpecification",
})  # fmt: skip

# R4 elements that R4B dropped: the model would refuse valid R4 content.
_R4_ONLY_FIELDS = ("valueMeta",)


@cache
def _model(resource_type: str) -> Any:
    return get_fhir_model_class(resource_type)


def model_issues(resource: dict[str, Any]) -> list[Issue]:
    """Validate ``resource`` with its fhir.resources model; return the problems found."""
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or rtype in NOT_MODELLED_AS_R4:
        return []
    try:
        _model(rtype).model_validate(resource)
    except ValidationError as exc:
        issues = []
        for err in exc.errors(include_url=False):
            loc = _location(rtype, err.get("loc", ()))
            if any(field in loc for field in _R4_ONLY_FIELDS):
                continue
            issues.append(Issue(f"{loc}: {err.get('msg', 'invalid')}", "structure", expression=(loc,)))
        return issues
    except RecursionError:
        return [Issue(f"{rtype}: the resource is nested too deeply to validate", "too-costly")]
    return []


def _location(rtype: str, loc: tuple[Any, ...]) -> str:
    out = rtype
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in ("__root__",):
            out += f".{part}"
    return out
