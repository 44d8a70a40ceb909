"""Message log and job outbox.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "message_log",
        sa.Column("message_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("direction", sa.String(3), nullable=False),
        sa.Column("channel", sa.String(128), nullable=False),
        sa.Column("peer", sa.String(255), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("sending_application", sa.String(255), nullable=True),
        sa.Column("sending_facility", sa.String(255), nullable=True),
        sa.Column("control_id", sa.String(199), nullable=True),
        sa.Column("message_type", sa.String(32), nullable=False),
        sa.Column("version", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("ack", sa.LargeBinary(), nullable=True),
        sa.Column("ack_code", sa.String(2), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("report", sa.Text(), nullable=True),
        sa.Column("produced", sa.Text(), nullable=True),
        sa.Column("duplicates", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("message_id", name="pk_message_log"),
    )
    op.create_index("ix_message_log_received_at", "message_log", ["received_at"])
    op.create_index("ix_message_log_message_type", "message_log", ["message_type"])
    op.create_index("ix_message_log_status", "message_log", ["status"])
    op.create_index("ix_message_log_batch_id", "message_log", ["batch_id"])
    op.create_index(
        "uq_message_log_sender_control",
        "message_log",
        ["direction", "sending_application", "sending_facility", "control_id"],
        unique=True,
    )
    op.create_table(
        "job",
        sa.Column("job_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("run_after", sa.DateTime(timezone=False), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=False), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=False), nullable=False),
        sa.PrimaryKeyConstraint("job_id", name="pk_job"),
    )
    op.create_index("ix_job_due", "job", ["status", "run_after"])


def downgrade() -> None:
    op.drop_table("job")
    op.drop_table("message_log")
