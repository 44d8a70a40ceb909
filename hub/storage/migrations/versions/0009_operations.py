"""Operations: a correlation id on each logged message, and the indexes the metrics use.

The metrics count the message log and the finished jobs at every scrape: covering
indexes make those counts read small index entries rather than the rows (which hold the
raw messages).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("message_log") as batch:
        batch.add_column(sa.Column("correlation_id", sa.String(64), nullable=True))
    op.create_index(
        "ix_message_log_counts",
        "message_log",
        ["direction", "message_type", "status", "ack_code"],
    )
    op.create_index("ix_job_finished", "job", ["status", "updated_at", "kind"])


def downgrade() -> None:
    op.drop_index("ix_job_finished", table_name="job")
    op.drop_index("ix_message_log_counts", table_name="message_log")
    with op.batch_alter_table("message_log") as batch:
        batch.drop_column("correlation_id")
