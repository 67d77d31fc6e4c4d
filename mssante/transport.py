"""What the service asks of an MSSanté operator and what it gets back: the ``MailSender`` and ``MailReceiver``
protocols, their result types, and what the SMTP and IMAP clients share (URLs, TLS, one-line errors).

Implementations: ``mssante.smtp.SmtpSender``, ``mssante.imap.ImapReceiver`` (network), and
``mssante.memory.InMemoryMailbox`` (both protocols, in memory, for tests of the service).

URLs (the settings ``DUI_MSSANTE_SMTP_URL`` and ``DUI_MSSANTE_IMAP_URL`` of the service):
``smtp://host[:587]`` submission with STARTTLS required, ``smtps://host[:465]`` implicit TLS,
``imap://host[:143]`` with STARTTLS required, ``imaps://host[:993]`` implicit TLS. An optional
``user[:password]@`` (percent-encoded) logs in; without a password the IMAP client authenticates with SASL
EXTERNAL, i.e. by the client certificate (UNCONFIRMED: which mechanism each operator expects).

TLS: TLS 1.2 or later, the server's certificate verified against the given CA file only (the IGC-Santé in
production) and its host name checked, the structure's certificate and key (PEM) presented as client certificate.

Errors: ``Transient`` (retry later: connection refused or reset, timeout, 4xx, a TLS failure that is not about a
certificate) or ``Permanent`` (5xx, the server's certificate not trusted, our client certificate refused, our
TLS files unreadable, no STARTTLS offered: retrying cannot help until someone acts). A TLS certificate failure
is permanent on purpose: it is either our configuration or someone in the middle, and a retry loop would hide
both. Messages are one line; server texts are cut short and stripped of addresses and long numbers (a patient's
mailbox is named by their INS).
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Protocol
from urllib.parse import unquote, urlsplit

from mssante.errors import Permanent, Transient, TransportError

DEFAULT_PORTS = {"smtp": 587, "smtps": 465, "imap": 143, "imaps": 993}
_ADDRESS = re.compile(r"<?[^\s<>\"']+@[^\s<>\"']+>?")
_LONG_NUMBER = re.compile(r"\d{13,}")
# TLS alerts and errors that are about a certificate (ours or the server's): permanent.
_CERTIFICATE_REASONS = ("CERTIFICATE", "UNKNOWN_CA", "BAD_CERTIFICATE", "CERT_", "HANDSHAKE_FAILURE",
                        "NO_SHARED_CIPHER", "UNSUPPORTED_PROTOCOL", "WRONG_VERSION_NUMBER")


@dataclass(frozen=True)
class SendResult:
    """A message accepted by the server. ``refused``: recipients the server refused while accepting others
    (address → reply code); resending would duplicate the message for the accepted ones."""

    message_id: str
    accepted: int
    refused: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Cursor:
    """Where reading stopped: the folder's UIDVALIDITY and the highest UID already handed to the caller."""

    uidvalidity: int
    last_uid: int


@dataclass(frozen=True)
class Fetched:
    """One message of the folder. ``data`` is None when the message is larger than the receiver's cap (it was
    not downloaded: mark it processed, or move it aside, after telling someone)."""

    uid: int
    message_id: str | None
    size: int
    data: bytes | None = field(repr=False)


@dataclass(frozen=True)
class Batch:
    """New messages, in UID order. ``restarted``: the cursor given was taken under another UIDVALIDITY, so the
    folder was read from its start (dedupe on Message-ID). ``cursor``: where the next call starts."""

    uidvalidity: int
    messages: tuple[Fetched, ...]
    restarted: bool
    cursor: Cursor


class MailSender(Protocol):
    def send(self, message: EmailMessage) -> SendResult:
        """Submit ``message`` to its To/Cc/Bcc recipients; ``Transient`` or ``Permanent`` when it fails."""
        ...


class MailReceiver(Protocol):
    def fetch_new(self, since: Cursor | None, *, limit: int = 20) -> Batch:
        """The messages of the folder after ``since`` (all of them when None or when UIDVALIDITY changed)."""
        ...

    def mark_processed(self, uid: int, uidvalidity: int) -> None:
        """Flag message ``uid`` ``\\Seen`` and move it to the processed folder; doing it twice is harmless.
        ``UidValidityChanged`` when the folder's UIDVALIDITY is no longer ``uidvalidity``."""
        ...


@dataclass(frozen=True)
class Endpoint:
    """A parsed ``DUI_MSSANTE_*_URL``."""

    scheme: str
    host: str
    port: int
    implicit_tls: bool
    username: str = ""
    password: str = field(default="", repr=False)


def parse_url(url: str, schemes: tuple[str, str]) -> Endpoint:
    """``url`` split into an ``Endpoint``; ``schemes`` = (STARTTLS scheme, implicit-TLS scheme).
    ``Permanent`` when the URL is not one of them with a host."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise Permanent("the mail server URL cannot be parsed") from None
    if parts.scheme not in schemes or not parts.hostname:
        raise Permanent(f"the mail server URL must be {schemes[0]}://host:port or {schemes[1]}://host:port")
    return Endpoint(scheme=parts.scheme, host=parts.hostname, port=port or DEFAULT_PORTS[parts.scheme],
                    implicit_tls=parts.scheme == schemes[1], username=unquote(parts.username or ""),
                    password=unquote(parts.password or ""))


def tls_context(cert_file: str, key_file: str, ca_file: str) -> ssl.SSLContext:
    """A client context: TLS ≥ 1.2, the server verified against ``ca_file`` only (host name checked), our
    certificate presented when ``cert_file`` is given. ``Permanent`` when a file cannot be loaded."""
    if not ca_file:
        raise Permanent("a CA file is required to verify the mail server (DUI_MSSANTE_CA)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_verify_locations(cafile=ca_file)
    except (OSError, ssl.SSLError):
        raise Permanent("the CA file cannot be loaded") from None
    if cert_file:
        try:
            context.load_cert_chain(cert_file, key_file or None)
        except (OSError, ssl.SSLError):
            raise Permanent("the client certificate or its key cannot be loaded") from None
    return context


def scrub(text: str, limit: int = 160) -> str:
    """A server's reply text fit for a log line: one line, no address, no long number, at most ``limit``."""
    one_line = " ".join(text.split())
    cleaned = _LONG_NUMBER.sub("<number>", _ADDRESS.sub("<address>", one_line))
    return cleaned if len(cleaned) <= limit else cleaned[:limit - 1] + "…"


def classify_network(exc: BaseException, what: str) -> TransportError:
    """The error to raise for a socket or TLS failure while talking to ``what`` (``SMTP server``...)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Permanent(f"the {what}'s certificate is not trusted: {exc.verify_message or 'verification failed'}")
    if isinstance(exc, ssl.SSLError):
        reason = str(exc.reason or exc)
        if any(marker in reason.upper() for marker in _CERTIFICATE_REASONS):
            return Permanent(f"TLS with the {what} failed: {reason}")
        return Transient(f"TLS with the {what} failed: {reason}")
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return Transient(f"the {what} did not answer in time")
    if isinstance(exc, ConnectionRefusedError):
        return Transient(f"the {what} refused the connection")
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return Transient(f"the {what} closed the connection")
    if isinstance(exc, socket.gaierror):
        return Transient(f"the {what}'s name cannot be resolved")
    if isinstance(exc, OSError):
        return Transient(f"the {what} cannot be reached ({exc.strerror or type(exc).__name__})")
    return Transient(f"the {what} failed ({type(exc).__name__})")


def classify_disconnect(text: str, what: str) -> TransportError:
    """A connection that ended without a reply: a timeout, a TLS alert about a certificate (permanent: the
    server refused ours), or a plain drop (transient). ``text`` is the client library's description."""
    if "timed out" in text:
        return Transient(f"the {what} did not answer in time")
    upper = text.upper()
    if "SSL" in upper and any(marker in upper for marker in _CERTIFICATE_REASONS):
        return Permanent(f"the {what} ended TLS over a certificate: {scrub(text)}")
    return Transient(f"the {what} closed the connection")


def classify_reply(code: int, text: str, what: str) -> TransportError:
    """4xx → ``Transient``, 5xx → ``Permanent``, anything else → ``Transient``; with the scrubbed text."""
    message = f"the {what} answered {code}: {scrub(text)}" if text else f"the {what} answered {code}"
    if 500 <= code < 600:
        return Permanent(message, code)
    return Transient(message, code)
