"""Message disposition notifications (RFC 8098) as MSSanté integration acknowledgements.

A receiving integration engine answers a message that asked for one (``Disposition-Notification-To``) with a
``multipart/report; report-type=disposition-notification``: a human-readable part, then a
``message/disposition-notification`` part whose fields are ``Reporting-UA``, ``Original-Recipient``,
``Final-Recipient``, ``Original-Message-ID`` and ``Disposition``:

- success: ``Disposition: automatic-action/MDN-sent-automatically; processed``;
- failure: ``processed/error`` and the MSSanté integration code as ``<code>^<label>``, which we write in the
  RFC's ``Error`` field; the subject then begins with ``[KO Intégration système !][<code>] `` followed by the
  original subject (MSS-LPS ``struct-msg-mdn.md``). UNCONFIRMED: whether MSS-LPS puts
  ``<code>^<label>`` in an ``Error`` field (as here) or on the Disposition line; ``parse_mdn`` reads both, and
  falls back on the subject's code.

The fields part is 7-bit (RFC 8098 §3.1), so the label written there is the label without accents.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
import unicodedata
from dataclasses import dataclass
from email import policy as email_policy
from email.errors import MessageError as EmailParseError
from email.message import EmailMessage, Message, MIMEPart
from email.parser import BytesParser
from email.utils import format_datetime, make_msgid

from mssante.errors import MdnError, MessageError
from mssante.message import Incoming

KO_PREFIX = "[KO Intégration système !]"
# UNCONFIRMED: the subject of a success acknowledgement is not given by the sources we have; our wording.
OK_PREFIX = "Accusé de traitement : "
SENT_AUTOMATICALLY = "automatic-action/MDN-sent-automatically"
_DISPOSITION_TYPES = ("application/disposition-notification", "message/disposition-notification",
                      "message/global-disposition-notification")
_KO_SUBJECT = re.compile(r"^\s*\[KO[^\]]*\]\s*\[(\d{3})\]")
_CODE_LABEL = re.compile(r"(\d{3})\s*\^\s*([^\r\n]*)")
_LINE_BREAK = re.compile(r"[\r\n]")


class IntegrationCode(enum.IntEnum):
    """MSSanté integration error codes (MSS-LPS ``error-codes.md``), 900 to 906.

    Our sources give the meaning of 902 to 905. The meanings and labels of 900, 901 and 906 are UNCONFIRMED
    (not in the sources we have): their members are named by number and their labels say so. Every label is our
    own wording; the exact texts of error-codes.md are UNCONFIRMED.
    """

    ERROR_900 = 900
    ERROR_901 = 901
    PATIENT_UNKNOWN = 902
    INS_MISSING = 903
    INS_TRAITS_MISMATCH = 904
    INS_INCOMPLETE = 905
    ERROR_906 = 906

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    IntegrationCode.ERROR_900: "Erreur d'intégration 900 (libellé non confirmé)",
    IntegrationCode.ERROR_901: "Erreur d'intégration 901 (libellé non confirmé)",
    IntegrationCode.PATIENT_UNKNOWN: "Patient inconnu",
    IntegrationCode.INS_MISSING: "INS absent",
    IntegrationCode.INS_TRAITS_MISMATCH: "INS incohérent avec les traits d'identité",
    IntegrationCode.INS_INCOMPLETE: "INS incomplet",
    IntegrationCode.ERROR_906: "Erreur d'intégration 906 (libellé non confirmé)",
}


@dataclass(frozen=True)
class Disposition:
    """A parsed MDN. ``disposition_type``: processed, displayed, deleted...; ``modifiers``: e.g. ``("error",)``.

    ``error_code``/``error_label`` as written (``integration_code`` when the code is one of 900-906).
    """

    original_message_id: str | None
    reporting_ua: str
    original_recipient: str
    final_recipient: str
    action_mode: str
    sending_mode: str
    disposition_type: str
    modifiers: tuple[str, ...]
    error_code: str | None
    error_label: str | None
    subject: str

    @property
    def integration_code(self) -> IntegrationCode | None:
        if self.error_code is None:
            return None
        try:
            return IntegrationCode(int(self.error_code))
        except ValueError:
            return None

    @property
    def processed(self) -> bool:
        """Integrated without error."""
        return self.disposition_type == "processed" and "error" not in self.modifiers and self.error_code is None


def build_mdn(original: Incoming, *, sender: str, final_recipient: str, reporting_ua: str,
              error: IntegrationCode | None = None, date: dt.datetime | None = None) -> EmailMessage:
    """The MDN answering ``original``: "processed", or "processed/error" with ``error``'s ``<code>^<label>``.

    ``sender``: our mailbox (From); ``final_recipient``: the mailbox the original reached; ``reporting_ua``:
    ``<name>; <version>`` of this software. Raises ``MessageError`` when the original asked for no notification
    (no ``Disposition-Notification-To``), has no Message-ID, or is itself an MDN (RFC 8098 §2.1: never answered,
    so that two engines cannot acknowledge each other forever).
    """
    if original.is_mdn:
        raise MessageError("an MDN is never answered with an MDN")
    if not original.notification_to:
        raise MessageError("the original message asks for no disposition notification")
    if not original.message_id:
        raise MessageError("the original message has no Message-ID")
    for value in (sender, final_recipient, reporting_ua):
        if _LINE_BREAK.search(value):
            raise MessageError("a field value holds a line break")
    recipient_field = next((v for k, v in original.headers if k.lower() == "original-recipient"), None)
    fields = [
        f"Reporting-UA: {reporting_ua}",
        f"Original-Recipient: {_one_line(recipient_field) if recipient_field else 'rfc822;' + final_recipient}",
        f"Final-Recipient: rfc822;{final_recipient}",
        f"Original-Message-ID: {original.message_id}",
        f"Disposition: {SENT_AUTOMATICALLY}; processed" + ("/error" if error is not None else ""),
    ]
    if error is not None:
        fields.append(f"Error: {error.value}^{_ascii(error.label)}")
        subject = f"{KO_PREFIX}[{error.value}] {original.subject}"
        human = (f"Le message {original.message_id} n'a pas pu être intégré.\r\n"
                 f"Code {error.value} : {error.label}.\r\n")
    else:
        subject = f"{OK_PREFIX}{original.subject}"
        human = f"Le message {original.message_id} a été intégré.\r\n"

    msg = EmailMessage(policy=email_policy.SMTP)
    msg["From"] = sender
    msg["To"] = original.notification_to
    msg["Subject"] = _one_line(subject)
    msg["Date"] = format_datetime(date or dt.datetime.now(dt.UTC))
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
    msg["In-Reply-To"] = original.message_id
    msg["References"] = " ".join((*original.references, original.message_id))
    msg["Auto-Submitted"] = "auto-replied"  # RFC 3834: no automatic answer to this one
    msg["MIME-Version"] = "1.0"
    msg["Content-Type"] = "multipart/report; report-type=disposition-notification"
    text = MIMEPart(policy=email_policy.SMTP)
    text.set_content(human, cte="quoted-printable")
    report = MIMEPart(policy=email_policy.SMTP)
    report["Content-Type"] = "message/disposition-notification"
    report["Content-Transfer-Encoding"] = "7bit"
    report.set_payload("\r\n".join(fields) + "\r\n")
    msg.set_payload([text, report])
    return msg


def parse_mdn(data: bytes | EmailMessage) -> Disposition:
    """The disposition of a received MDN; ``MdnError`` when it is not a disposition notification."""
    try:
        msg = data if isinstance(data, EmailMessage) else BytesParser(policy=email_policy.default).parsebytes(data)
    except (EmailParseError, ValueError):
        raise MdnError("not a parsable message") from None
    if not isinstance(msg, EmailMessage) or msg.get_content_type() != "multipart/report":
        raise MdnError("not a multipart/report")
    part = next((p for p in msg.iter_parts() if p.get_content_type() in _DISPOSITION_TYPES), None)
    if part is None:
        raise MdnError("no message/disposition-notification part")
    fields = _fields(part)
    disposition = fields.get("disposition", "")
    modes, _, kind = disposition.partition(";")
    action_mode, _, sending_mode = modes.strip().partition("/")
    kind = kind.strip()
    inline_error = ""
    if ":" in kind:  # "processed/Error: 902^label" written on the Disposition line
        kind, _, inline_error = kind.partition(":")
    disposition_type, _, modifier_text = kind.strip().partition("/")
    if not disposition_type:
        raise MdnError("no Disposition field")
    subject = str(msg.get("Subject", ""))
    error_code, error_label = _error(fields.get("error", "") or inline_error, subject)
    return Disposition(
        original_message_id=_one_id(fields.get("original-message-id", "")),
        reporting_ua=fields.get("reporting-ua", ""),
        original_recipient=_address(fields.get("original-recipient", "")),
        final_recipient=_address(fields.get("final-recipient", "")),
        action_mode=action_mode.strip().lower(),
        sending_mode=sending_mode.strip().lower(),
        disposition_type=disposition_type.strip().lower(),
        modifiers=tuple(m.strip().lower() for m in modifier_text.split(",") if m.strip()),
        error_code=error_code,
        error_label=error_label,
        subject=subject,
    )


def _fields(part: Message) -> dict[str, str]:
    """The fields of the notification part, names in lower case (the first of each)."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload and isinstance(payload[0], Message):
        items = list(payload[0].items())
    else:
        raw = part.get_payload(decode=True)
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(payload)
        items = [(line.partition(":")[0], line.partition(":")[2])
                 for line in re.sub(r"\r?\n[ \t]+", " ", text).splitlines() if ":" in line]
    fields: dict[str, str] = {}
    for name, value in items:
        fields.setdefault(str(name).strip().lower(), " ".join(str(value).split()))
    return fields


def _error(text: str, subject: str) -> tuple[str | None, str | None]:
    found = _CODE_LABEL.search(text)
    if found:
        return found.group(1), found.group(2).strip() or None
    from_subject = _KO_SUBJECT.match(subject)
    if from_subject:
        return from_subject.group(1), None
    return None, (text.strip() or None)


def _one_id(value: str) -> str | None:
    found = re.search(r"<[^<>\s]+>", value)
    return found.group(0) if found else None


def _address(value: str) -> str:
    """``rfc822;someone@example.org`` → ``someone@example.org``."""
    return value.partition(";")[2].strip() if ";" in value else value.strip()


def _one_line(value: str) -> str:
    return " ".join(value.split())


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _one_line(folded)
