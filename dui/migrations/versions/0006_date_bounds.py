"""Open ends of indexed date ranges as far-away bounds instead of NULL

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The values of dui.fhir.search.indexer.MIN_INSTANT / MAX_INSTANT at this revision.
MIN_INSTANT = datetime(1, 1, 2, tzinfo=UTC)
MAX_INSTANT = datetime(9999, 12, 30, tzinfo=UTC)


def _bound(value: datetime) -> object:
    return value.replace(tzinfo=None) if op.get_bind().dialect.name == "sqlite" else value


def upgrade() -> None:
    dates = sa.table("search_date", sa.column("low", sa.DateTime(timezone=True)),
                     sa.column("high", sa.DateTime(timezone=True)))
    op.execute(dates.update().where(dates.c.low.is_(None)).values(low=_bound(MIN_INSTANT)))
    op.execute(dates.update().where(dates.c.high.is_(None)).values(high=_bound(MAX_INSTANT)))


def downgrade() -> None:
    dates = sa.table("search_date", sa.column("low", sa.DateTime(timezone=True)),
                     sa.column("high", sa.DateTime(timezone=True)))
    op.execute(dates.update().where(dates.c.low == _bound(MIN_INSTANT)).values(low=None))
    op.execute(dates.update().where(dates.c.high == _bound(MAX_INSTANT)).values(high=None))
