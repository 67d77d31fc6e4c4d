"""DuiError -> (HTTP status, OperationOutcome): the single mapping table.

See http://hl7.org/fhir/R4/operationoutcome.html (issue codes) and http://hl7.org/fhir/R4/http.html
(statuses). Every error response of the FHIR API is built here.
"""

from __future__ import annotations

from typing import Any

from dui.errors import DuiError, Issue

SEVERITIES = ("fatal", "error", "warning", "information")


def operation_outcome(issues: list[Issue], default_code: str = "processing") -> dict[str, Any]:
    out = []
    for issue in issues:
        item: dict[str, Any] = {
            "severity": issue.severity if issue.severity in SEVERITIES else "error",
            "code": issue.code or default_code,
            "diagnostics": issue.diagnostics,
        }
        if issue.expression:
            item["expression"] = list(issue.expression)
        out.append(item)
    return {"resourceType": "OperationOutcome", "issue": out}


def error_outcome(error: DuiError) -> tuple[int, dict[str, Any]]:
    """The status and OperationOutcome for an error."""
    issues = error.issues
    if len(issues) > 1:
        # The summary first, then each problem.
        issues = [Issue(error.message, error.code), *issues]
    return error.status, operation_outcome(issues, error.code)


def information(message: str) -> dict[str, Any]:
    return operation_outcome([Issue(message, "informational", severity="information")])
