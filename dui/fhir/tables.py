"""Tables of the FHIR store: resources, their versions, and the search index.

- ``resource``: one row per logical resource (type + id) pointing at its current version. The
  surrogate ``rid`` keys every other table, so index rows stay small.
- ``resource_version``: every version ever written, never updated (a delete writes a tombstone version
  with no body). ``vid`` is a global, monotonic sequence used to page history. Versions are deleted only with
  their resource, once it is deleted and past its retention (``dui.maintenance.purge``, docs/retention.md).
- ``search_*``: index rows of the current version, one table per search-parameter type, rewritten in
  the same transaction as the resource (``dui.fhir.search.indexer``).
- ``unique_identifier``: identifiers that must be unique in the store (the resident's INS); the
  database refuses a second resident with the same INS, whatever the interleaving of requests.

Bodies are stored as the JSON bytes the server returns (the client's text with ``id`` and ``meta``
set by the server), so a read is one row and no re-serialisation.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import TSVECTOR

from dui.db import UtcDateTime, metadata

# BIGINT on PostgreSQL; SQLite only auto-increments an INTEGER PRIMARY KEY.
__all__ = ["RowId", "UtcDateTime"]  # with the tables below

RowId = BigInteger().with_variant(Integer(), "sqlite")

# Lengths of indexed text: long enough for identifiers, codes and names; values are cut to fit
# (string search matches on a prefix anyway).
TEXT_INDEX = 255

# Text searched by prefix (LIKE 'abc%'). PostgreSQL can walk a B-tree for a prefix only under the "C"
# collation (byte order); SQLite's default BINARY collation already is.
PrefixText = String(TEXT_INDEX).with_variant(String(TEXT_INDEX, collation="C"), "postgresql")


resource = Table(
    "resource",
    metadata,
    Column("rid", RowId, primary_key=True, autoincrement=True),
    Column("res_type", String(64), nullable=False),
    Column("res_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("last_updated", UtcDateTime, nullable=False),
    Column("deleted", Boolean, nullable=False),
    UniqueConstraint("res_type", "res_id"),
)

resource_version = Table(
    "resource_version",
    metadata,
    Column("vid", RowId, primary_key=True, autoincrement=True),
    Column("rid", RowId, ForeignKey("resource.rid"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("last_updated", UtcDateTime, nullable=False),
    Column("method", String(8), nullable=False),
    Column("body", LargeBinary, nullable=True),
    UniqueConstraint("rid", "version"),
    Index("ix_resource_version_res_type_vid", "res_type", "vid"),
    Index("ix_resource_version_last_updated", "last_updated"),
)


def _index_table(name: str, *columns: Column[Any], indexes: tuple[tuple[str, ...], ...]) -> Table:
    table = Table(
        name,
        metadata,
        Column("rid", RowId, ForeignKey("resource.rid"), nullable=False),
        Column("res_type", String(64), nullable=False),
        Column("param", String(100), nullable=False),
        *columns,
        Index(f"ix_{name}_rid", "rid"),
    )
    for cols in indexes:
        Index(f"ix_{name}_{'_'.join(cols)}", *(table.c[c] for c in cols))
    return table


search_string = _index_table(
    "search_string",
    Column("value", PrefixText, nullable=False),  # normalised (case, accents, punctuation)
    Column("exact", String(TEXT_INDEX), nullable=False),  # as written, for :exact
    indexes=(("res_type", "param", "value", "rid"),),
)

search_token = _index_table(
    "search_token",
    Column("system", String(TEXT_INDEX), nullable=True),
    Column("code", String(TEXT_INDEX), nullable=True),
    Column("text", PrefixText, nullable=True),  # normalised display / text, for :text
    indexes=(("res_type", "param", "code", "system", "rid"),),
)

search_reference = _index_table(
    "search_reference",
    Column("target_type", String(64), nullable=True),
    Column("target_id", String(64), nullable=True),
    Column("url", String(TEXT_INDEX), nullable=True),  # absolute or canonical references
    indexes=(("res_type", "param", "target_id", "target_type", "rid"), ("target_type", "target_id", "rid")),
)

search_date = _index_table(
    "search_date",
    Column("low", UtcDateTime, nullable=True),  # NULL: unbounded
    Column("high", UtcDateTime, nullable=True),
    indexes=(("res_type", "param", "low", "high", "rid"),),
)

search_quantity = _index_table(
    "search_quantity",
    Column("value", Numeric(36, 12), nullable=False),
    Column("low", Numeric(36, 12), nullable=False),  # implicit precision range of the value
    Column("high", Numeric(36, 12), nullable=False),
    Column("system", String(TEXT_INDEX), nullable=True),
    Column("code", String(TEXT_INDEX), nullable=True),
    indexes=(("res_type", "param", "value", "rid"),),
)

search_uri = _index_table(
    "search_uri",
    Column("uri", PrefixText, nullable=False),
    indexes=(("res_type", "param", "uri", "rid"),),
)

search_composite = _index_table(
    "search_composite",
    # first component: a token (system, code) or a reference (target type, target id)
    Column("c1_system", String(TEXT_INDEX), nullable=True),
    Column("c1_code", String(TEXT_INDEX), nullable=True),
    # second component, in the columns of its type
    Column("c2_system", String(TEXT_INDEX), nullable=True),  # token system, quantity system, reference type
    Column("c2_code", String(TEXT_INDEX), nullable=True),  # token code, quantity code or unit, reference id
    Column("c2_number", Numeric(36, 12), nullable=True),
    Column("c2_low", Numeric(36, 12), nullable=True),
    Column("c2_high", Numeric(36, 12), nullable=True),
    Column("c2_start", UtcDateTime, nullable=True),
    Column("c2_end", UtcDateTime, nullable=True),
    Column("c2_text", String(TEXT_INDEX), nullable=True),  # normalised string
    indexes=(("res_type", "param", "c1_code", "c1_system", "rid"),),
)

# Full text of ``_text`` (narrative) and ``_content`` (every string value), one row per current resource
# (``dui.fhir.search.fulltext``). PostgreSQL: ``tsvector`` columns (the french configuration's lexemes, no
# text), each with a GIN index. SQLite: an FTS5 virtual table whose rowid is the resource's row id (the column
# is named ``rowid`` for that; its key is ``rid`` like every index table's). Created by migration 0020, not by
# this definition; rows are written by ``SqlFhirRepository`` with ``to_tsvector`` on PostgreSQL.
search_text = Table(
    "search_text",
    metadata,
    Column("rowid", RowId, ForeignKey("resource.rid"), primary_key=True, key="rid"),
    Column("narrative", Text().with_variant(TSVECTOR(), "postgresql"), nullable=False),
    Column("content", Text().with_variant(TSVECTOR(), "postgresql"), nullable=False),
)

INDEX_TABLES = {
    "string": search_string,
    "token": search_token,
    "reference": search_reference,
    "date": search_date,
    "quantity": search_quantity,
    "number": search_quantity,
    "uri": search_uri,
    "composite": search_composite,
}

maintenance_state = Table(
    "maintenance_state",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(4000), nullable=False),  # JSON
    Column("updated", UtcDateTime, nullable=False),
)

unique_identifier = Table(
    "unique_identifier",
    metadata,
    Column("rid", RowId, ForeignKey("resource.rid"), nullable=False),
    Column("res_type", String(64), nullable=False),
    Column("system", String(TEXT_INDEX), nullable=False),
    Column("value", String(TEXT_INDEX), nullable=False),
    UniqueConstraint("res_type", "system", "value"),
    Index("ix_unique_identifier_rid", "rid"),
)
