"""Search index: look values up by value first.

With (res_type, param, value) the planner of a young PostgreSQL database (no statistics
yet) could pick the date index, sharing the same prefix, and scan every value of a type.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_fhir_search_index_value", table_name="fhir_search_index")
    op.create_index(
        "ix_fhir_search_index_lookup", "fhir_search_index", ["value", "res_type", "param"]
    )


def downgrade() -> None:
    op.drop_index("ix_fhir_search_index_lookup", table_name="fhir_search_index")
    op.create_index(
        "ix_fhir_search_index_value", "fhir_search_index", ["res_type", "param", "value"]
    )
