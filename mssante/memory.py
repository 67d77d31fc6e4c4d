"""The in-memory twin of an MSSanté mailbox: both ``MailSender`` and ``MailReceiver``, without network or TLS.

For tests of the service. ``send`` checks what ``SmtpSender.send`` checks before connecting and keeps the
message in ``sent``; ``deliver`` puts a received message in the folder (next UID); ``fetch_new`` and
``mark_processed`` behave as ``ImapReceiver``'s (UID order, cursor, restart on a UIDVALIDITY change,
``UidValidityChanged``, idempotent marking, a size cap). ``change_uidvalidity`` renumbers the folder as a
server may. Set ``fail_with`` to make every following call raise that error (``Transient(...)`` for "server
down"); ``refuse`` maps recipients to the reply code a partial refusal would give them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import policy as email_policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser

from mssante.errors import MessageError, TransportError, UidValidityChanged
from mssante.transport import Batch, Cursor, Fetched, SendResult


@dataclass
class StoredMessage:
    uid: int
    data: bytes
    seen: bool = False


class InMemoryMailbox:
    """``MailSender`` and ``MailReceiver`` in memory (see the module docstring)."""

    def __init__(self, *, uidvalidity: int = 1, max_message_bytes: int = 40 * 1024 * 1024) -> None:
        self.sent: list[EmailMessage] = []
        self.folder: dict[int, StoredMessage] = {}
        self.processed: list[StoredMessage] = []
        self.uidvalidity = uidvalidity
        self.fail_with: TransportError | None = None
        self.refuse: dict[str, int] = {}
        self._next_uid = 1
        self._max_bytes = max_message_bytes

    # -- MailSender

    def send(self, message: EmailMessage) -> SendResult:
        message_id = message.get("Message-ID")
        if not message_id:
            raise MessageError("a message to send needs a Message-ID")
        recipients = [a.addr_spec for k in ("To", "Cc", "Bcc") for v in message.get_all(k) or []
                      for a in getattr(v, "addresses", ())]
        if not message.get("From") or not recipients:
            raise MessageError("a message to send needs a From and at least one recipient")
        self._fail()
        self.sent.append(message)
        refused = {r: self.refuse[r] for r in recipients if r in self.refuse}
        return SendResult(message_id=str(message_id), accepted=len(recipients) - len(refused), refused=refused)

    # -- MailReceiver

    def deliver(self, data: bytes | EmailMessage) -> int:
        """A message arrives in the folder; its UID."""
        raw = data.as_bytes(policy=email_policy.SMTP) if isinstance(data, EmailMessage) else data
        uid = self._next_uid
        self._next_uid += 1
        self.folder[uid] = StoredMessage(uid=uid, data=raw)
        return uid

    def fetch_new(self, since: Cursor | None, *, limit: int = 20) -> Batch:
        self._fail()
        restarted = since is not None and since.uidvalidity != self.uidvalidity
        start = since.last_uid + 1 if since is not None and not restarted else 1
        uids = sorted(uid for uid in self.folder if uid >= start)[:max(limit, 0)]
        messages = tuple(self._fetched(self.folder[uid]) for uid in uids)
        last = max((m.uid for m in messages), default=start - 1)
        return Batch(uidvalidity=self.uidvalidity, messages=messages, restarted=restarted,
                     cursor=Cursor(uidvalidity=self.uidvalidity, last_uid=last))

    def mark_processed(self, uid: int, uidvalidity: int) -> None:
        self._fail()
        if uidvalidity != self.uidvalidity:
            raise UidValidityChanged("the UIDVALIDITY of the folder changed: fetch again from the start")
        stored = self.folder.pop(uid, None)
        if stored is not None:
            stored.seen = True
            self.processed.append(stored)

    def change_uidvalidity(self, uidvalidity: int) -> None:
        """The server starts the folder's numbering again (same messages, new UIDs from 1)."""
        self.uidvalidity = uidvalidity
        messages = [self.folder[uid] for uid in sorted(self.folder)]
        self.folder = {}
        for number, stored in enumerate(messages, 1):
            stored.uid = number
            self.folder[number] = stored
        self._next_uid = len(messages) + 1

    def _fetched(self, stored: StoredMessage) -> Fetched:
        header = BytesHeaderParser().parsebytes(stored.data).get("Message-ID")
        found = re.search(r"<[^<>\s]+>", str(header)) if header else None
        too_large = len(stored.data) > self._max_bytes
        return Fetched(uid=stored.uid, message_id=found.group(0) if found else None, size=len(stored.data),
                       data=None if too_large else stored.data)

    def _fail(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with
