"""Headers every response carries, and CORS for the browser origins the operator lists.

Security headers (docs/security.md, "Hardening"): the API serves JSON only, so nothing in it may run as a
page, be framed, or leak the URL it was reached from; in ``prod`` browsers must keep to https.

CORS: none unless ``DUI_CORS_ORIGINS`` lists origins. Then a request whose ``Origin`` is one of them
(exact match) gets ``Access-Control-Allow-Origin`` with that origin, and preflights (``OPTIONS`` with
``Access-Control-Request-Method``) of ``/fhir`` and ``/auth/token`` are answered here, before
authentication and rate limits, since a browser never sends a token with a preflight. Credentials mode is
never allowed: tokens travel in ``Authorization``, which the page sets itself, never in cookies.
"""

from __future__ import annotations

from collections.abc import Iterable

from flask import Flask, Response, request
from werkzeug.datastructures import Headers

from dui.errors import Forbidden
from dui.services import Services

CSP = "default-src 'none'; frame-ancestors 'none'"
# /api/docs: its page, script and style come from this server only (no CDN, no inline script)
DOCS_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
            "frame-ancestors 'none'")
API_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
HSTS = "max-age=31536000"
FHIR_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
TOKEN_METHODS = ("POST",)
ALLOWED_HEADERS = ("Authorization", "Content-Type", "Accept", "If-Match", "If-None-Match", "If-None-Exist",
                   "If-Modified-Since", "Prefer", "X-Request-Id", "X-Break-Glass", "Last-Event-ID")
EXPOSED_HEADERS = ("Location", "Content-Location", "ETag", "Last-Modified", "Retry-After", "WWW-Authenticate",
                   "X-Request-Id")
PREFLIGHT_MAX_AGE = "600"
_ALLOWED_LOWER = frozenset(h.lower() for h in ALLOWED_HEADERS)


def register(app: Flask) -> None:
    svc: Services = app.extensions["dui"]
    origins = frozenset(svc.settings.http.cors_origins)
    prod = svc.settings.is_prod

    if origins:
        @app.before_request
        def preflight() -> Response | None:
            if request.method != "OPTIONS" or "Access-Control-Request-Method" not in request.headers:
                return None
            methods = cors_methods(request.path)
            if methods is None:
                return None  # not a CORS endpoint: Flask's own answer, without CORS headers
            if request.headers.get("Origin") not in origins:
                raise Forbidden("This page's origin may not call this server from a browser (DUI_CORS_ORIGINS)")
            method = request.headers["Access-Control-Request-Method"].strip().upper()
            if method not in methods:
                raise Forbidden(f"Cross-origin {method} is not allowed here; allowed: {', '.join(methods)}")
            asked = [h.strip().lower() for h in request.headers.get("Access-Control-Request-Headers", "").split(",")]
            refused = sorted({h for h in asked if h and h not in _ALLOWED_LOWER})
            if refused:
                raise Forbidden(f"Cross-origin requests may not send {', '.join(refused)}; allowed: "
                                f"{', '.join(ALLOWED_HEADERS)}")
            response = Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = ", ".join(methods)
            response.headers["Access-Control-Allow-Headers"] = ", ".join(ALLOWED_HEADERS)
            response.headers["Access-Control-Max-Age"] = PREFLIGHT_MAX_AGE
            return response  # Access-Control-Allow-Origin and Vary: below, as on every answer

    fixed = (("X-Frame-Options", "DENY"), ("Referrer-Policy", "no-referrer"),
             *((("Strict-Transport-Security", HSTS),) if prod else ()))
    page_csp, docs_csp = ("Content-Security-Policy", CSP), ("Content-Security-Policy", DOCS_CSP)

    @app.after_request
    def secure(response: Response) -> Response:
        headers = response.headers
        csp = docs_csp if request.path.startswith("/api/docs") else page_csp
        stamp(headers, (csp, *fixed), _NOSNIFF)
        if origins:
            response.vary.add("Origin")  # the answer depends on it: caches must not mix origins
            origin = request.headers.get("Origin")
            if origin in origins:
                headers["Access-Control-Allow-Origin"] = origin
                if request.method != "OPTIONS":
                    headers["Access-Control-Expose-Headers"] = ", ".join(EXPOSED_HEADERS)
        return response


_NOSNIFF = (("X-Content-Type-Options", "nosniff"),)


def stamp(headers: Headers, replace: Iterable[tuple[str, str]], absent: Iterable[tuple[str, str]] = ()) -> None:
    """Put ``replace`` into ``headers`` over any value already there, and ``absent`` where none is, with one look at
    the headers already set (werkzeug's ``set`` and ``setdefault`` each read them all)."""
    present = {name.lower() for name, _ in headers}
    for name, value in replace:
        if name.lower() in present:
            headers.set(name, value)
        else:
            headers.add(name, value)
    for name, value in absent:
        if name.lower() not in present:
            headers.add(name, value)


def cors_methods(path: str) -> tuple[str, ...] | None:
    """The methods a browser may use cross-origin on ``path``, or None if it is not a CORS endpoint."""
    if path == "/fhir" or path.startswith("/fhir/"):
        return FHIR_METHODS
    if path == "/api" or path.startswith("/api/"):
        return API_METHODS
    if path.rstrip("/") == "/auth/token":
        return TOKEN_METHODS
    return None
