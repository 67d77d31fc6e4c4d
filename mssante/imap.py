"""IMAP retrieval from the MSSanté operator (stdlib ``imaplib``): the network ``MailReceiver``.

``imap://`` requires the server to offer STARTTLS and upgrades before logging in; ``imaps://`` is TLS from the
first byte. The client certificate is presented and the server verified (``mssante.transport.tls_context``).
Login: ``LOGIN`` when the URL has a user and a password, otherwise SASL ``EXTERNAL`` (the certificate is the
identity; the URL's user, if any, is sent as authorization identity).

Reading is by UID: ``fetch_new`` EXAMINEs the folder (read-only: nothing is flagged by reading, bodies are
fetched with ``BODY.PEEK``), returns the folder's UIDVALIDITY and the messages after the cursor's UID, and
starts again from the first message when the cursor was taken under another UIDVALIDITY. ``mark_processed``,
called once the caller has committed what it made of a message, flags it ``\\Seen`` and moves it to the
processed folder (created when missing): ``MOVE`` when the server offers it, else ``COPY``, ``\\Deleted`` and
``UID EXPUNGE`` (plain ``EXPUNGE`` without UIDPLUS). A UID already moved is ignored by the server, so calling
it twice is harmless. One connection per call. Logs name UIDs, Message-IDs and counts only.
"""

from __future__ import annotations

import imaplib
import logging
import re
import ssl
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from email.parser import BytesHeaderParser

from mssante.errors import Permanent, Transient, TransportError, UidValidityChanged
from mssante.transport import Batch, Cursor, Fetched, classify_network, parse_url, scrub, tls_context

log = logging.getLogger(__name__)
WHAT = "IMAP server"
PROCESSED_FOLDER = "DUI-traite"
_FOLDER = re.compile(r"^[A-Za-z0-9 ._/-]{1,100}$")
_SIZE = re.compile(rb"RFC822\.SIZE (\d+)")
_TRANSIENT_CODES = ("[UNAVAILABLE]", "[INUSE]", "[LIMIT]", "[SERVERBUG]", "[OVERQUOTA]")


class ImapReceiver:
    """``MailReceiver`` over IMAP with mutual TLS, reading ``folder`` and moving what is processed to
    ``processed_folder``. Messages larger than ``max_message_bytes`` are listed but not downloaded."""

    def __init__(self, url: str, *, cert_file: str, key_file: str, ca_file: str, folder: str = "INBOX",
                 processed_folder: str = PROCESSED_FOLDER, timeout: float = 30.0,
                 max_message_bytes: int = 40 * 1024 * 1024) -> None:
        self.endpoint = parse_url(url, ("imap", "imaps"))
        for name in (folder, processed_folder):
            if not _FOLDER.match(name):
                raise Permanent("a folder name may hold letters, digits, space, '.', '_', '/' and '-' only")
        self.folder = folder
        self.processed_folder = processed_folder
        self._context = tls_context(cert_file, key_file, ca_file)
        self._timeout = timeout
        self._max_bytes = max_message_bytes

    def fetch_new(self, since: Cursor | None, *, limit: int = 20) -> Batch:
        with self._session() as imap:
            _check(imap.select(_quote(self.folder), readonly=True))
            uidvalidity = _uidvalidity(imap)
            restarted = since is not None and since.uidvalidity != uidvalidity
            start = since.last_uid + 1 if since is not None and not restarted else 1
            found = _check(imap.uid("SEARCH", f"UID {start}:*"))
            uids = sorted({int(u) for u in b" ".join(x for x in found if isinstance(x, bytes)).split()
                           if int(u) >= start})[:max(limit, 0)]
            messages = tuple(m for m in (self._fetch(imap, uid) for uid in uids) if m is not None)
        last = max((m.uid for m in messages), default=start - 1)
        log.info("mssante imap fetched", extra={"count": len(messages), "restarted": restarted,
                                                "uids": [m.uid for m in messages]})
        return Batch(uidvalidity=uidvalidity, messages=messages, restarted=restarted,
                     cursor=Cursor(uidvalidity=uidvalidity, last_uid=last))

    def mark_processed(self, uid: int, uidvalidity: int) -> None:
        with self._session() as imap:
            _check(imap.select(_quote(self.folder)))
            if _uidvalidity(imap) != uidvalidity:
                raise UidValidityChanged(f"the UIDVALIDITY of {self.folder} changed: fetch again from the start")
            self._ensure_folder(imap)
            _check(imap.uid("STORE", str(uid), "+FLAGS.SILENT", r"(\Seen)"))
            capabilities = _capabilities(imap)
            if "MOVE" in capabilities:
                _check(imap.uid("MOVE", str(uid), _quote(self.processed_folder)))
            else:
                _check(imap.uid("COPY", str(uid), _quote(self.processed_folder)))
                _check(imap.uid("STORE", str(uid), "+FLAGS.SILENT", r"(\Deleted)"))
                if "UIDPLUS" in capabilities:
                    _check(imap.uid("EXPUNGE", str(uid)))
                else:
                    _check(imap.expunge())
        log.info("mssante imap processed", extra={"uid": uid})

    def _fetch(self, imap: imaplib.IMAP4, uid: int) -> Fetched | None:
        head = _check(imap.uid("FETCH", str(uid), "(UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"))
        parts = [p for p in head if isinstance(p, tuple)]
        if not parts:
            return None  # expunged meanwhile
        prefix, headers = parts[0]
        size_match = _SIZE.search(prefix) or _SIZE.search(b" ".join(p for p in head if isinstance(p, bytes)))
        size = int(size_match.group(1)) if size_match else 0
        message_id = BytesHeaderParser().parsebytes(headers).get("Message-ID")
        found = re.search(r"<[^<>\s]+>", str(message_id)) if message_id else None
        if size > self._max_bytes:
            log.warning("mssante imap message too large", extra={"uid": uid, "size": size})
            return Fetched(uid=uid, message_id=found.group(0) if found else None, size=size, data=None)
        body = [p for p in _check(imap.uid("FETCH", str(uid), "(UID BODY.PEEK[])")) if isinstance(p, tuple)]
        if not body:
            return None
        data = body[0][1]
        if len(data) > self._max_bytes:
            return Fetched(uid=uid, message_id=found.group(0) if found else None, size=len(data), data=None)
        return Fetched(uid=uid, message_id=found.group(0) if found else None, size=len(data), data=data)

    def _ensure_folder(self, imap: imaplib.IMAP4) -> None:
        listed = _check(imap.list('""', _quote(self.processed_folder)))
        if any(isinstance(x, bytes) and x for x in listed):
            return
        status, data = imap.create(_quote(self.processed_folder))
        if status != "OK" and not any(isinstance(x, bytes) and b"ALREADYEXISTS" in x.upper() for x in data):
            raise _reply_error(data)

    @contextmanager
    def _session(self) -> Iterator[imaplib.IMAP4]:
        imap: imaplib.IMAP4 | None = None
        try:
            imap = self._connect()
            yield imap
        except TransportError as exc:
            raise self._failed(exc) from None
        except imaplib.IMAP4.abort:
            raise self._failed(Transient(f"the {WHAT} dropped the connection")) from None
        except imaplib.IMAP4.error as exc:
            raise self._failed(_reply_error([str(exc).encode()])) from None
        except (OSError, ssl.SSLError) as exc:
            raise self._failed(classify_network(exc, WHAT)) from None
        finally:
            if imap is not None:
                try:
                    imap.logout()
                except (imaplib.IMAP4.error, OSError):
                    imap.shutdown()

    def _connect(self) -> imaplib.IMAP4:
        host, port = self.endpoint.host, self.endpoint.port
        imap: imaplib.IMAP4
        if self.endpoint.implicit_tls:
            imap = imaplib.IMAP4_SSL(host, port, ssl_context=self._context, timeout=self._timeout)
        else:
            imap = imaplib.IMAP4(host, port, timeout=self._timeout)
            try:
                if "STARTTLS" not in imap.capabilities:
                    raise Permanent(f"the {WHAT} does not offer STARTTLS: nothing is sent in clear")
                imap.starttls(self._context)
            except BaseException:
                imap.shutdown()
                raise
        try:
            if self.endpoint.username and self.endpoint.password:
                imap.login(self.endpoint.username, self.endpoint.password)
            else:
                authzid = self.endpoint.username.encode()
                imap.authenticate("EXTERNAL", lambda _: authzid)
        except imaplib.IMAP4.error as exc:
            imap.shutdown()
            if isinstance(exc, imaplib.IMAP4.abort):
                raise
            raise Permanent(f"the {WHAT} refused the login: {scrub(str(exc))}") from None
        except BaseException:
            imap.shutdown()
            raise
        return imap

    @staticmethod
    def _failed(error: TransportError) -> TransportError:
        log.warning("mssante imap failed", extra={"category": type(error).__name__, "reason": str(error)})
        return error


def _check(response: tuple[str, Sequence[object]]) -> list[object]:
    status, data = response
    if status != "OK":
        raise _reply_error(data)
    return list(data)


def _reply_error(data: Sequence[object]) -> TransportError:
    text = " ".join(x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in data if x)
    if any(code in text.upper() for code in _TRANSIENT_CODES):
        return Transient(f"the {WHAT} answered NO: {scrub(text)}")
    return Permanent(f"the {WHAT} refused a command: {scrub(text)}")


def _uidvalidity(imap: imaplib.IMAP4) -> int:
    _, values = imap.response("UIDVALIDITY")
    for value in values or []:
        if isinstance(value, bytes) and value.strip().isdigit():
            return int(value)
    raise Permanent(f"the {WHAT} gave no UIDVALIDITY")


def _capabilities(imap: imaplib.IMAP4) -> set[str]:
    data = _check(imap.capability())
    return {word.upper() for x in data if isinstance(x, bytes) for word in x.decode("ascii", "replace").split()}


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
