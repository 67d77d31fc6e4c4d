"""Real mail servers for the mssante transport tests, on 127.0.0.1 and free ports, with the test PKI.

``SmtpServer``: an aiosmtpd server in a thread of its own. STARTTLS is required (``require_starttls``) or the
whole connection is TLS (``implicit_tls``); the client certificate is checked against the test CA
(``client_cert="required"``: ``CERT_REQUIRED``, the handshake fails without one; ``"optional"``: the handshake
passes and ``MAIL FROM`` answers ``530 5.7.0`` without a valid certificate). Received messages are kept in
``received``; ``fail_next`` queues replies to the next ``DATA`` commands (``451``, ``550``...), ``refuse_rcpt``
maps recipients to the reply their ``RCPT TO`` gets; ``stop()`` is
"server down" and ``start()`` brings it back on the same port.

``DovecotServer``: the Debian ``dovecot-imapd`` in a temporary folder with a configuration of its own: IMAPS
and IMAP+STARTTLS listeners, ``ssl = required``, client certificates required and checked against the test CA
(``ssl_verify_client_cert``, ``auth_ssl_require_client_cert``), the user named by the certificate
(``auth_ssl_username_from_cert``), a passwd-file passdb/userdb and a Maildir. Tests skip, saying why, where
dovecot is not installed (``scripts/ensure-test-servers`` installs it when it can).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import imaplib
import logging
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from ins.insi.pki import CLIENT_COMMON_NAME, Pki

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
# aiosmtpd logs every command line at INFO ("RCPT TO:<matricule INS@patient.mssante.fr>"): this test peer stands
# for the operator, whose logs are not ours, and must not put addresses in the session log the last test scans.
logging.getLogger("mail.log").setLevel(logging.WARNING)
DOVEADM = shutil.which("doveadm") or "/usr/bin/doveadm"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, up: bool, deadline: float = 10.0) -> bool:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                if up:
                    return True
        except OSError:
            if not up:
                return True
        time.sleep(0.05)
    return False


# ---- SMTP ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    client_cn: str


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self.server = server

    async def handle_MAIL(self, smtp: SMTP, session: Session, envelope: Envelope, address: str,
                          mail_options: list[str]) -> str:
        if self.server.peer_cn(smtp) is None:
            return "530 5.7.0 Client certificate required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, smtp: SMTP, session: Session, envelope: Envelope, address: str,
                          rcpt_options: list[str]) -> str:
        reply = self.server.refuse_rcpt.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, smtp: SMTP, session: Session, envelope: Envelope) -> str:
        if self.server.delay:
            await asyncio.sleep(self.server.delay)
        with self.server.lock:
            if self.server.fail_next:
                return self.server.fail_next.pop(0)
            content = envelope.original_content or envelope.content or b""
            self.server.received.append(Received(
                mail_from=str(envelope.mail_from), rcpt_tos=tuple(envelope.rcpt_tos),
                data=content if isinstance(content, bytes) else content.encode(),
                client_cn=self.server.peer_cn(smtp) or ""))
        return "250 2.0.0 Message accepted"


class SmtpServer:
    def __init__(self, pki: Pki, *, implicit_tls: bool = False, client_cert: str = "required",
                 server_cert: Path | None = None, server_key: Path | None = None, plain: bool = False) -> None:
        self.pki = pki
        self.implicit_tls = implicit_tls
        self.plain = plain  # no TLS at all, STARTTLS not offered: what a client must refuse to talk to
        self.port = free_port()
        self.received: list[Received] = []
        self.fail_next: list[str] = []
        self.refuse_rcpt: dict[str, str] = {}
        self.delay = 0.0
        self.lock = threading.Lock()
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._context.load_cert_chain(server_cert or pki.server_cert, server_key or pki.server_key)
        self._context.load_verify_locations(cafile=pki.ca_cert)
        self._context.verify_mode = ssl.CERT_REQUIRED if client_cert == "required" else ssl.CERT_OPTIONAL
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{'smtps' if self.implicit_tls else 'smtp'}://127.0.0.1:{self.port}"

    @staticmethod
    def peer_cn(smtp: SMTP) -> str | None:
        transport = smtp.transport
        ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
        cert = ssl_object.getpeercert() if ssl_object is not None else None
        if not cert:
            return None
        for rdn in cert.get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    return str(value)
        return ""

    def _factory(self) -> SMTP:
        starttls = not self.implicit_tls and not self.plain
        return SMTP(_Handler(self), hostname="mx.mssante.test", ident="test MSSante operator",
                    tls_context=self._context if starttls else None, require_starttls=starttls, timeout=10)

    def start(self) -> None:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._loop = loop
            try:
                self._server = loop.run_until_complete(loop.create_server(
                    self._factory, "127.0.0.1", self.port, ssl=self._context if self.implicit_tls else None))
            except BaseException as exc:  # reported to start()
                errors.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"smtp-{self.port}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]

    def stop(self) -> None:
        loop, server = self._loop, self._server
        if loop is None or server is None or self._thread is None:
            return

        async def close() -> None:
            server.close()
            await server.wait_closed()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._loop = self._server = self._thread = None
        assert _wait_for_port(self.port, up=False), "the SMTP server did not stop"


@contextlib.contextmanager
def running_smtp(pki: Pki, **options: Any) -> Iterator[SmtpServer]:
    server = SmtpServer(pki, **options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# ---- Dovecot ---------------------------------------------------------------------------------------------------

def require_dovecot() -> str:
    if not Path(DOVECOT).is_file():
        pytest.skip("dovecot is not installed (Debian package dovecot-imapd; `scripts/ensure-test-servers` installs "
                    "it when run as root with apt): the IMAP tests need a real IMAP server")
    return DOVECOT


_CONF = """\
base_dir = {folder}/run
state_dir = {folder}/state
log_path = {folder}/dovecot.log
protocols = imap
listen = 127.0.0.1
default_internal_user = {internal_user}
default_internal_group = {internal_group}
default_login_user = {login_user}
first_valid_uid = {first_uid}
ssl = required
ssl_cert = <{server_cert}
ssl_key = <{server_key}
ssl_ca = <{ca_cert}
ssl_min_protocol = TLSv1.2
ssl_verify_client_cert = yes
ssl_require_crl = no
auth_ssl_require_client_cert = yes
auth_ssl_username_from_cert = yes
auth_username_chars =
auth_username_format = %u
auth_mechanisms = plain external
disable_plaintext_auth = yes
passdb {{
  driver = passwd-file
  args = {folder}/passwd
}}
userdb {{
  driver = passwd-file
  args = {folder}/passwd
}}
mail_location = maildir:~/Maildir
{capability}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
  chroot =
}}
service anvil {{
  chroot =
}}
"""
# Without MOVE, to exercise the COPY + \\Deleted + EXPUNGE path of mark_processed.
NO_MOVE = ("imap_capability = IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ NAMESPACE UIDPLUS "
           "CHILDREN UNSELECT")


class DovecotServer:
    """One dovecot master process (stopped by its PID). ``user`` is the mailbox: the client certificate's CN."""

    def __init__(self, pki: Pki, *, move: bool = True) -> None:
        self.binary = require_dovecot()
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("dovecot")
                pwd.getpwnam("dovenull")
            except KeyError:
                pytest.skip("the dovecot and dovenull users are missing (the dovecot-core package makes them)")
        self.pki = pki
        self.folder = Path(tempfile.mkdtemp(prefix="dui-dovecot-"))
        self.folder.chmod(0o755)  # dovecot's unprivileged processes (dovenull) go through it to base_dir
        self.imap_port, self.imaps_port = free_port(), free_port()
        self.user = CLIENT_COMMON_NAME
        self.process: subprocess.Popen[bytes] | None = None
        self.conf = self.folder / "dovecot.conf"
        home = self.folder / "mail"
        home.mkdir()
        if os.geteuid() == 0:
            internal, group, login = "dovecot", "dovecot", "dovenull"
            mail_user = pwd.getpwnam("dovecot")
            uid, gid = mail_user.pw_uid, mail_user.pw_gid
            os.chown(home, uid, gid)
        else:
            internal = login = pwd.getpwuid(os.getuid()).pw_name
            group = grp.getgrgid(os.getgid()).gr_name
            uid, gid = os.getuid(), os.getgid()
        (self.folder / "passwd").write_text(f"{self.user}::{uid}:{gid}::{home}::nopassword=y\n")
        self.conf.write_text(_CONF.format(
            folder=self.folder, internal_user=internal, internal_group=group, login_user=login,
            first_uid=max(1, min(uid, 500)),
            server_cert=pki.server_cert, server_key=pki.server_key, ca_cert=pki.ca_cert,
            capability="" if move else NO_MOVE, imap_port=self.imap_port, imaps_port=self.imaps_port))

    @property
    def imaps_url(self) -> str:
        return f"imaps://127.0.0.1:{self.imaps_port}"

    @property
    def imap_url(self) -> str:
        return f"imap://127.0.0.1:{self.imap_port}"

    def log(self) -> str:
        path = self.folder / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> None:
        out = open(self.folder / "stdout.log", "ab")  # noqa: SIM115 (the process keeps it)
        self.process = subprocess.Popen([self.binary, "-F", "-c", str(self.conf)], stdout=out,
                                        stderr=subprocess.STDOUT)
        out.close()
        if not _wait_for_port(self.imaps_port, up=True):
            self.stop()
            pytest.fail(f"dovecot did not start:\n{(self.folder / 'stdout.log').read_text()}\n{self.log()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        _wait_for_port(self.imaps_port, up=False)

    def cleanup(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def client(self) -> imaplib.IMAP4_SSL:
        """A logged-in IMAPS connection as the test mailbox (to deliver and inspect)."""
        context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        context.load_cert_chain(self.pki.client_cert, self.pki.client_key)
        imap = imaplib.IMAP4_SSL("127.0.0.1", self.imaps_port, ssl_context=context, timeout=10)
        imap.authenticate("EXTERNAL", lambda _: b"")
        return imap

    def deliver(self, data: bytes, folder: str = "INBOX") -> None:
        imap = self.client()
        try:
            status, _ = imap.append(folder, None, None, data)
            assert status == "OK"
        finally:
            imap.logout()

    def set_uidvalidity(self, value: int, folder: str = "INBOX") -> None:
        """What a server does after a mailbox rebuild: a new UIDVALIDITY (``doveadm mailbox update``)."""
        subprocess.run([DOVEADM, "-c", str(self.conf), "mailbox", "update", "-u", self.user, "--uid-validity",
                        str(value), folder], check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def running_dovecot(pki: Pki, **options: Any) -> Iterator[DovecotServer]:
    server = DovecotServer(pki, **options)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        server.cleanup()
