"""SMTP submission to the MSSanté operator (stdlib ``smtplib``): the network ``MailSender``.

``smtp://`` connects in clear, requires the server to offer STARTTLS, and upgrades before anything else (no
fallback to clear text); ``smtps://`` is TLS from the first byte. Either way the client certificate is
presented and the server verified (``mssante.transport.tls_context``). One connection per message. Errors are
``Transient`` or ``Permanent`` as ``mssante.transport`` documents; logs name the Message-ID and counts only.
"""

from __future__ import annotations

import contextlib
import logging
import smtplib
import ssl
from email.message import EmailMessage

from mssante.errors import MessageError, Permanent, Transient, TransportError
from mssante.transport import (
    SendResult,
    classify_disconnect,
    classify_network,
    classify_reply,
    parse_url,
    tls_context,
)

log = logging.getLogger(__name__)
WHAT = "SMTP server"


class SmtpSender:
    """``MailSender`` over SMTP with mutual TLS. ``timeout`` bounds the connection and each reply."""

    def __init__(self, url: str, *, cert_file: str, key_file: str, ca_file: str, timeout: float = 30.0,
                 local_hostname: str | None = None) -> None:
        self.endpoint = parse_url(url, ("smtp", "smtps"))
        self._context = tls_context(cert_file, key_file, ca_file)
        self._timeout = timeout
        self._local_hostname = local_hostname

    def send(self, message: EmailMessage) -> SendResult:
        message_id = message.get("Message-ID")
        if not message_id:
            raise MessageError("a message to send needs a Message-ID")
        if not message.get("From") or not (message.get_all("To") or message.get_all("Cc") or message.get_all("Bcc")):
            raise MessageError("a message to send needs a From and at least one recipient")
        recipients = sum(len(getattr(v, "addresses", ())) for k in ("To", "Cc", "Bcc")
                         for v in message.get_all(k) or [])
        try:
            smtp = self._connect()
            try:
                refused = smtp.send_message(message)
            finally:
                # once the message is accepted, a failed goodbye changes nothing (and must not cause a resend)
                with contextlib.suppress(smtplib.SMTPException, OSError):
                    smtp.quit()
                smtp.close()
        except TransportError as exc:
            raise self._failed(message_id, exc) from None
        except smtplib.SMTPRecipientsRefused as exc:
            replies = [code for code, _ in exc.recipients.values()]
            error: TransportError = (Transient if replies and all(400 <= c < 500 for c in replies) else Permanent)(
                f"the {WHAT} refused every recipient ({', '.join(str(c) for c in sorted(set(replies)))})",
                replies[0] if replies else None)
            raise self._failed(message_id, error) from None
        except smtplib.SMTPResponseException as exc:
            text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(
                exc.smtp_error)
            raise self._failed(message_id, classify_reply(exc.smtp_code, text, WHAT)) from None
        except smtplib.SMTPNotSupportedError:
            raise self._failed(message_id, Permanent(f"the {WHAT} does not support a command we need")) from None
        except smtplib.SMTPServerDisconnected as exc:
            # smtplib reports a failed read as a disconnection: "...: timed out", "...: [SSL: ...ALERT...]"
            raise self._failed(message_id, classify_disconnect(str(exc), WHAT)) from None
        except (OSError, ssl.SSLError) as exc:
            raise self._failed(message_id, classify_network(exc, WHAT)) from None
        except smtplib.SMTPException as exc:
            raise self._failed(message_id, Transient(f"the {WHAT} failed ({type(exc).__name__})")) from None
        codes = {address: code for address, (code, _) in refused.items()}
        log.info("mssante smtp sent", extra={"message_id": message_id, "accepted": recipients - len(codes),
                                              "refused": len(codes)})
        return SendResult(message_id=message_id, accepted=recipients - len(codes), refused=codes)

    def _connect(self) -> smtplib.SMTP:
        host, port = self.endpoint.host, self.endpoint.port
        smtp: smtplib.SMTP
        if self.endpoint.implicit_tls:
            smtp = smtplib.SMTP_SSL(host, port, timeout=self._timeout, context=self._context,
                                    local_hostname=self._local_hostname)
        else:
            smtp = smtplib.SMTP(host, port, timeout=self._timeout, local_hostname=self._local_hostname)
            try:
                smtp.ehlo()
                if not smtp.has_extn("starttls"):
                    raise Permanent(f"the {WHAT} does not offer STARTTLS: nothing is sent in clear")
                smtp.starttls(context=self._context)
                smtp.ehlo()
            except BaseException:
                smtp.close()
                raise
        if self.endpoint.username and self.endpoint.password:
            try:
                smtp.login(self.endpoint.username, self.endpoint.password)
            except BaseException:
                smtp.close()
                raise
        return smtp

    @staticmethod
    def _failed(message_id: str, error: TransportError) -> TransportError:
        log.warning("mssante smtp failed", extra={"message_id": message_id, "category": type(error).__name__,
                                                   "code": error.code, "reason": str(error)})
        return error
