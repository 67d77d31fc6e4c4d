"""FHIR store: resources, versions, search index, unique identifiers

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "resource",
        sa.Column("rid", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("res_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("rid", name=op.f("pk_resource")),
        sa.UniqueConstraint("res_type", "res_id", name=op.f("uq_resource_res_type_res_id")),
    )
    op.create_table(
        "resource_version",
        sa.Column("vid", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("rid", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("method", sa.String(length=8), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(["rid"], ["resource.rid"], name=op.f("fk_resource_version_rid_resource")),
        sa.PrimaryKeyConstraint("vid", name=op.f("pk_resource_version")),
        sa.UniqueConstraint("rid", "version", name=op.f("uq_resource_version_rid_version")),
    )
    with op.batch_alter_table("resource_version", schema=None) as batch_op:
        batch_op.create_index("ix_resource_version_last_updated", ["last_updated"], unique=False)
        batch_op.create_index("ix_resource_version_res_type_vid", ["res_type", "vid"], unique=False)

    op.create_table(
        "search_date",
        sa.Column("rid", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("low", sa.DateTime(timezone=True), nullable=True),
        sa.Column("high", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["rid"], ["resource.rid"], name=op.f("fk_search_date_rid_resource")),
    )
    with op.batch_alter_table("search_date", schema=None) as batch_op:
        batch_op.create_index(
            "ix_search_date_res_type_param_low_high", ["res_type", "param", "low", "high"], unique=False
        )
        batch_op.create_index("ix_search_date_rid", ["rid"], unique=False)

    op.create_table(
        "search_quantity",
        sa.Column("rid", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("value", sa.Numeric(precision=36, scale=12), nullable=False),
        sa.Column("low", sa.Numeric(precision=36, scale=12), nullable=False),
        sa.Column("high", sa.Numeric(precision=36, scale=12), nullable=False),
        sa.Column("system", sa.String(length=255), nullable=True),
        sa.Column("code", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(["rid"], ["resource.rid"], name=op.f("fk_search_quantity_rid_resource")),
    )
    with op.batch_alter_table("search_quantity", schema=None) as batch_op:
        batch_op.create_index("ix_search_quantity_res_type_param_value", ["res_type", "param", "value"], unique=False)
        batch_op.create_index("ix_search_quantity_rid", ["rid"], unique=False)

    op.create_table(
        "search_reference",
        sa.Column("rid", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("target_type", sa.String(length=64), nullable=True),
        sa.Column("target_id", sa.String(length=64), nullable=True),
        sa.Column("url", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(["rid"], ["resource.rid"], name=op.f("fk_search_reference_rid_resource")),
    )
    with op.batch_alter_table("search_reference", schema=None) as batch_op:
        batch_op.create_index(
            "ix_search_reference_res_type_param_target_id_target_type",
            ["res_type", "param", "target_id", "target_type"],
            unique=False,
        )
        batch_op.create_index("ix_search_reference_rid", ["rid"], unique=False)
        batch_op.create_index("ix_search_reference_target_type_target_id", ["target_type", "target_id"], unique=False)

    op.create_table(
        "search_string",
        sa.Column("rid", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("exact", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(["rid"], ["resource.rid"], name=op.f("fk_search_string_rid_resource")),
    )
    with op.batch_alter_table("search_string", schema=None) as batch_op:
        batch_op.create_index("ix_search_string_res_type_param_value", ["res_type", "param", "value"], unique=False)
        batch_op.create_index("ix_search_string_rid", ["rid"], unique=False)

    op.create_table(
        "search_token",
        sa.Column("rid", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("system", sa.String(length=255), nullable=True),
        sa.Column("code", sa.String(length=255), nullable=True),
        sa.Column("text", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(["rid"], ["resource.rid"], name=op.f("fk_search_token_rid_resource")),
    )
    with op.batch_alter_table("search_token", schema=None) as batch_op:
        batch_op.create_index(
            "ix_search_token_res_type_param_code_system", ["res_type", "param", "code", "system"], unique=False
        )
        batch_op.create_index("ix_search_token_rid", ["rid"], unique=False)

    op.create_table(
        "search_uri",
        sa.Column("rid", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=100), nullable=False),
        sa.Column("uri", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(["rid"], ["resource.rid"], name=op.f("fk_search_uri_rid_resource")),
    )
    with op.batch_alter_table("search_uri", schema=None) as batch_op:
        batch_op.create_index("ix_search_uri_res_type_param_uri", ["res_type", "param", "uri"], unique=False)
        batch_op.create_index("ix_search_uri_rid", ["rid"], unique=False)

    op.create_table(
        "unique_identifier",
        sa.Column("rid", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("res_type", sa.String(length=64), nullable=False),
        sa.Column("system", sa.String(length=255), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(["rid"], ["resource.rid"], name=op.f("fk_unique_identifier_rid_resource")),
        sa.UniqueConstraint("res_type", "system", "value", name=op.f("uq_unique_identifier_res_type_system_value")),
    )
    with op.batch_alter_table("unique_identifier", schema=None) as batch_op:
        batch_op.create_index("ix_unique_identifier_rid", ["rid"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("unique_identifier", schema=None) as batch_op:
        batch_op.drop_index("ix_unique_identifier_rid")

    op.drop_table("unique_identifier")
    with op.batch_alter_table("search_uri", schema=None) as batch_op:
        batch_op.drop_index("ix_search_uri_rid")
        batch_op.drop_index("ix_search_uri_res_type_param_uri")

    op.drop_table("search_uri")
    with op.batch_alter_table("search_token", schema=None) as batch_op:
        batch_op.drop_index("ix_search_token_rid")
        batch_op.drop_index("ix_search_token_res_type_param_code_system")

    op.drop_table("search_token")
    with op.batch_alter_table("search_string", schema=None) as batch_op:
        batch_op.drop_index("ix_search_string_rid")
        batch_op.drop_index("ix_search_string_res_type_param_value")

    op.drop_table("search_string")
    with op.batch_alter_table("search_reference", schema=None) as batch_op:
        batch_op.drop_index("ix_search_reference_target_type_target_id")
        batch_op.drop_index("ix_search_reference_rid")
        batch_op.drop_index("ix_search_reference_res_type_param_target_id_target_type")

    op.drop_table("search_reference")
    with op.batch_alter_table("search_quantity", schema=None) as batch_op:
        batch_op.drop_index("ix_search_quantity_rid")
        batch_op.drop_index("ix_search_quantity_res_type_param_value")

    op.drop_table("search_quantity")
    with op.batch_alter_table("search_date", schema=None) as batch_op:
        batch_op.drop_index("ix_search_date_rid")
        batch_op.drop_index("ix_search_date_res_type_param_low_high")

    op.drop_table("search_date")
    with op.batch_alter_table("resource_version", schema=None) as batch_op:
        batch_op.drop_index("ix_resource_version_res_type_vid")
        batch_op.drop_index("ix_resource_version_last_updated")

    op.drop_table("resource_version")
    op.drop_table("resource")
