"""Security: who wrote each resource, OAuth clients, used client assertions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("fhir_resource") as batch:
        batch.add_column(sa.Column("written_by", sa.String(255), nullable=True))
        batch.create_index("ix_fhir_resource_written_by", ["written_by"])
    with op.batch_alter_table("fhir_resource_version") as batch:
        batch.add_column(sa.Column("written_by", sa.String(255), nullable=True))
    op.create_table(
        "oauth_client",
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("roles", sa.Text(), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("jwks", sa.Text(), nullable=True),
        sa.Column("jwks_url", sa.String(1024), nullable=True),
        sa.Column("fhir_user", sa.String(255), nullable=True),
        sa.Column("programs", sa.Text(), nullable=False),
        sa.Column("referrer_kind", sa.String(32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=False), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("client_id", name="pk_oauth_client"),
    )
    op.create_table(
        "oauth_used_assertion",
        sa.Column("client_id", sa.String(128), nullable=False),
        sa.Column("jti", sa.String(255), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=False), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "jti", name="pk_oauth_used_assertion"),
    )
    op.create_index("ix_oauth_used_assertion_expires_at", "oauth_used_assertion", ["expires_at"])


def downgrade() -> None:
    op.drop_table("oauth_used_assertion")
    op.drop_table("oauth_client")
    with op.batch_alter_table("fhir_resource_version") as batch:
        batch.drop_column("written_by")
    with op.batch_alter_table("fhir_resource") as batch:
        batch.drop_index("ix_fhir_resource_written_by")
        batch.drop_column("written_by")
