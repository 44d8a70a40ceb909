"""Job partitions: the mapping jobs of one patient run one at a time, in arrival order.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("job") as batch:
        batch.add_column(sa.Column("partition_key", sa.String(64), nullable=True))
    op.create_index("ix_job_partition", "job", ["kind", "partition_key", "status"])


def downgrade() -> None:
    op.drop_index("ix_job_partition", table_name="job")
    with op.batch_alter_table("job") as batch:
        batch.drop_column("partition_key")
