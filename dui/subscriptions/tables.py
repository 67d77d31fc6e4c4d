"""The table of the websocket channel (``dui.subscriptions.websocket``).

``subscription_ping``: one row per notification of a Subscription whose channel is ``websocket``, written by the
``subscription.notify`` job (``dui worker``) and read, in ``seq`` order, by every web process holding a socket bound
to that Subscription, which sends ``ping <id>``. A ping is for the sockets bound when it is written (R4: a client
that reconnects searches for what it missed): rows older than ``KEEP_SECONDS`` are deleted as new ones are written.
The resource that matched and its resident are kept for the audit entry of the ping sent, never sent themselves.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, Integer, String, Table

from dui.db import UtcDateTime, metadata

subscription_ping = Table(
    "subscription_ping",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("subscription_id", String(64), nullable=False),
    Column("resource_type", String(64), nullable=False),
    Column("resource_id", String(64), nullable=False),
    Column("patient_id", String(64), nullable=True),
    Column("at", UtcDateTime, nullable=False),
    # on SQLite a number is never given twice, even once every row is deleted: sockets resume after the last one
    sqlite_autoincrement=True,
)
Index("ix_subscription_ping_subscription", subscription_ping.c.subscription_id, subscription_ping.c.seq)
Index("ix_subscription_ping_at", subscription_ping.c.at)
