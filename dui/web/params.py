"""The parameter-count limit (``DUI_MAX_PARAMETERS``): query plus form parameters of every FHIR request, counted
before anything else reads them. 20,000 search parameters once took 21 s before the database gave up; past the
limit the answer is immediate: 414 when the URL alone is over it, 400 when a ``POST _search`` form adds to it,
both with ``too-costly``."""

from __future__ import annotations

from flask import Flask, request

from dui.errors import Invalid, UriTooLong
from dui.services import Services

FORM = "application/x-www-form-urlencoded"


def count(encoded: bytes) -> int:
    """Parameters of an ``application/x-www-form-urlencoded`` text (empty pieces are not parameters)."""
    return sum(1 for piece in encoded.split(b"&") if piece) if encoded else 0


def register(app: Flask) -> None:
    svc: Services = app.extensions["dui"]
    limit = svc.settings.limits.max_parameters

    @app.before_request
    def parameters() -> None:
        if not (request.path == "/fhir" or request.path.startswith("/fhir/")):
            return
        in_url = count(request.query_string)
        if in_url > limit:
            raise UriTooLong(f"The URL carries {in_url} parameters; at most {limit} are accepted "
                             "(DUI_MAX_PARAMETERS): narrow the search", code="too-costly")
        if request.mimetype == FORM and request.method == "POST":
            in_form = count(request.get_data(cache=True))  # kept: the handler reads the same bytes
            if in_url + in_form > limit:
                raise Invalid(f"The request carries {in_url + in_form} parameters (URL and form); at most {limit} "
                              "are accepted (DUI_MAX_PARAMETERS): narrow the search", code="too-costly")
