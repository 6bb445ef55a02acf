"""export_job: the Bulk Data export jobs (hub.export)

Revision ID: 0009_export_job
Revises: 0008_record_integrity
Create Date: 2026-12-07 11:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009_export_job"
down_revision: str | Sequence[str] | None = "0008_record_integrity"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "export_job",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("group_id", sa.String(64), nullable=True),
        sa.Column("params", JSON, nullable=False),
        sa.Column("request_url", sa.Text(), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("owner_role", sa.String(32), nullable=False),
        sa.Column("deidentified", sa.Boolean(), nullable=False),
        sa.Column("transaction_time", WHEN, nullable=False),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("heartbeat_at", WHEN, nullable=True),
        sa.Column("last_polled_at", WHEN, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("exported", sa.BigInteger(), nullable=False),
        sa.Column("progress", sa.String(200), nullable=False),
        sa.Column("output", JSON, nullable=True),
        sa.Column("errors", JSON, nullable=True),
        sa.Column("completed_at", WHEN, nullable=True),
        sa.Column("expires_at", WHEN, nullable=True),
    )
    op.create_index("ix_export_job_state", "export_job", ["state", "heartbeat_at"])


def downgrade() -> None:
    op.drop_index("ix_export_job_state", table_name="export_job")
    op.drop_table("export_job")
