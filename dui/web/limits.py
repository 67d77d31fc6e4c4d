"""The size of a request's head that ``dui serve`` accepts, and the answers past it (414, 431: an OperationOutcome
under ``/fhir``, a JSON problem elsewhere, audited).

gunicorn refuses larger heads in its parser, its options set from these numbers; ``dui.web.worker`` writes the
answer. granian's own limits are larger (a URI of 64 KiB, a head of about 400 KiB, which it answers itself, bare):
between the two, the app refuses them (``dui.web.worker_app.check_head``), with the same answer.
"""

from __future__ import annotations

from dui.errors import HeadersTooLarge, UriTooLong

REQUEST_LINE = 8190  # bytes: method, URL and version
FIELDS = 100  # header fields
FIELD_SIZE = 8190  # bytes: one header field, name and value


def uri_too_long() -> UriTooLong:
    return UriTooLong(f"The request line is longer than {REQUEST_LINE} bytes; send search parameters with POST "
                      "[type]/_search")


def headers_too_large() -> HeadersTooLarge:
    return HeadersTooLarge(f"The header fields are too many or too large (at most {FIELDS} fields of {FIELD_SIZE} "
                           "bytes each)")
