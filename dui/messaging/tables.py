"""``mssante_message``: each message sent, by its Message-ID, until its acknowledgement (MDN) comes back.

One row per (document, recipient) sent: the outbox job that sent it, the state of the send (``sent``, then
``processed`` or ``error`` from the recipient's MDN, with the integration code and label). The Message-ID is
unique: an MDN names it (``Original-Message-ID``). No health data: ids, an address, codes.
"""

from __future__ import annotations

from sqlalchemy import Column, Integer, String, Table

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
