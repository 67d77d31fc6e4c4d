"""The errors of the MSSanté library. The service wraps them into its own categories at the use-case edge.

Messages never hold a name, an INS or a message body: they name the rule that was broken (and, for the
transport, the reply code), so that they can be logged and shown without leaking health data.
"""

from __future__ import annotations


class MssanteError(Exception):
    """Base class of every error raised by ``mssante``."""


class UnsafeXml(MssanteError, ValueError):
    """The bytes are not one well-formed UTF-8 XML document within the limits, without DTD or entities."""


class XdmRefused(MssanteError, ValueError):
    """An IHE XDM archive (or its METADATA.XML) that the reader refuses; ``reason`` says why, in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class XdmBuildError(MssanteError, ValueError):
    """What was given to build an XDM archive is inconsistent (a file name, or METADATA.XML against the files)."""


class MessageError(MssanteError, ValueError):
    """A message cannot be built from what was given (a header with a line break, no recipient...)."""


class MessageRefused(MssanteError, ValueError):
    """An incoming message that the parser refuses (too large, too many parts...); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MdnError(MssanteError, ValueError):
    """A message that is not a disposition notification of the expected shape."""


class TransportError(MssanteError):
    """SMTP or IMAP failed. ``code`` is the server's reply code when there was one."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class Transient(TransportError):
    """Worth retrying later as it is: the server could not be reached, timed out, or answered 4xx."""


class Permanent(TransportError):
    """Retrying the same thing will fail again until someone acts: 5xx, a TLS certificate refused, our own
    configuration unusable, or a server that does not offer the required TLS."""


class UidValidityChanged(TransportError):
    """The IMAP folder's UIDVALIDITY is not the one the UIDs were read under: they no longer name the same
    messages. Fetch again from scratch (the caller dedupes on Message-ID)."""
