"""DICOM: transfers, studies and instances the hub holds (the files are in the file store).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dicom_transfer",
        sa.Column("transfer_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("source", sa.String(255), nullable=False),
        sa.Column("case_task_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("accepted", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("report", sa.Text(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=False), nullable=True),
        sa.PrimaryKeyConstraint("transfer_id", name="pk_dicom_transfer"),
    )
    op.create_index("ix_dicom_transfer_status", "dicom_transfer", ["status"])
    op.create_table(
        "dicom_study",
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("case_task_id", sa.String(64), nullable=True),
        sa.Column("patient_id", sa.String(64), nullable=True),
        sa.Column("outside_patient_id", sa.String(255), nullable=True),
        sa.Column("outside_issuer", sa.String(255), nullable=True),
        sa.Column("hold_reason", sa.Text(), nullable=True),
        sa.Column("imaging_study_id", sa.String(64), nullable=True),
        sa.Column("last_transfer_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=False), nullable=False),
        sa.PrimaryKeyConstraint("study_uid", name="pk_dicom_study"),
    )
    op.create_index("ix_dicom_study_status", "dicom_study", ["status"])
    op.create_index("ix_dicom_study_case_task_id", "dicom_study", ["case_task_id"])
    op.create_index("ix_dicom_study_patient_id", "dicom_study", ["patient_id"])
    op.create_table(
        "dicom_instance",
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("study_uid", sa.String(64), nullable=False),
        sa.Column("series_uid", sa.String(64), nullable=False),
        sa.Column("sop_class_uid", sa.String(64), nullable=False),
        sa.Column("transfer_syntax_uid", sa.String(64), nullable=False),
        sa.Column("received_digest", sa.String(64), nullable=False),
        sa.Column("digest", sa.String(64), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("info", sa.Text(), nullable=False),
        sa.Column("transfer_id", sa.Integer(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=False), nullable=False),
        sa.PrimaryKeyConstraint("sop_instance_uid", name="pk_dicom_instance"),
    )
    op.create_index("ix_dicom_instance_study_uid", "dicom_instance", ["study_uid"])


def downgrade() -> None:
    op.drop_table("dicom_instance")
    op.drop_table("dicom_study")
    op.drop_table("dicom_transfer")
