"""``profile_package``: the FHIR IG packages installed with ``dui profiles install``.

One version per package name is in force (a unique name); installing another version replaces it in the
same transaction. The package is kept as given (its ``.tgz`` bytes), so every process builds the same
validation context from the database, and ``id`` + ``sha256`` tell a process that the set has changed.
"""

from __future__ import annotations

from sqlalchemy import Column, Integer, LargeBinary, String, Table, Text

from dui.db import UtcDateTime, metadata

profile_package = Table(
    "profile_package",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(214), nullable=False, unique=True),  # npm names are at most 214 characters
    Column("version", String(64), nullable=False),
    Column("fhir_version", String(32), nullable=False),
    Column("canonical", String(400), nullable=True),
    Column("dependencies", Text, nullable=False),  # JSON object: name -> version, as in package.json
    Column("content", LargeBinary, nullable=False),  # the package.tgz as installed
    Column("sha256", String(64), nullable=False),
    Column("installed", UtcDateTime, nullable=False),
    Column("installed_by", String(200), nullable=False),
    sqlite_autoincrement=True,  # ids are never reused: (id, sha256) identifies a state of the table
)
