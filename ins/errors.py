"""The errors of the INS library. The service wraps them into its own categories at the use-case edge.

Messages never hold identity traits or a matricule: they name the field and the rule, so that they
can be logged and shown without leaking health data.
"""

from __future__ import annotations


class InsError(Exception):
    """Base class of every error raised by ``ins``."""


class NirError(InsError, ValueError):
    """A matricule that is not a well-formed NIR/NIA."""


class TraitError(InsError, ValueError):
    """An identity trait that breaks the INS rules; ``field`` names it (``birth_date``, ``sex``...)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class TransitionError(InsError):
    """An identity status change that the RNIV rules do not allow, or whose evidence is missing."""


class InsiError(InsError):
    """INSi téléservice: base class (``ins.insi``)."""


class InsiUnavailable(InsiError):
    """INSi could not be reached or did not answer in time (network, TLS, HTTP 5xx): retry later."""


class InsiFault(InsiError):
    """INSi answered with a SOAP fault: the request was refused (``code`` and ``reason`` say why)."""

    def __init__(self, message: str, code: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class InsiProtocolError(InsiError):
    """INSi answered something that is not a response of the expected shape."""
