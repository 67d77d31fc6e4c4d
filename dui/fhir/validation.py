"""Validation of incoming resources: the base R4 structure, then the fhir.resources model.

Profile validation (FR Core, TDDUI, the DUI's own profiles) plugs in here as a further step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dui.errors import Invalid, Issue
from dui.fhir.model import model_issues
from dui.fhir.structure import StructureChecker


class Validator:
    """Checks resources before they are stored; one instance per process."""

    def __init__(self, structure: StructureChecker | None = None, use_model: bool = True) -> None:
        self.structure = structure or StructureChecker()
        self.use_model = use_model

    def issues(self, resource: Any, location: str | None = None) -> list[Issue]:
        """Every problem found; the model check runs only once the exact R4 check passes."""
        issues = self.structure.check(resource, location)
        if not issues and self.use_model and location is None:
            issues = model_issues(resource)
        return issues

    def check(self, resource: Any, location: str | None = None) -> None:
        """Raise ``Invalid`` (400) listing every problem, or return if the resource conforms."""
        issues = self.issues(resource, location)
        if issues:
            count = len(issues)
            summary = f"The resource does not conform to FHIR R4 ({count} problem{'s' if count > 1 else ''})"
            raise Invalid(summary, issues=issues, code="structure")

    def check_profiles(self, resource: Any, profiles: Sequence[str] = (), *, policy: str = "reject") -> list[Issue]:
        """Validate against ``profiles`` (plus ``meta.profile`` and the default profile of the type).

        With ``policy="reject"`` an error raises ``Unprocessable`` (422) listing every problem; the
        warnings (and, with ``policy="warn"``, the errors) are returned.
        Not wired yet: profile validation arrives with ``fhir_profiles.validator``.
        """
        return []
