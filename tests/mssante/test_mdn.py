"""RFC 8098 MDNs: built for a received message, parsed back; MDNs in other spellings read as well."""

from __future__ import annotations

import datetime as dt

import pytest

from mssante.errors import MdnError, MessageError
from mssante.mdn import IntegrationCode, build_mdn, parse_mdn
from mssante.message import Outgoing, build_message, parse_message

OUR_BOX = "dui@ehpad-tilleuls.mssante.fr"
THEIR_BOX = "secretariat@hopital.mssante.fr"
SUBJECT = "XDM/1.0/DDM+CR TESTMSS Hélène 05/03/1927"


def _received(notification: bool = True) -> bytes:
    return build_message(Outgoing(
        sender=THEIR_BOX, to=(OUR_BOX,), subject=SUBJECT, body="CR joint", message_id="<cr-42@hopital.mssante.fr>",
        notification_to=THEIR_BOX if notification else None, references=("<cr-41@hopital.mssante.fr>",),
    )).as_bytes()


def _mdn(error: IntegrationCode | None) -> bytes:
    return build_mdn(parse_message(_received()), sender=OUR_BOX, final_recipient=OUR_BOX,
                     reporting_ua="dui-ehpad; 0.1.0", error=error,
                     date=dt.datetime(2026, 1, 5, tzinfo=dt.UTC)).as_bytes()


def test_a_success_mdn_round_trips() -> None:
    raw = _mdn(None)
    assert b"report-type=disposition-notification" in raw.replace(b'"', b"")
    assert b"Disposition: automatic-action/MDN-sent-automatically; processed\r\n" in raw
    incoming = parse_message(raw)
    assert incoming.is_mdn and incoming.to == (THEIR_BOX,)
    assert incoming.in_reply_to == "<cr-42@hopital.mssante.fr>"
    assert incoming.references == ("<cr-41@hopital.mssante.fr>", "<cr-42@hopital.mssante.fr>")
    result = parse_mdn(raw)
    assert result.processed
    assert result.original_message_id == "<cr-42@hopital.mssante.fr>"
    assert (result.action_mode, result.sending_mode, result.disposition_type) == (
        "automatic-action", "mdn-sent-automatically", "processed")
    assert (result.final_recipient, result.original_recipient) == (OUR_BOX, OUR_BOX)
    assert result.reporting_ua == "dui-ehpad; 0.1.0"
    assert result.error_code is None and result.integration_code is None


@pytest.mark.parametrize("code", list(IntegrationCode))
def test_an_error_mdn_carries_the_integration_code(code: IntegrationCode) -> None:
    raw = _mdn(code)
    result = parse_mdn(raw)
    assert not result.processed
    assert result.modifiers == ("error",)
    assert result.integration_code is code and result.error_code == str(code.value)
    assert result.subject == f"[KO Intégration système !][{code.value}] {SUBJECT}"
    assert f"Error: {code.value}^".encode() in raw


def test_labels_of_the_documented_codes() -> None:
    assert IntegrationCode(902).label == "Patient inconnu"
    assert IntegrationCode.INS_TRAITS_MISMATCH.value == 904
    assert "non confirmé" in IntegrationCode(906).label  # UNCONFIRMED labels say so
    assert parse_mdn(_mdn(IntegrationCode.INS_TRAITS_MISMATCH)).error_label == \
        "INS incoherent avec les traits d'identite"  # 7-bit fields part


def test_no_mdn_for_a_message_that_asked_for_none() -> None:
    with pytest.raises(MessageError, match="asks for no disposition notification"):
        build_mdn(parse_message(_received(notification=False)), sender=OUR_BOX, final_recipient=OUR_BOX,
                  reporting_ua="dui-ehpad; 0.1.0")


def test_no_mdn_for_an_mdn() -> None:
    mdn = parse_message(_mdn(None))
    assert mdn.is_mdn
    with pytest.raises(MessageError, match="never answered"):
        build_mdn(mdn, sender=OUR_BOX, final_recipient=OUR_BOX, reporting_ua="dui-ehpad; 0.1.0")


FOREIGN = (
    "From: robot@hopital.mssante.fr\r\nTo: dui@ehpad-tilleuls.mssante.fr\r\n"
    "Subject: [KO Int=?utf-8?q?=C3=A9?=gration syst=?utf-8?q?=C3=A8?=me !][903] XDM/1.0/DDM+DLU X Y 01/01/1930\r\n"
    "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=disposition-notification; boundary=zz\r\n\r\n"
    "--zz\r\nContent-Type: text/plain\r\n\r\nKO\r\n"
    "--zz\r\nContent-Type: message/disposition-notification\r\n\r\n"
    "Reporting-UA: moteur; 2\r\nFinal-Recipient: rfc822; robot@hopital.mssante.fr\r\n"
    "Original-Message-ID: <dlu-7@ehpad-tilleuls.mssante.fr>\r\n"
    "Disposition: automatic-action/MDN-sent-automatically; {disposition}\r\n{extra}"
    "--zz--\r\n"
)


@pytest.mark.parametrize(("disposition", "extra", "code", "label"), [
    ("processed/Error: 903^INS absent", "", "903", "INS absent"),
    ("processed/error", "Error: 905^INS incomplet\r\n", "905", "INS incomplet"),
    ("processed/error", "", "903", None),  # only the subject says which
])
def test_mdns_from_other_engines_are_read(disposition: str, extra: str, code: str, label: str | None) -> None:
    result = parse_mdn(FOREIGN.format(disposition=disposition, extra=extra).encode())
    assert not result.processed
    assert (result.error_code, result.error_label) == (code, label)
    assert result.original_message_id == "<dlu-7@ehpad-tilleuls.mssante.fr>"
    assert result.final_recipient == "robot@hopital.mssante.fr"


def test_a_plain_message_is_not_an_mdn() -> None:
    with pytest.raises(MdnError, match="not a multipart/report"):
        parse_mdn(_received())
