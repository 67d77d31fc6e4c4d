"""MSSanté messages as MIME (stdlib ``email``, ``EmailMessage`` with the SMTP policy: CRLF line ends).

Conventions (from the Référentiel socle MSSanté #2 "ECO" requirements and MSS-LPS):

- one patient per message (ECO.2.1.1): ``build_message`` reads the IHE_XDM.ZIP it attaches and refuses one
  whose subsets name more than one patient;
- the subject ``XDM/1.0/DDM+<libellé> <NOM> <prénom> <date de naissance>`` when an XDM zip is attached
  (ECO.2.1.3; ``xdm_subject``; its exact spacing and date format are UNCONFIRMED);
- ``X-MSS-CODECDA``: the LOINC code(s) of the CDA inside the XDM (ECO.2.4.1), only when there is a CDA;
- ``X-MSS-MES: FIN`` when the patient is not expected to reply (to a Mon espace santé mailbox);
- attachments: ``IHE_XDM.ZIP`` and a human-readable copy (PDF); ``Disposition-Notification-To`` asks for an
  MDN (``mssante.mdn``); threading by ``Message-ID``, ``In-Reply-To`` and ``References``.

``parse_message`` reads an incoming message within limits (size, parts, nesting, attachments) and sorts its
attachments into XDM zips, PDFs and others. Subjects and bodies hold health data: never log them.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from email import policy as email_policy
from email.errors import HeaderParseError
from email.errors import MessageError as EmailParseError
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.utils import format_datetime, getaddresses, make_msgid, parsedate_to_datetime

from mssante.errors import MessageError, MessageRefused, XdmRefused
from mssante.xdm import ARCHIVE_NAME, read_xdm

SUBJECT_PREFIX = "XDM/1.0/DDM+"
# UNCONFIRMED: the date of birth's format in the subject; French order is our guess.
SUBJECT_DATE_FORMAT = "%d/%m/%Y"
HEADER_CODE_CDA = "X-MSS-CODECDA"
HEADER_MES = "X-MSS-MES"
MES_END = "FIN"
LOINC_OID = "2.16.840.1.113883.6.1"
_ZIP_TYPES = frozenset({"application/zip", "application/x-zip-compressed", "application/x-zip"})
_XML_TYPES = frozenset({"text/xml", "application/xml", "application/hl7-v3+xml"})
_LINE_BREAK = re.compile(r"[\r\n]")
_MESSAGE_ID = re.compile(r"^<[^<>\s@]+@[^<>\s@]+>$")
_CODE = re.compile(r"^[0-9A-Za-z.-]{1,32}$")


@dataclass(frozen=True)
class Attachment:
    """A file carried by a message: its file name (may be empty on an incoming part), MIME type and bytes."""

    filename: str
    content_type: str
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class Outgoing:
    """What to send. ``xdm``: the IHE_XDM.ZIP bytes (``mssante.xdm.build_xdm``); ``pdf``: the readable copy.

    ``cda_codes``: the ``X-MSS-CODECDA`` values; left empty with an ``xdm``, they are the typeCodes of its XML
    documents. ``end_of_conversation`` writes ``X-MSS-MES: FIN``. ``notification_to`` asks for an MDN.
    ``message_id`` (``<left@right>``) and ``date`` are made when not given.
    """

    sender: str
    to: tuple[str, ...]
    subject: str
    body: str
    xdm: bytes | None = field(default=None, repr=False)
    pdf: Attachment | None = None
    cda_codes: tuple[str, ...] = ()
    end_of_conversation: bool = False
    notification_to: str | None = None
    message_id: str | None = None
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    date: dt.datetime | None = None


@dataclass(frozen=True)
class MessageLimits:
    """What ``parse_message`` accepts."""

    max_bytes: int = 40 * 1024 * 1024
    max_parts: int = 64
    max_attachments: int = 16
    max_depth: int = 8


@dataclass(frozen=True)
class Incoming:
    """A received message. ``headers``: every header as (name, value), in order. ``is_mdn``: a
    ``multipart/report; report-type=disposition-notification`` (read it with ``mssante.mdn.parse_mdn``)."""

    message_id: str | None
    subject: str
    sender: str
    to: tuple[str, ...]
    date: dt.datetime | None
    in_reply_to: str | None
    references: tuple[str, ...]
    cda_codes: tuple[str, ...]
    end_of_conversation: bool
    notification_to: str | None
    body: str = field(repr=False)
    xdm_archives: tuple[Attachment, ...]
    pdfs: tuple[Attachment, ...]
    others: tuple[Attachment, ...]
    is_mdn: bool
    headers: tuple[tuple[str, str], ...] = field(repr=False)


def xdm_subject(label: str, family: str, given: str, birth_date: dt.date) -> str:
    """``XDM/1.0/DDM+<libellé> <NOM> <prénom> <date de naissance>``, e.g. ``XDM/1.0/DDM+DLU DUPONT Jeanne 02/03/1931``.

    UNCONFIRMED (ECO.2.1.3 as reported by secondary sources): the exact spacing and the date format
    (``SUBJECT_DATE_FORMAT``); the family name is written in capitals and the first given name as stored.
    """
    parts = [label.strip(), family.strip().upper(), given.strip(), birth_date.strftime(SUBJECT_DATE_FORMAT)]
    if not all(parts) or any(_LINE_BREAK.search(p) for p in parts):
        raise MessageError("the subject needs a label, a family name and a given name, without line breaks")
    return SUBJECT_PREFIX + " ".join(parts)


def build_message(outgoing: Outgoing) -> EmailMessage:
    """The MIME message of ``outgoing``: text body, then ``IHE_XDM.ZIP``, then the PDF copy.

    Raises ``MessageError`` for an unusable address, a header with a line break, no recipient, a malformed
    Message-ID or CDA code, or an XDM archive the reader refuses or that names more than one patient.
    """
    if not outgoing.to:
        raise MessageError("a message needs at least one recipient")
    sender = _address(outgoing.sender)
    recipients = [_address(a) for a in outgoing.to]
    for value in (outgoing.subject, outgoing.in_reply_to or "", *outgoing.references):
        if _LINE_BREAK.search(value):
            raise MessageError("a header value holds a line break")
    cda_codes = outgoing.cda_codes
    if outgoing.xdm is not None:
        cda_codes = cda_codes or _xdm_codes(outgoing.xdm)
    for code in cda_codes:
        if not _CODE.match(code):
            raise MessageError("an X-MSS-CODECDA value is not a code")
    message_id = outgoing.message_id or make_msgid(domain=sender.domain or None)
    for one_id in (message_id, outgoing.in_reply_to, *outgoing.references):
        if one_id is not None and not _MESSAGE_ID.match(one_id):
            raise MessageError("a message id is not of the form <left@right>")

    msg = EmailMessage(policy=email_policy.SMTP)
    msg["From"] = sender
    msg["To"] = recipients
    msg["Subject"] = outgoing.subject
    msg["Date"] = format_datetime(outgoing.date or dt.datetime.now(dt.UTC))
    msg["Message-ID"] = message_id
    if outgoing.in_reply_to:
        msg["In-Reply-To"] = outgoing.in_reply_to
    if outgoing.references:
        msg["References"] = " ".join(outgoing.references)
    if outgoing.notification_to:
        msg["Disposition-Notification-To"] = _address(outgoing.notification_to).addr_spec
    if cda_codes:
        # UNCONFIRMED: how several codes are written (one header, comma-separated, here; parse_message reads both).
        msg[HEADER_CODE_CDA] = ", ".join(cda_codes)
    if outgoing.end_of_conversation:
        msg[HEADER_MES] = MES_END
    msg.set_content(outgoing.body, cte="quoted-printable")
    if outgoing.xdm is not None:
        msg.add_attachment(outgoing.xdm, maintype="application", subtype="zip", filename=ARCHIVE_NAME)
    if outgoing.pdf is not None:
        maintype, _, subtype = outgoing.pdf.content_type.partition("/")
        msg.add_attachment(outgoing.pdf.data, maintype=maintype, subtype=subtype, filename=outgoing.pdf.filename)
    return msg


def _address(value: str) -> Address:
    if _LINE_BREAK.search(value) or value.count("@") != 1:
        raise MessageError("an address is not of the form local@domain")
    local, domain = value.strip().rsplit("@", 1)
    try:
        address = Address(addr_spec=f"{local}@{domain}")
    except (ValueError, IndexError, HeaderParseError):
        raise MessageError("an address is not of the form local@domain") from None
    if not address.username or not address.domain:
        raise MessageError("an address is not of the form local@domain")
    return address


def _xdm_codes(xdm: bytes) -> tuple[str, ...]:
    """The LOINC typeCodes of the XML documents of ``xdm``, which must name one patient only (ECO.2.1.1)."""
    try:
        package = read_xdm(xdm)
    except XdmRefused as exc:
        raise MessageError(f"the XDM attachment is refused: {exc.reason}") from None
    if len({s.submission_set.patient_id for s in package.subsets}) != 1:
        raise MessageError("one patient per message: the XDM archive names several")
    codes: list[str] = []
    for document in package.documents:
        code = document.type_code
        if document.mime_type in _XML_TYPES and code and code.scheme == LOINC_OID and code.code not in codes:
            codes.append(code.code)
    return tuple(codes)


# ----------------------------------------------------------------------------------------------------------------
# Parsing


def parse_message(data: bytes, *, limits: MessageLimits = MessageLimits()) -> Incoming:
    """The parts of a received message; ``MessageRefused`` when it exceeds ``limits`` or is not a message."""
    if len(data) > limits.max_bytes:
        raise MessageRefused(f"the message is larger than {limits.max_bytes} bytes")
    try:
        msg = BytesParser(policy=email_policy.default).parsebytes(data)
    except (EmailParseError, ValueError, RecursionError):
        raise MessageRefused("not a parsable message") from None
    if not isinstance(msg, EmailMessage) or not msg.keys():
        raise MessageRefused("not a message: no header")
    try:
        leaves = _leaves(msg, limits)
        body_part = msg.get_body(preferencelist=("plain",))
        attachments = [_attachment(p) for p in leaves if p is not body_part]
        headers = tuple((name, str(value)) for name, value in msg.items())
        body = _text(body_part) if isinstance(body_part, EmailMessage) else ""
        notification = msg.get("Disposition-Notification-To")
        incoming = Incoming(
            message_id=_one_id(msg.get("Message-ID")),
            subject=str(msg.get("Subject", "")),
            sender=_first_address(msg.get("From")),
            to=_addresses(msg.get_all("To") or []),
            date=_date(msg.get("Date")),
            in_reply_to=_one_id(msg.get("In-Reply-To")),
            references=tuple(re.findall(r"<[^<>\s]+>", " ".join(str(v) for v in msg.get_all("References") or []))),
            cda_codes=tuple(code for value in msg.get_all(HEADER_CODE_CDA) or []
                            for code in re.split(r"[\s,;]+", str(value)) if code),
            end_of_conversation=any(str(v).strip().upper() == MES_END for v in msg.get_all(HEADER_MES) or []),
            notification_to=_first_address(notification) or None if notification is not None else None,
            body=body,
            xdm_archives=tuple(a for a in attachments if _is_zip(a)),
            pdfs=tuple(a for a in attachments if _is_pdf(a)),
            others=tuple(a for a in attachments if not _is_zip(a) and not _is_pdf(a)),
            is_mdn=(msg.get_content_type() == "multipart/report"
                    and (msg.get_param("report-type") or "") == "disposition-notification"),
            headers=headers,
        )
    except MessageRefused:
        raise
    except (EmailParseError, ValueError, LookupError, RecursionError, TypeError):
        raise MessageRefused("a header or a part cannot be read") from None
    if len(attachments) > limits.max_attachments:
        raise MessageRefused(f"{len(attachments)} attachments, more than {limits.max_attachments}")
    return incoming


def _leaves(msg: EmailMessage, limits: MessageLimits) -> list[EmailMessage]:
    """The non-multipart parts, depth first; a ``message/*`` part is a leaf (never opened)."""
    leaves: list[EmailMessage] = []
    stack: list[tuple[Message, int]] = [(msg, 1)]
    count = 0
    while stack:
        part, depth = stack.pop()
        count += 1
        if count > limits.max_parts:
            raise MessageRefused(f"more than {limits.max_parts} MIME parts")
        if depth > limits.max_depth:
            raise MessageRefused(f"MIME parts nested deeper than {limits.max_depth} levels")
        if part.get_content_maintype() == "multipart":
            children = part.get_payload()
            if isinstance(children, list):
                stack.extend((child, depth + 1) for child in reversed(children) if isinstance(child, Message))
        elif isinstance(part, EmailMessage):
            leaves.append(part)
    return leaves


def _attachment(part: EmailMessage) -> Attachment:
    if part.get_content_maintype() == "message":
        data = part.as_bytes(policy=email_policy.SMTP).split(b"\r\n\r\n", 1)[-1]
    else:
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
    return Attachment(filename=part.get_filename() or "", content_type=part.get_content_type(), data=data)


def _text(part: EmailMessage) -> str:
    payload = part.get_payload(decode=True)
    raw = payload if isinstance(payload, bytes) else b""
    charset = part.get_content_charset() or "utf-8"
    try:
        text = raw.decode(charset, errors="replace")
    except LookupError:
        text = raw.decode("utf-8", errors="replace")
    return text.replace("\r\n", "\n")


def _one_id(value: object) -> str | None:
    found = re.search(r"<[^<>\s]+>", str(value)) if value is not None else None
    return found.group(0) if found else None


def _first_address(value: object) -> str:
    addresses = _addresses([value] if value is not None else [])
    return addresses[0] if addresses else ""


def _addresses(values: Sequence[object]) -> tuple[str, ...]:
    found: list[str] = []
    for value in values:
        addresses = getattr(value, "addresses", None)
        if addresses is not None:
            found.extend(a.addr_spec for a in addresses if a.addr_spec and a.addr_spec != "<>")
        else:  # a header the registry does not know as an address header (Disposition-Notification-To)
            found.extend(spec for _, spec in getaddresses([str(value)]) if "@" in spec)
    return tuple(found)


def _date(value: object) -> dt.datetime | None:
    if value is None:
        return None
    try:
        return parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError):
        return None


def _is_zip(attachment: Attachment) -> bool:
    return attachment.content_type in _ZIP_TYPES or attachment.filename.lower().endswith(".zip")


def _is_pdf(attachment: Attachment) -> bool:
    return attachment.content_type == "application/pdf" or attachment.filename.lower().endswith(".pdf")
