"""search_text: the full-text index of ``_text`` and ``_content`` (dui.fhir.search.fulltext)

PostgreSQL: a table of two ``tsvector`` columns (the french configuration's lexemes of the narrative and of
the whole resource), each with a GIN index. SQLite: an FTS5 virtual table (``unicode61`` tokenizer, diacritics
removed, prefix indexes for 2 and 3 characters) whose rowid is the resource's row id.

The rows of resources stored before this revision are written by ``dui reindex``: their bodies are encrypted,
and only the service holds the keys that open them (``dui db upgrade`` says the index is out of date).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import TSVECTOR

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.create_table(
            "search_text",
            sa.Column("rowid", sa.BigInteger(), nullable=False),
            sa.Column("narrative", TSVECTOR(), nullable=False),
            sa.Column("content", TSVECTOR(), nullable=False),
            sa.ForeignKeyConstraint(["rowid"], ["resource.rid"], name=op.f("fk_search_text_rowid_resource")),
            sa.PrimaryKeyConstraint("rowid", name=op.f("pk_search_text")),
        )
        op.create_index(op.f("ix_search_text_narrative"), "search_text", ["narrative"], postgresql_using="gin")
        op.create_index(op.f("ix_search_text_content"), "search_text", ["content"], postgresql_using="gin")
        return
    op.execute("CREATE VIRTUAL TABLE search_text USING fts5(narrative, content, "
               "tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3')")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_index("ix_search_text_content", table_name="search_text")
        op.drop_index("ix_search_text_narrative", table_name="search_text")
    op.drop_table("search_text")
