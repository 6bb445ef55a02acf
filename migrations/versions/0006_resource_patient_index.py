"""resource: drop ix_resource_patient, which ix_resource_compartment (patient_id, resource_type, id) leads

Every query on ``patient_id`` is served by the compartment index; the second index cost every
resource write one more B-tree insert.

Revision ID: 0006_resource_patient_index
Revises: 0005_search_aliases
Create Date: 2026-11-29 15:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006_resource_patient_index"
down_revision: str | Sequence[str] | None = "0005_search_aliases"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("resource", schema=None) as batch_op:
        batch_op.drop_index("ix_resource_patient")


def downgrade() -> None:
    with op.batch_alter_table("resource", schema=None) as batch_op:
        batch_op.create_index("ix_resource_patient", ["patient_id"], unique=False)
