"""Opinion deliveries: each signed opinion version on its way back by each channel.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "opinion_delivery",
        sa.Column("delivery_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("report_id", sa.String(64), nullable=False),
        sa.Column("report_version", sa.Integer(), nullable=False),
        sa.Column("case_task_id", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(8), nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=False), nullable=True),
        sa.PrimaryKeyConstraint("delivery_id", name="pk_opinion_delivery"),
        sa.UniqueConstraint(
            "report_id", "report_version", "channel", "target", name="uq_opinion_delivery"
        ),
    )
    op.create_index("ix_opinion_delivery_report_id", "opinion_delivery", ["report_id"])
    op.create_index("ix_opinion_delivery_case_task_id", "opinion_delivery", ["case_task_id"])
    op.create_index("ix_opinion_delivery_message_id", "opinion_delivery", ["message_id"])


def downgrade() -> None:
    op.drop_table("opinion_delivery")
