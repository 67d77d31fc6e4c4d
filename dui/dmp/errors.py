"""The two ways a DMP exchange fails: try again later (``Transient``) or never as is (``Permanent``)."""

from __future__ import annotations


class DmpError(Exception):
    """A DMP exchange failed."""


class Transient(DmpError):
    """The DMP could not be reached or answered 5xx / a timeout: retry later, with the same uniqueId."""


class Permanent(DmpError):
    """The DMP refused the request (registry ``Failure``, SOAP fault from the sender, bad metadata): do not retry.

    ``errors`` holds the registry errors when there are some."""

    def __init__(self, message: str, errors: tuple[object, ...] = ()) -> None:
        super().__init__(message)
        self.errors = errors
