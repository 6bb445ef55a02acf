"""sender.charset: the character set of a sender that leaves MSH-18 empty

Revision ID: 0010_sender_charset
Revises: 0009_export_job
Create Date: 2026-12-07 12:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_sender_charset"
down_revision: str | Sequence[str] | None = "0009_export_job"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sender") as batch:
        batch.add_column(sa.Column("charset", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sender") as batch:
        batch.drop_column("charset")
