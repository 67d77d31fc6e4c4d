"""The MSSanté tables (docs/mssante.md).

``mssante_message``: each message sent, by its Message-ID, until its acknowledgement (MDN) comes back.
One row per (document, recipient) sent: the outbox job that sent it, the state of the send (``sent``, then
``processed`` or ``error`` from the recipient's MDN, with the integration code and label). The Message-ID is
unique: an MDN names it (``Original-Message-ID``). No health data: ids, an address, codes.

Receiving (``dui.messaging.receiving`` and ``dui.messaging.inbox``):

- ``mssante_mailbox``: where reading the establishment's mailbox stopped, per folder (UIDVALIDITY, last UID).
- ``mssante_received``: every message taken from the mailbox, once: its Message-ID is UNIQUE in the database, and
  a message is recorded by an ``INSERT ... ON CONFLICT DO NOTHING`` in the transaction that processes it (a second
  poll, or a second worker, finds it there and does nothing). What became of it (filed, queued, acknowledgement),
  and the MDN answered: its state, and, until it is sent, the MDN itself *encrypted* (its subject names the
  patient) with the keyring, as resource bodies are (``dui.crypto.envelope``).
- ``mssante_inbox``: the reconciliation queue, messages waiting for a person. The raw message *encrypted* the same
  way; the integration code (900-906) and a one-line reason without health data; the state (pending, assigned,
  rejected), who decided and when, the resident and the DocumentReferences filed. No subject, no name: they are in
  the encrypted message only.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, Column, Index, Integer, LargeBinary, String, Table, Text

from dui.db import UtcDateTime, metadata

mssante_message = Table(
    "mssante_message",
    metadata,
    Column("message_id", String(255), primary_key=True),  # <...@...>, as sent
    Column("docref_id", String(64), nullable=False),
    Column("address", String(255), nullable=False),
    Column("job_id", Integer, nullable=False),
    Column("state", String(16), nullable=False),  # sent, processed, error
    Column("code", String(8), nullable=True),  # the MSSanté integration code of an error (900-906)
    Column("detail", String(300), nullable=True),  # the MDN's disposition or error label
    Column("sent_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)


mssante_mailbox = Table(
    "mssante_mailbox",
    metadata,
    Column("folder", String(255), primary_key=True),  # the IMAP folder read (INBOX)
    Column("uidvalidity", BigInteger, nullable=False),  # IMAP numbers are unsigned 32-bit
    Column("last_uid", BigInteger, nullable=False),  # the highest UID processed and marked
    Column("updated_at", UtcDateTime, nullable=False),
)

RECEIVED_OUTCOMES = ("filed", "queued", "acknowledged")
MDN_STATES = ("queued", "sent", "unsent")  # NULL: none was asked for (or the message cannot be answered)

mssante_received = Table(
    "mssante_received",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_id", String(255), nullable=False, unique=True),  # <...@...>; a digest when it had none
    Column("folder", String(255), nullable=False),
    Column("uidvalidity", BigInteger, nullable=False),
    Column("uid", BigInteger, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("inbox_id", Integer, nullable=True),  # queued: its mssante_inbox row
    Column("docref_ids", Text, nullable=True),  # filed: the DocumentReference ids, JSON
    Column("mdn_state", String(16), nullable=True),
    Column("mdn_detail", String(200), nullable=True),  # why it was not sent; the integration code answered
    Column("mdn", LargeBinary, nullable=True),  # the MDN to send, sealed (dui.crypto.envelope); emptied once sent
    CheckConstraint("outcome IN ('filed', 'queued', 'acknowledged')", name="outcome"),
)

INBOX_STATES = ("pending", "assigned", "rejected")

mssante_inbox = Table(
    "mssante_inbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_id", String(255), nullable=False, unique=True),
    Column("received_at", UtcDateTime, nullable=False),
    Column("sender_domain", String(255), nullable=False),  # the domain only: a patient's address is her INS
    Column("code", String(8), nullable=True),  # the MSSanté integration code (900-906); NULL: an acknowledgement
    Column("reason", String(300), nullable=False),  # one line, no health data
    Column("raw", LargeBinary, nullable=True),  # the message, sealed; NULL when it was too large to download
    Column("owner", String(64), nullable=True),  # the receiving establishment's Organization id, when known
    Column("task_id", String(64), nullable=False),  # the Task that shows it to the establishment's staff
    Column("state", String(16), nullable=False),
    Column("decided_at", UtcDateTime, nullable=True),
    Column("decided_by", String(128), nullable=True),  # actor kind:id
    Column("patient_id", String(64), nullable=True),  # assigned: the resident
    Column("docref_ids", Text, nullable=True),  # assigned: the DocumentReference ids, JSON
    Column("note", String(300), nullable=True),  # rejected: why, as the person wrote it
    CheckConstraint("state IN ('pending', 'assigned', 'rejected')", name="state"),
    Index("ix_mssante_inbox_state_received_at", "state", "received_at"),
)
