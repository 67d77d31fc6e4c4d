"""The documents each resident has, as this service keeps them current (``dui.documents.freshness``).

One row per resident and kind of document (the DLU): the DocumentReference in force and the record version it
was built from; ``stale_since`` and ``last_change`` once the record changed after it (or before the first
one). The database keeps one row per (resident, kind), whatever the interleaving of writers.
"""

from __future__ import annotations

from sqlalchemy import Column, Index, String, Table

from dui.db import UtcDateTime, metadata

resident_document = Table(
    "resident_document",
    metadata,
    Column("patient_id", String(64), primary_key=True),
    Column("kind", String(16), primary_key=True),  # "DLU"
    Column("docref_id", String(64), nullable=True),  # the DocumentReference in force; NULL before the first
    Column("record_version", String(64), nullable=True),  # dui.documents.extract: digest of what it shows
    Column("built_at", UtcDateTime, nullable=True),
    Column("stale_since", UtcDateTime, nullable=True),  # the first change it does not show; NULL: current
    Column("last_change", UtcDateTime, nullable=True),  # the latest change it does not show
    Index("ix_resident_document_stale", "kind", "stale_since"),
)
