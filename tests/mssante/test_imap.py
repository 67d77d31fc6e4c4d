"""IMAP retrieval against a real Dovecot (mutual TLS, client certificate required), and the in-memory twin held
to the same behaviour."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from ins.insi.pki import Pki
from mssante.errors import Permanent, Transient, TransportError, UidValidityChanged
from mssante.imap import ImapReceiver
from mssante.memory import InMemoryMailbox
from mssante.message import Outgoing, build_message
from mssante.transport import Cursor, MailReceiver
from tests.mailservers import DovecotServer, free_port, running_dovecot


def _raw(n: int, size: int = 0) -> bytes:
    return build_message(Outgoing(sender="cr@hopital.mssante.fr", to=("dui@ehpad-tilleuls.mssante.fr",),
                                  subject=f"CR {n}", body=f"message {n}\n" + "x" * size,
                                  message_id=f"<m{n}@hopital.mssante.fr>",
                                  date=dt.datetime(2026, 1, 5, 8, n, tzinfo=dt.UTC))).as_bytes()


def _receiver(url: str, pki: Pki, *, cert: bool = True, untrusted: bool = False, **options: object) -> ImapReceiver:
    cert_file = str(pki.untrusted_client_cert if untrusted else pki.client_cert) if cert else ""
    key_file = str(pki.untrusted_client_key if untrusted else pki.client_key) if cert else ""
    return ImapReceiver(url, cert_file=cert_file, key_file=key_file, ca_file=str(pki.ca_cert), timeout=5.0,
                        **options)  # type: ignore[arg-type]


def _folder(dovecot: DovecotServer, name: str) -> list[tuple[bytes, bytes]]:
    """(flags but \\Recent, Message-ID header) of each message of ``name``, read with a separate connection."""
    imap = dovecot.client()
    try:
        status, count = imap.select(f'"{name}"', readonly=True)
        if status != "OK" or count == [b"0"]:
            return []
        _, data = imap.fetch("1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        return [(b" ".join(f for f in re.search(rb"FLAGS \(([^)]*)\)", p[0]).group(1).split() if f != rb"\Recent"),
                 p[1].strip()) for p in data if isinstance(p, tuple)]
    finally:
        imap.logout()


def test_fetch_by_uid_then_mark_processed(dovecot: DovecotServer, pki: Pki) -> None:
    for n in (1, 2, 3):
        dovecot.deliver(_raw(n))
    receiver: MailReceiver = _receiver(dovecot.imaps_url, pki)
    batch = receiver.fetch_new(None)
    assert not batch.restarted
    assert [m.message_id for m in batch.messages] == ["<m1@hopital.mssante.fr>", "<m2@hopital.mssante.fr>",
                                                      "<m3@hopital.mssante.fr>"]
    uids = [m.uid for m in batch.messages]
    assert uids == sorted(uids) and batch.cursor == Cursor(batch.uidvalidity, uids[-1])
    assert batch.messages[0].data == _raw(1)
    assert all(flags == b"" for flags, _ in _folder(dovecot, "INBOX"))  # reading flagged nothing (EXAMINE, PEEK)

    receiver.mark_processed(uids[0], batch.uidvalidity)
    receiver.mark_processed(uids[0], batch.uidvalidity)  # twice: harmless
    assert _folder(dovecot, "DUI-traite") == [(b"\\Seen", b"Message-ID: <m1@hopital.mssante.fr>")]
    assert [mid for _, mid in _folder(dovecot, "INBOX")] == [b"Message-ID: <m2@hopital.mssante.fr>",
                                                             b"Message-ID: <m3@hopital.mssante.fr>"]
    assert receiver.fetch_new(batch.cursor).messages == ()  # nothing new after the cursor

    dovecot.deliver(_raw(4))
    later = receiver.fetch_new(batch.cursor)
    assert [m.message_id for m in later.messages] == ["<m4@hopital.mssante.fr>"]
    assert later.cursor.last_uid > batch.cursor.last_uid


def test_limit_and_cursor_walk_through_the_folder(dovecot: DovecotServer, pki: Pki) -> None:
    for n in range(1, 6):
        dovecot.deliver(_raw(n))
    receiver = _receiver(dovecot.imaps_url, pki)
    seen: list[str | None] = []
    cursor = None
    for _ in range(4):
        batch = receiver.fetch_new(cursor, limit=2)
        seen += [m.message_id for m in batch.messages]
        cursor = batch.cursor
    assert seen == [f"<m{n}@hopital.mssante.fr>" for n in range(1, 6)]


def test_uidvalidity_change_restarts_from_scratch(dovecot: DovecotServer, pki: Pki) -> None:
    for n in (1, 2):
        dovecot.deliver(_raw(n))
    receiver = _receiver(dovecot.imaps_url, pki)
    first = receiver.fetch_new(None)
    assert receiver.fetch_new(first.cursor).messages == ()
    dovecot.set_uidvalidity(first.uidvalidity + 1000)
    again = receiver.fetch_new(first.cursor)
    assert again.restarted and again.uidvalidity == first.uidvalidity + 1000
    assert [m.message_id for m in again.messages] == ["<m1@hopital.mssante.fr>", "<m2@hopital.mssante.fr>"]
    with pytest.raises(UidValidityChanged):
        receiver.mark_processed(first.messages[0].uid, first.uidvalidity)
    assert [mid for _, mid in _folder(dovecot, "INBOX")] == [b"Message-ID: <m1@hopital.mssante.fr>",
                                                             b"Message-ID: <m2@hopital.mssante.fr>"]


def test_starttls_url_and_a_processed_folder_of_our_choice(dovecot: DovecotServer, pki: Pki) -> None:
    dovecot.deliver(_raw(1))
    receiver = _receiver(dovecot.imap_url, pki, processed_folder="DUI-archives")
    batch = receiver.fetch_new(None)
    receiver.mark_processed(batch.messages[0].uid, batch.uidvalidity)
    assert [flags for flags, _ in _folder(dovecot, "DUI-archives")] == [b"\\Seen"]
    assert _folder(dovecot, "INBOX") == []


def test_login_with_a_password_in_the_url(dovecot: DovecotServer, pki: Pki) -> None:
    """LOGIN instead of EXTERNAL; the server still names the user from the certificate."""
    dovecot.deliver(_raw(1))
    batch = _receiver(dovecot.imaps_url.replace("imaps://", "imaps://robot:secret@"), pki).fetch_new(None)
    assert [m.message_id for m in batch.messages] == ["<m1@hopital.mssante.fr>"]


def test_a_message_over_the_cap_is_listed_not_downloaded(dovecot: DovecotServer, pki: Pki) -> None:
    dovecot.deliver(_raw(1, size=5000))
    (message,) = _receiver(dovecot.imaps_url, pki, max_message_bytes=2000).fetch_new(None).messages
    assert message.data is None and message.size > 5000 and message.message_id == "<m1@hopital.mssante.fr>"


def test_without_move_copy_delete_expunge(pki: Pki) -> None:
    with running_dovecot(pki, move=False) as server:
        server.deliver(_raw(1))
        server.deliver(_raw(2))
        receiver = _receiver(server.imaps_url, pki)
        batch = receiver.fetch_new(None)
        receiver.mark_processed(batch.messages[1].uid, batch.uidvalidity)
        assert _folder(server, "DUI-traite") == [(b"\\Seen", b"Message-ID: <m2@hopital.mssante.fr>")]
        assert [mid for _, mid in _folder(server, "INBOX")] == [b"Message-ID: <m1@hopital.mssante.fr>"]
        imap = server.client()
        capabilities = imap.capability()[1][0].split()
        imap.logout()
        assert b"MOVE" not in capabilities and b"UIDPLUS" in capabilities
        # the path taken was COPY + \Deleted + UID EXPUNGE: the session's logout line counts one of each
        assert "deleted=1 expunged=1" in server.log()


@pytest.mark.parametrize(("cert", "untrusted"), [(False, False), (True, True)], ids=["no-cert", "other-ca-cert"])
def test_refused_without_a_client_certificate_of_our_ca(dovecot: DovecotServer, pki: Pki, cert: bool,
                                                         untrusted: bool) -> None:
    dovecot.deliver(_raw(1))
    with pytest.raises(Permanent, match="refused the login"):
        _receiver(dovecot.imaps_url, pki, cert=cert, untrusted=untrusted).fetch_new(None)


def test_a_server_certificate_from_another_ca_is_permanent(dovecot: DovecotServer, other_pki: Pki) -> None:
    receiver = ImapReceiver(dovecot.imaps_url, cert_file=str(dovecot.pki.client_cert),
                            key_file=str(dovecot.pki.client_key), ca_file=str(other_pki.ca_cert), timeout=5.0)
    with pytest.raises(Permanent, match="certificate is not trusted"):
        receiver.fetch_new(None)


def test_server_down_is_transient(pki: Pki) -> None:
    with pytest.raises(Transient, match="refused the connection"):
        _receiver(f"imaps://127.0.0.1:{free_port()}", pki).fetch_new(None)


def test_bad_urls_and_folder_names_are_permanent(pki: Pki) -> None:
    with pytest.raises(Permanent):
        _receiver("https://127.0.0.1:993", pki)
    with pytest.raises(Permanent):
        _receiver("imaps://127.0.0.1:993", pki, processed_folder='x" DELETE INBOX')


def test_the_in_memory_twin_behaves_like_the_server() -> None:
    box = InMemoryMailbox(uidvalidity=7)
    receiver: MailReceiver = box
    for n in (1, 2, 3):
        box.deliver(_raw(n))
    box.deliver(_raw(9, size=3000))
    small = InMemoryMailbox(max_message_bytes=1000)
    small.deliver(_raw(9, size=3000))
    assert small.fetch_new(None).messages[0].data is None
    batch = receiver.fetch_new(None, limit=3)
    assert [m.message_id for m in batch.messages] == [f"<m{n}@hopital.mssante.fr>" for n in (1, 2, 3)]
    receiver.mark_processed(1, 7)
    receiver.mark_processed(1, 7)
    assert [s.uid for s in box.processed] == [1] and box.processed[0].seen
    assert [m.uid for m in receiver.fetch_new(batch.cursor).messages] == [4]
    box.change_uidvalidity(8)
    again = receiver.fetch_new(batch.cursor)
    assert again.restarted and [m.message_id for m in again.messages][:1] == ["<m2@hopital.mssante.fr>"]
    with pytest.raises(UidValidityChanged):
        receiver.mark_processed(2, 7)
    box.fail_with = Transient("down")
    with pytest.raises(TransportError):
        receiver.fetch_new(None)
