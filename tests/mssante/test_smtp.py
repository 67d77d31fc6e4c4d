"""SMTP submission against a real aiosmtpd server with STARTTLS (or implicit TLS) and client certificates."""

from __future__ import annotations

import email
from email import policy
from email.message import EmailMessage

import pytest

from ins.insi.pki import CLIENT_COMMON_NAME, Pki
from mssante.errors import MessageError, Permanent, Transient, TransportError
from mssante.memory import InMemoryMailbox
from mssante.message import Outgoing, build_message
from mssante.smtp import SmtpSender
from mssante.transport import MailSender, parse_url, scrub, tls_context
from tests.mailservers import SmtpServer, free_port, running_smtp

FROM = "dui@ehpad-tilleuls.mssante.fr"
TO = "279035121518989@patient.mssante.fr"


def _message(message_id: str = "<smtp-1@ehpad-tilleuls.mssante.fr>") -> EmailMessage:
    return build_message(Outgoing(sender=FROM, to=(TO,), subject="XDM/1.0/DDM+DLU TESTMSS Hélène 05/03/1927",
                                  body="Bonjour", message_id=message_id))


def _sender(url: str, pki: Pki, *, cert: bool = True, untrusted: bool = False, timeout: float = 5.0) -> SmtpSender:
    cert_file = str(pki.untrusted_client_cert if untrusted else pki.client_cert) if cert else ""
    key_file = str(pki.untrusted_client_key if untrusted else pki.client_key) if cert else ""
    return SmtpSender(url, cert_file=cert_file, key_file=key_file, ca_file=str(pki.ca_cert), timeout=timeout)


def test_sent_over_starttls_with_the_client_certificate(smtp_server: SmtpServer, pki: Pki) -> None:
    sender: MailSender = _sender(smtp_server.url, pki)
    result = sender.send(_message())
    assert (result.message_id, result.accepted, dict(result.refused)) == ("<smtp-1@ehpad-tilleuls.mssante.fr>", 1, {})
    (received,) = smtp_server.received
    assert (received.mail_from, received.rcpt_tos, received.client_cn) == (FROM, (TO,), CLIENT_COMMON_NAME)
    parsed = email.message_from_bytes(received.data, policy=policy.default)
    assert parsed["Message-ID"] == "<smtp-1@ehpad-tilleuls.mssante.fr>"
    assert parsed["Subject"] == "XDM/1.0/DDM+DLU TESTMSS Hélène 05/03/1927"


def test_sent_over_implicit_tls(pki: Pki) -> None:
    with running_smtp(pki, implicit_tls=True) as server:
        assert server.url.startswith("smtps://")
        _sender(server.url, pki).send(_message())
        assert [r.client_cn for r in server.received] == [CLIENT_COMMON_NAME]


@pytest.mark.parametrize(("cert", "untrusted"), [(False, False), (True, True)], ids=["no-cert", "other-ca-cert"])
def test_refused_without_a_client_certificate_of_our_ca(smtp_server: SmtpServer, pki: Pki, cert: bool,
                                                         untrusted: bool) -> None:
    """CERT_REQUIRED: the server ends the handshake. Whether the client reads the TLS alert or only the
    dropped connection depends on timing (TLS 1.3 sends the alert after the client's Finished); either way
    nothing is accepted and the error is a transport error."""
    with pytest.raises(TransportError):
        _sender(smtp_server.url, pki, cert=cert, untrusted=untrusted).send(_message())
    assert smtp_server.received == []


@pytest.mark.parametrize(("cert", "untrusted"), [(False, False), (True, True)], ids=["no-cert", "other-ca-cert"])
def test_a_server_checking_the_certificate_itself_answers_530_permanent(pki: Pki, cert: bool,
                                                                        untrusted: bool) -> None:
    with running_smtp(pki, client_cert="optional") as server:
        if untrusted:  # CERT_OPTIONAL still verifies a certificate that is presented: the handshake fails
            with pytest.raises(TransportError):
                _sender(server.url, pki, cert=cert, untrusted=untrusted).send(_message())
        else:
            with pytest.raises(Permanent) as caught:
                _sender(server.url, pki, cert=cert, untrusted=untrusted).send(_message())
            assert caught.value.code == 530
            assert "530" in str(caught.value) and "Client certificate required" in str(caught.value)
        assert server.received == []


def test_a_server_certificate_from_another_ca_is_permanent(pki: Pki, other_pki: Pki) -> None:
    with running_smtp(pki, server_cert=other_pki.server_cert, server_key=other_pki.server_key) as server:
        with pytest.raises(Permanent, match="certificate is not trusted"):
            _sender(server.url, pki).send(_message())
        assert server.received == []


def test_a_451_is_transient_and_a_retry_goes_through(smtp_server: SmtpServer, pki: Pki) -> None:
    smtp_server.fail_next.append("451 4.3.0 Mailbox temporarily unavailable for 279035121518989@patient.mssante.fr")
    sender = _sender(smtp_server.url, pki)
    with pytest.raises(Transient) as caught:
        sender.send(_message())
    assert caught.value.code == 451
    assert "279035121518989" not in str(caught.value) and "<address>" in str(caught.value)
    sender.send(_message())
    assert len(smtp_server.received) == 1


def test_a_550_is_permanent(smtp_server: SmtpServer, pki: Pki) -> None:
    smtp_server.fail_next.append("550 5.1.1 Recipient rejected")
    with pytest.raises(Permanent) as caught:
        _sender(smtp_server.url, pki).send(_message())
    assert caught.value.code == 550 and smtp_server.received == []


def test_a_partial_refusal_is_reported_not_raised(smtp_server: SmtpServer, pki: Pki) -> None:
    """Some recipients accepted: raising would make the caller resend to them too."""
    other = "secretariat@hopital.mssante.fr"
    smtp_server.refuse_rcpt[TO] = "550 5.1.1 No such mailbox"
    message = build_message(Outgoing(sender=FROM, to=(TO, other), subject="s", body="b", message_id="<p@x.fr>"))
    result = _sender(smtp_server.url, pki).send(message)
    assert (result.accepted, dict(result.refused)) == (1, {TO: 550})
    assert [r.rcpt_tos for r in smtp_server.received] == [(other,)]


@pytest.mark.parametrize(("reply", "category"), [("450 4.2.1 Try later", Transient), ("550 5.1.1 No", Permanent)])
def test_every_recipient_refused(smtp_server: SmtpServer, pki: Pki, reply: str,
                                 category: type[TransportError]) -> None:
    smtp_server.refuse_rcpt[TO] = reply
    with pytest.raises(category, match="refused every recipient"):
        _sender(smtp_server.url, pki).send(_message())
    assert smtp_server.received == []


def test_a_server_down_is_transient(smtp_server: SmtpServer, pki: Pki) -> None:
    smtp_server.stop()
    with pytest.raises(Transient, match="refused the connection"):
        _sender(smtp_server.url, pki).send(_message())
    smtp_server.start()  # back on the same port: the retry is delivered
    _sender(smtp_server.url, pki).send(_message())
    assert len(smtp_server.received) == 1


def test_a_slow_server_is_a_transient_timeout(smtp_server: SmtpServer, pki: Pki) -> None:
    smtp_server.delay = 3.0
    with pytest.raises(Transient, match="did not answer in time"):
        _sender(smtp_server.url, pki, timeout=1.0).send(_message())


def test_nothing_is_sent_in_clear_to_a_server_without_starttls(pki: Pki) -> None:
    with running_smtp(pki, plain=True) as server:
        with pytest.raises(Permanent, match="does not offer STARTTLS"):
            _sender(server.url, pki).send(_message())
        assert server.received == []


def test_a_starttls_client_at_an_implicit_tls_port_gets_no_greeting(pki: Pki) -> None:
    with running_smtp(pki, implicit_tls=True) as server:
        with pytest.raises(Transient, match="did not answer in time"):
            _sender(server.url.replace("smtps://", "smtp://"), pki, timeout=1.0).send(_message())
        assert server.received == []


def test_configuration_errors_are_permanent(pki: Pki, tmp_path: object) -> None:
    with pytest.raises(Permanent, match="must be smtp://host:port or smtps://host:port"):
        SmtpSender("http://127.0.0.1:25", cert_file="", key_file="", ca_file=str(pki.ca_cert))
    with pytest.raises(Permanent, match="CA file is required"):
        tls_context("", "", "")
    with pytest.raises(Permanent, match="CA file cannot be loaded"):
        tls_context("", "", "/nonexistent/ca.pem")
    with pytest.raises(Permanent, match="client certificate or its key"):
        tls_context(str(pki.client_cert), str(pki.untrusted_client_key), str(pki.ca_cert))
    endpoint = parse_url("smtps://robot%40x:p%3Ass@mx.example:2465", ("smtp", "smtps"))
    assert (endpoint.host, endpoint.port, endpoint.implicit_tls, endpoint.username, endpoint.password) == (
        "mx.example", 2465, True, "robot@x", "p:ss")
    assert parse_url("smtp://mx.example", ("smtp", "smtps")).port == 587


def test_a_message_without_message_id_is_refused_before_connecting(pki: Pki) -> None:
    message = _message()
    del message["Message-ID"]
    with pytest.raises(MessageError):
        _sender(f"smtp://127.0.0.1:{free_port()}", pki).send(message)


def test_scrub_keeps_health_data_out_of_error_lines() -> None:
    assert scrub("550 <279035121518989@patient.mssante.fr>: unknown\r\nsecond 1234567890123 line") == \
        "550 <address>: unknown second <number> line"
    assert len(scrub("x" * 500)) == 160


def test_the_in_memory_twin_behaves_like_a_sender() -> None:
    box = InMemoryMailbox()
    sender: MailSender = box
    box.refuse[TO] = 550
    result = sender.send(build_message(Outgoing(sender=FROM, to=(TO, "other@hopital.mssante.fr"), subject="s",
                                                body="b", message_id="<m@x.fr>")))
    assert (result.accepted, dict(result.refused)) == (1, {TO: 550})
    assert [m["Message-ID"] for m in box.sent] == ["<m@x.fr>"]
    box.fail_with = Transient("down")
    with pytest.raises(Transient):
        box.send(_message())
    assert len(box.sent) == 1
