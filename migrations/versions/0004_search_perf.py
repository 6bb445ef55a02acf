"""search performance at a million resources: covering probe indexes, live-row index

The per-resource indexes of search_token, search_date and search_reference become covering probe indexes
(a criterion tested per candidate id is an index-only scan; they still serve rewriting a resource's
rows by their prefix), and ``ix_resource_live`` lists the live rows of a type in id order so that a
search finds its page of ids from indexes alone and reads the content of that page only.

Revision ID: 0004_search_perf
Revises: 0003_mpi
Create Date: 2026-11-29 10:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_search_perf"
down_revision: str | Sequence[str] | None = "0003_mpi"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PROBES = {
    "search_token": ("ix_search_token_resource", "ix_search_token_probe", ["param", "code", "system"]),
    "search_date": ("ix_search_date_resource", "ix_search_date_probe", ["param", "low", "high"]),
    "search_reference": (
        "ix_search_reference_resource",
        "ix_search_reference_probe",
        ["param", "target_type", "target_id"],
    ),
}


def upgrade() -> None:
    for table, (old, new, extra) in PROBES.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(new, ["resource_type", "resource_id", *extra], unique=False)
            batch_op.drop_index(old)
    live = (
        sa.text("deleted IS false") if op.get_bind().dialect.name == "postgresql" else sa.text("deleted IS 0")
    )
    with op.batch_alter_table("resource", schema=None) as batch_op:
        batch_op.create_index(
            "ix_resource_live",
            ["resource_type", "id"],
            unique=False,
            postgresql_where=live,
            sqlite_where=live,
        )


def downgrade() -> None:
    with op.batch_alter_table("resource", schema=None) as batch_op:
        batch_op.drop_index("ix_resource_live")
    for table, (old, new, _extra) in PROBES.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.create_index(old, ["resource_type", "resource_id"], unique=False)
            batch_op.drop_index(new)
