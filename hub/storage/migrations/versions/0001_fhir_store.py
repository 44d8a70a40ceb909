"""FHIR store: current resources, versions, search index.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fhir_resource",
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("res_id", sa.String(64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=False), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("res_type", "res_id", name="pk_fhir_resource"),
    )
    op.create_index("ix_fhir_resource_last_updated", "fhir_resource", ["last_updated"])
    op.create_table(
        "fhir_resource_version",
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("res_id", sa.String(64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=False), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint(
            "res_type", "res_id", "version_id", name="pk_fhir_resource_version"
        ),
    )
    op.create_index(
        "ix_fhir_resource_version_last_updated", "fhir_resource_version", ["last_updated"]
    )
    op.create_table(
        "fhir_search_index",
        sa.Column("row_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("res_type", sa.String(64), nullable=False),
        sa.Column("res_id", sa.String(64), nullable=False),
        sa.Column("param", sa.String(64), nullable=False),
        sa.Column("system", sa.String(255), nullable=True),
        sa.Column("value", sa.String(255), nullable=True),
        sa.Column("low", sa.DateTime(timezone=False), nullable=True),
        sa.Column("high", sa.DateTime(timezone=False), nullable=True),
        sa.PrimaryKeyConstraint("row_id", name="pk_fhir_search_index"),
    )
    op.create_index("ix_fhir_search_index_owner", "fhir_search_index", ["res_type", "res_id"])
    op.create_index(
        "ix_fhir_search_index_value", "fhir_search_index", ["res_type", "param", "value"]
    )
    op.create_index(
        "ix_fhir_search_index_target", "fhir_search_index", ["param", "system", "value"]
    )
    op.create_index(
        "ix_fhir_search_index_date", "fhir_search_index", ["res_type", "param", "low", "high"]
    )


def downgrade() -> None:
    op.drop_table("fhir_search_index")
    op.drop_table("fhir_resource_version")
    op.drop_table("fhir_resource")
