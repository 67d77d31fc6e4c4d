"""Fixtures of the mssante tests: the test PKI (``ins.insi.pki.make_pki``), a second, unrelated one, and the
real servers of ``tests.mailservers``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ins.insi.pki import Pki, make_pki
from tests.mailservers import DovecotServer, SmtpServer, running_dovecot, running_smtp


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("mssante-pki"))


@pytest.fixture(scope="session")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Another CA altogether: its server certificate is not one our CA vouches for."""
    return make_pki(tmp_path_factory.mktemp("mssante-other-pki"))


@pytest.fixture
def smtp_server(pki: Pki) -> Iterator[SmtpServer]:
    with running_smtp(pki) as server:
        yield server


@pytest.fixture(scope="session")
def dovecot_server(pki: Pki) -> Iterator[DovecotServer]:
    with running_dovecot(pki) as server:
        yield server


@pytest.fixture
def dovecot(dovecot_server: DovecotServer) -> DovecotServer:
    """The session's Dovecot with an empty INBOX and no processed folder."""
    imap = dovecot_server.client()
    try:
        for name in ("DUI-traite", "DUI-archives"):
            imap.delete(f'"{name}"')
        imap.select("INBOX")
        _, found = imap.search(None, "ALL")
        if found and found[0]:
            imap.store("1:*", "+FLAGS.SILENT", r"(\Deleted)")
            imap.expunge()
    finally:
        imap.logout()
    return dovecot_server
