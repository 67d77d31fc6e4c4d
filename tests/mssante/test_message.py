"""MSSanté MIME messages: built, serialised, parsed back; hostile or oversized input refused."""

from __future__ import annotations

import datetime as dt
import email
from email import policy

import pytest

from mssante.errors import MessageError, MessageRefused
from mssante.message import (
    Attachment,
    MessageLimits,
    Outgoing,
    build_message,
    parse_message,
    xdm_subject,
)
from mssante.xdm import XdmFile, build_xdm, fill_document_slots
from tests.mssante.samples import CDA, PDF, SENDER, cda_doc, submit_objects

FROM = "dui@ehpad-tilleuls.mssante.fr"
PATIENT_BOX = "279035121518989@patient.mssante.fr"


def _xdm(patient: str | None = None) -> bytes:
    doc = cda_doc()
    document = XdmFile("DOC0001.XML", CDA)
    metadata = submit_objects([doc], patient) if patient else submit_objects([doc])
    return build_xdm([document], fill_document_slots(metadata, {doc.entry_id: document}), SENDER)


def _outgoing(**changes: object) -> Outgoing:
    values: dict[str, object] = {
        "sender": FROM, "to": (PATIENT_BOX,),
        "subject": xdm_subject("DLU", "Testmss", "Hélène", dt.date(1927, 3, 5)),
        "body": "Bonjour,\nveuillez trouver le DLU de votre proche.\n", "xdm": _xdm(),
        "pdf": Attachment("DLU.PDF", "application/pdf", PDF), "end_of_conversation": True,
        "notification_to": FROM, "message_id": "<m1.abc@ehpad-tilleuls.mssante.fr>",
        "in_reply_to": "<m0@hopital.mssante.fr>", "references": ("<m-1@hopital.mssante.fr>", "<m0@hopital.mssante.fr>"),
        "date": dt.datetime(2026, 1, 5, 12, 30, tzinfo=dt.UTC),
    }
    values.update(changes)
    return Outgoing(**values)  # type: ignore[arg-type]


def test_subject_follows_the_xdm_convention() -> None:
    assert xdm_subject("DLU", "Testmss", "Hélène", dt.date(1927, 3, 5)) == "XDM/1.0/DDM+DLU TESTMSS Hélène 05/03/1927"
    with pytest.raises(MessageError):
        xdm_subject("DLU\r\nBcc: x@y", "A", "B", dt.date(1927, 3, 5))


def test_a_built_message_has_the_mssante_headers_and_parts() -> None:
    raw = build_message(_outgoing()).as_bytes()
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")  # SMTP line ends only
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert msg["X-MSS-CODECDA"] == "74207-2"  # the CDA's typeCode, read from the XDM
    assert msg["X-MSS-MES"] == "FIN"
    assert msg["Disposition-Notification-To"] == FROM
    assert msg["Message-ID"] == "<m1.abc@ehpad-tilleuls.mssante.fr>"
    assert msg["In-Reply-To"] == "<m0@hopital.mssante.fr>"
    assert msg["References"] == "<m-1@hopital.mssante.fr> <m0@hopital.mssante.fr>"
    assert msg["Date"] == "Mon, 05 Jan 2026 12:30:00 +0000"
    assert msg["Subject"] == "XDM/1.0/DDM+DLU TESTMSS Hélène 05/03/1927"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "application/zip", "application/pdf"]
    assert [p.get_filename() for p in msg.iter_attachments()] == ["IHE_XDM.ZIP", "DLU.PDF"]


def test_build_then_parse_gives_back_what_was_sent() -> None:
    outgoing = _outgoing()
    incoming = parse_message(build_message(outgoing).as_bytes())
    assert incoming.message_id == outgoing.message_id
    assert incoming.subject == outgoing.subject
    assert (incoming.sender, incoming.to) == (FROM, (PATIENT_BOX,))
    assert incoming.date == outgoing.date
    assert incoming.in_reply_to == outgoing.in_reply_to and incoming.references == outgoing.references
    assert incoming.cda_codes == ("74207-2",)
    assert incoming.end_of_conversation and incoming.notification_to == FROM
    assert incoming.body == outgoing.body
    assert [a.data for a in incoming.xdm_archives] == [outgoing.xdm]
    assert [(a.filename, a.data) for a in incoming.pdfs] == [("DLU.PDF", PDF)]
    assert incoming.others == () and not incoming.is_mdn
    assert ("X-MSS-MES", "FIN") in incoming.headers


def test_defaults_make_a_message_id_and_a_date() -> None:
    msg = build_message(_outgoing(message_id=None, date=None, in_reply_to=None, references=(), xdm=None, pdf=None,
                                  end_of_conversation=False, notification_to=None))
    assert msg["Message-ID"].endswith("@ehpad-tilleuls.mssante.fr>")
    assert msg["Date"] and "X-MSS-MES" not in msg and "X-MSS-CODECDA" not in msg
    assert "Disposition-Notification-To" not in msg and not msg.is_multipart()


def test_given_cda_codes_are_kept_and_several_are_read_back() -> None:
    incoming = parse_message(build_message(_outgoing(cda_codes=("74207-2", "11488-4"))).as_bytes())
    assert incoming.cda_codes == ("74207-2", "11488-4")
    also = parse_message(b"From: a@b.fr\r\nX-MSS-CODECDA: 11488-4\r\nX-MSS-CODECDA: 34133-9\r\n\r\nx\r\n")
    assert also.cda_codes == ("11488-4", "34133-9")


def test_one_patient_per_message() -> None:
    two = build_xdm_two_patients()
    with pytest.raises(MessageError, match="one patient per message"):
        build_message(_outgoing(xdm=two))


def build_xdm_two_patients() -> bytes:
    """Two subsets, each with its own patient (a zip the builder of one subset cannot make: assembled here)."""
    import io
    import zipfile

    first, second = _xdm(), _xdm("185057512345673^^^&1.2.250.1.213.1.4.10&ISO")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for source, folder in ((first, "SUBSET01"), (second, "SUBSET02")):
            with zipfile.ZipFile(io.BytesIO(source)) as zf:
                for name in zf.namelist():
                    if name.startswith("IHE_XDM/SUBSET01/") and not name.endswith("/"):
                        archive.writestr(name.replace("SUBSET01", folder), zf.read(name))
    return out.getvalue()


@pytest.mark.parametrize("changes", [
    {"to": ()},
    {"to": ("not-an-address",)},
    {"sender": "dui@ehpad.fr\r\nBcc: spy@evil.example"},
    {"subject": "XDM/1.0/DDM+DLU X\r\nBcc: spy@evil.example"},
    {"message_id": "no-brackets@x"},
    {"in_reply_to": "<a@b>\r\nBcc: spy@evil.example"},
    {"cda_codes": ("74207-2\r\nX-Evil: 1",)},
    {"xdm": b"PK\x05\x06" + b"\0" * 18},
])
def test_unusable_values_are_refused(changes: dict[str, object]) -> None:
    with pytest.raises(MessageError):
        build_message(_outgoing(**changes))


def test_an_oversized_message_is_refused_before_parsing() -> None:
    with pytest.raises(MessageRefused, match="larger than 100 bytes"):
        parse_message(b"From: a@b.fr\r\n\r\n" + b"x" * 200, limits=MessageLimits(max_bytes=100))


def _multipart(parts: int, nested: int = 0) -> bytes:
    inner = "".join(f"--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; "
                    f"filename=\"f{i}.bin\"\r\n\r\ndata{i}\r\n" for i in range(parts))
    body = f"{inner}--b--\r\n"
    for level in range(nested):
        inner_boundary = "b" if level == 0 else f"n{level - 1}"
        body = (f"--n{level}\r\nContent-Type: multipart/mixed; boundary=\"{inner_boundary}\"\r\n"
                f"\r\n{body}--n{level}--\r\n")
    top = "b" if nested == 0 else f"n{nested - 1}"
    return (f"From: a@b.fr\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"{top}\"\r\n\r\n"
            f"{body}").encode()


def test_attachment_count_is_capped() -> None:
    assert len(parse_message(_multipart(16)).others) == 16
    with pytest.raises(MessageRefused, match="17 attachments, more than 16"):
        parse_message(_multipart(17))


def test_part_count_and_nesting_are_capped() -> None:
    with pytest.raises(MessageRefused, match="more than 64 MIME parts"):
        parse_message(_multipart(80), limits=MessageLimits(max_attachments=100))
    assert parse_message(_multipart(1, nested=6)).others
    with pytest.raises(MessageRefused, match="nested deeper than 8"):
        parse_message(_multipart(1, nested=8))


def test_garbage_is_not_a_message() -> None:
    with pytest.raises(MessageRefused):
        parse_message(b"")


def test_an_unknown_charset_does_not_break_the_body() -> None:
    incoming = parse_message(b"From: a@b.fr\r\nContent-Type: text/plain; charset=x-unknown\r\n\r\nBonjour\r\n")
    assert incoming.body.strip() == "Bonjour"
