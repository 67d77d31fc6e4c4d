"""Index rows carry the row id at the end of their search index (index-only scans, rid order)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table -> (old columns, new columns)
CHANGES = [
    ("search_string", ["res_type", "param", "value"], ["res_type", "param", "value", "rid"]),
    ("search_token", ["res_type", "param", "code", "system"], ["res_type", "param", "code", "system", "rid"]),
    ("search_reference", ["res_type", "param", "target_id", "target_type"],
     ["res_type", "param", "target_id", "target_type", "rid"]),
    ("search_reference", ["target_type", "target_id"], ["target_type", "target_id", "rid"]),
    ("search_date", ["res_type", "param", "low", "high"], ["res_type", "param", "low", "high", "rid"]),
    ("search_quantity", ["res_type", "param", "value"], ["res_type", "param", "value", "rid"]),
    ("search_uri", ["res_type", "param", "uri"], ["res_type", "param", "uri", "rid"]),
    ("search_composite", ["res_type", "param", "c1_code", "c1_system"],
     ["res_type", "param", "c1_code", "c1_system", "rid"]),
]


def _name(table: str, columns: list[str]) -> str:
    return f"ix_{table}_{'_'.join(columns)}"


def upgrade() -> None:
    for table, old, new in CHANGES:
        op.create_index(_name(table, new), table, new)
        op.drop_index(_name(table, old), table_name=table)


def downgrade() -> None:
    for table, old, new in CHANGES:
        op.create_index(_name(table, old), table, old)
        op.drop_index(_name(table, new), table_name=table)
