"""Record pulls: a case's records at each outside FHIR source.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "record_pull",
        sa.Column("pull_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("case_task_id", sa.String(64), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("source_patient_id", sa.String(64), nullable=True),
        sa.Column("since", sa.String(40), nullable=True),
        sa.Column("stored", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("report", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=False), nullable=False),
        sa.PrimaryKeyConstraint("pull_id", name="pk_record_pull"),
        sa.UniqueConstraint("case_task_id", "source", name="uq_record_pull_case"),
    )
    op.create_index("ix_record_pull_case_task_id", "record_pull", ["case_task_id"])
    op.create_index("ix_record_pull_status", "record_pull", ["status"])


def downgrade() -> None:
    op.drop_table("record_pull")
