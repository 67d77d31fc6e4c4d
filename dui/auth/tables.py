"""Tables of authentication: API clients, local staff accounts, and the client-assertion ids already used.

- ``api_client``: one row per registered SMART Backend Services client (``dui clients create``): its
  public keys (a JWKS, public keys only), the scopes it may be granted, its establishment (FINESS) if it
  belongs to one. Never deleted: ``enabled`` is cleared, so the audit trail keeps a name for its id.
- ``staff_user``: local accounts (``dui users create``) for development and small sites; the password is
  kept as a salted scrypt hash with its parameters (``dui.auth.passwords``).
- ``used_jti``: the ``jti`` of every client assertion accepted, until it expires. Its primary key
  (client_id, jti) is the UNIQUE constraint that refuses a replayed assertion whatever the interleaving of
  requests: of two concurrent inserts, the second waits for the first and fails.

Times are stored as integer seconds since the epoch (UTC): they are compared with JWT ``exp`` values and
read the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Column, Index, String, Table, Text

from dui.db import metadata

api_client = Table(
    "api_client",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("scopes", Text, nullable=False),  # space-separated SMART scopes, as registered
    Column("jwks", Text, nullable=False),  # JSON Web Key Set, public keys only
    Column("establishment", String(9), nullable=True),  # FINESS
    Column("enabled", Boolean, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("disabled_at", BigInteger, nullable=True),
    # "device": a sensor gateway that may only post events to /api/devices/events (dui.staff.alerts)
    Column("kind", String(16), nullable=False, server_default="client"),
    CheckConstraint("kind IN ('client', 'device')", name="kind"),
)

staff_user = Table(
    "staff_user",
    metadata,
    Column("login", String(64), primary_key=True),
    Column("password_hash", String(400), nullable=False),  # scrypt$ln$r$p$salt$hash
    Column("roles", String(400), nullable=False),  # space-separated, from dui.auth.roles.ROLES
    Column("establishment", String(9), nullable=False),  # FINESS
    Column("enabled", Boolean, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("disabled_at", BigInteger, nullable=True),
)

used_jti = Table(
    "used_jti",
    metadata,
    Column("client_id", String(64), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("expires_at", BigInteger, nullable=False),  # the assertion's exp; the row may go after it
    Index("ix_used_jti_expires_at", "expires_at"),
)
