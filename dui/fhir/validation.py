"""Validation of incoming resources: the base R4 structure, the fhir.resources model, then profiles.

Every write checks the base structure and the model (400 when they fail). Profiles (FR Core, TDDUI, the
DUI's own, those of installed packages) are checked by ``fhir_profiles.validator`` against every profile
the resource claims in ``meta.profile`` plus the default profiles of its type, with a mode per resource
type: ``reject`` (422 listing every problem), ``warn`` (stored; the problems are returned) or ``off``.
``$validate`` (``validate``) reports all of it, and the business rules of the type, without storing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dui.errors import Invalid, Issue, Unprocessable
from dui.fhir.model import model_issues
from dui.fhir.structure import StructureChecker
from fhir_profiles.validator import Problem, ProfileValidator

log = logging.getLogger(__name__)

Rule = Callable[[dict[str, Any]], list[Issue]]  # business rules of a type, as issues (``$validate`` only)


class Validator:
    """Checks resources before they are stored; one instance per process."""

    def __init__(self, structure: StructureChecker | None = None, use_model: bool = True,
                 profiles: Callable[[], ProfileValidator] | None = None,
                 rules: Mapping[str, Rule] | None = None) -> None:
        self.structure = structure or StructureChecker()
        self.use_model = use_model
        self.profiles = profiles
        self.rules = dict(rules or {})

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
        """Validate against ``profiles`` (plus ``meta.profile`` and the default profiles of the type).

        With ``policy="reject"`` an error raises ``Unprocessable`` (422) listing every problem; the
        warnings (and, with ``policy="warn"``, the errors) are returned; ``policy="off"`` checks nothing.
        """
        if self.profiles is None or policy == "off" or not isinstance(resource, dict):
            return []
        found = [as_issue(p) for p in self.profiles().validate(resource, profiles) if p.severity != "information"]
        errors = [i for i in found if i.severity == "error"]
        if not errors:
            return found
        rtype = resource.get("resourceType", "resource")
        count = len(errors)
        if policy == "reject":
            raise Unprocessable(f"The {rtype} does not conform to its profiles ({count} error{'s' * (count > 1)})",
                                issues=errors + [i for i in found if i.severity != "error"], code="processing")
        # warn: stored; the client sees the problems with Prefer: return=OperationOutcome, the operators here
        # (locations only: the messages may quote values)
        log.warning("%s stored with %d profile error(s) (DUI_VALIDATION=warn) at %s", rtype, count,
                    ", ".join(sorted({e for i in errors for e in i.expression})[:10]))
        return found

    def knows_profile(self, url: str) -> bool:
        """Whether ``url`` names a StructureDefinition in force (installed, shipped or base R4)."""
        return self.profiles is not None and self.profiles().context.structure_definition(url) is not None

    def validate(self, resource: Any, profiles: Sequence[str] = ()) -> list[Issue]:
        """Everything a write would find wrong, and more (``$validate``): structure, model, profiles,
        business rules; warnings and information included. Nothing raises."""
        issues = self.issues(resource)
        if self.profiles is not None and isinstance(resource, dict):
            issues += [as_issue(p) for p in self.profiles().validate(resource, profiles)]
        issues += self._rules(resource, "")
        return issues

    def _rules(self, resource: Any, prefix: str) -> list[Issue]:
        if not isinstance(resource, dict):
            return []
        rtype = resource.get("resourceType")
        rule = self.rules.get(rtype) if isinstance(rtype, str) else None
        found = []
        if rule is not None:
            for issue in rule(resource):
                where = tuple(prefix + e for e in issue.expression) if prefix else issue.expression
                found.append(Issue(issue.diagnostics, issue.code, issue.severity, where))
        if rtype == "Bundle":
            for index, entry in enumerate(resource.get("entry") or []):
                if isinstance(entry, dict):
                    found += self._rules(entry.get("resource"), f"{prefix}Bundle.entry[{index}].resource.")
        return found


def as_issue(problem: Problem) -> Issue:
    """A profile problem in OperationOutcome terms (the profile named when there is one)."""
    message = problem.message
    if problem.profile and problem.profile not in message:
        message = f"{message} (profile {problem.profile})"
    return Issue(message, problem.code, problem.severity, (problem.location,) if problem.location else ())
