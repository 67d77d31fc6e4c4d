"""Error categories of the service.

Code below the web layer raises a ``DuiError`` subclass; ``dui.fhir.outcomes`` maps each category to
one HTTP status and one ``OperationOutcome.issue.code`` (the only mapping table), and the web layer
renders it. Each class says the status it becomes.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Issue:
    """One problem, in OperationOutcome terms (http://hl7.org/fhir/R4/operationoutcome.html)."""

    diagnostics: str
    code: str | None = None  # IssueType; None means "the category's default"
    severity: str = "error"
    expression: tuple[str, ...] = field(default=())


class DuiError(Exception):
    """Base class. ``issues`` holds every problem found, the first one being the summary."""

    status = 500
    code = "exception"

    def __init__(self, message: str, *, issues: list[Issue] | None = None, code: str | None = None,
                 expression: str | None = None, headers: dict[str, str] | None = None,
                 patients: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.patients = patients  # residents the refused act concerned: for the audit trail, never the client
        if code is not None:
            self.code = code
        if issues:
            self.issues = issues
        else:
            self.issues = [Issue(message, self.code, expression=(expression,) if expression else ())]
        self.headers = headers or {}


class Invalid(DuiError):
    """400: the request cannot be understood (syntax, base structure, parameters)."""

    status = 400
    code = "invalid"


class Unprocessable(DuiError):
    """422: well-formed, but breaks a profile or a business rule."""

    status = 422
    code = "processing"


class Unauthorized(DuiError):
    """401: no valid credentials (missing where required, expired, forged, revoked). The web layer adds
    ``WWW-Authenticate: Bearer`` (RFC 6750 §3) from ``headers``."""

    status = 401
    code = "login"


class Forbidden(DuiError):
    """403: the actor may not do this."""

    status = 403
    code = "forbidden"


class NotFound(DuiError):
    """404: no such resource, version or endpoint."""

    status = 404
    code = "not-found"


class MethodNotAllowed(DuiError):
    """405: the endpoint exists but not with this HTTP method."""

    status = 405
    code = "not-supported"


class NotAcceptable(DuiError):
    """406: the client asks for a representation the server cannot produce."""

    status = 406
    code = "not-supported"


class Conflict(DuiError):
    """409: the change conflicts with the current state (a duplicate INS, a version race)."""

    status = 409
    code = "conflict"


class Gone(DuiError):
    """410: the resource existed and was deleted."""

    status = 410
    code = "deleted"


class PreconditionFailed(DuiError):
    """412: If-Match or a conditional request's criteria do not hold."""

    status = 412
    code = "conflict"


class TooLarge(DuiError):
    """413: body, bundle or nesting beyond the configured limits."""

    status = 413
    code = "too-costly"


class UriTooLong(DuiError):
    """414: the URL carries more than the server accepts (parameters beyond ``DUI_MAX_PARAMETERS``)."""

    status = 414
    code = "too-costly"


class HeadersTooLarge(DuiError):
    """431: header fields beyond gunicorn's limits (count, size of one field)."""

    status = 431
    code = "too-costly"


class UnsupportedMediaType(DuiError):
    """415: the body is not in a format the endpoint accepts."""

    status = 415
    code = "not-supported"


class Throttled(DuiError):
    """429: this client sent more requests than its rate limit allows; ``Retry-After`` says when to retry."""

    status = 429
    code = "throttled"


class Unavailable(DuiError):
    """503: a dependency (database, national service) is unreachable; retry later."""

    status = 503
    code = "transient"


class RequestStopped(Unavailable):
    """503: the request ran past its budget (``DUI_REQUEST_BUDGET``) and was stopped; nothing it did was kept.
    ``Retry-After`` says when to retry; the message says what to narrow."""

    code = "too-costly"


class Fault(DuiError):
    """500: a bug. Logged with its traceback; the client sees only an id to quote."""

    status = 500
    code = "exception"
