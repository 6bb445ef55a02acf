"""resource_contribution: what each message contributed to a shared resource; inbound_message.patient_conflict

A resource several messages make (an Encounter from the ADT and from each result's PV1, a ServiceRequest
from the order and its results, a Practitioner named everywhere) is stored as the merge of the messages'
contributions in message order (``hub.store.contributions``), so a sparse later message adds what it
knows instead of blanking what an earlier one said, and a replay or a late message gives the same
result. A message whose resource would change patient is held, and ``patient_conflict`` says which
resource and which two patients.

Revision ID: 0008_record_integrity
Revises: 0007_resource_pk
Create Date: 2026-12-07 11:50:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008_record_integrity"
down_revision: str | Sequence[str] | None = "0007_resource_pk"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "resource_contribution",
        sa.Column("resource_type", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("message_id", sa.BigInteger(), primary_key=True),
        sa.Column("sort_key", sa.String(40), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
    )
    op.add_column(
        "inbound_message",
        sa.Column(
            "patient_conflict",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
    )


def downgrade() -> None:
    op.drop_column("inbound_message", "patient_conflict")
    op.drop_table("resource_contribution")
