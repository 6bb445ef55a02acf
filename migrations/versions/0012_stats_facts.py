"""stats_fact and stats_person: the ministry statistics' facts, kept by a write hook (hub.stats.upkeep)

Existing resources get their facts from ``hub stats rebuild``.

Revision ID: 0012_stats_facts
Revises: 0011_audit
Create Date: 2026-12-07 12:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0012_stats_facts"
down_revision: str | Sequence[str] | None = "0011_audit"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


PERSON = ("golden_id", "province", "regency", "district", "sex", "birth_date")
BY_CODE = (*PERSON, "facility", "positive", "started", "ended", "dose")
BY_DATE = (*BY_CODE, "code", "category", "chapter")


def _person_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("golden_id", sa.String(length=64), nullable=False),
        sa.Column("sex", sa.String(length=16), nullable=False),
        sa.Column("birth_date", sa.Date(), nullable=True),
        sa.Column("province", sa.String(length=8), nullable=False),
        sa.Column("regency", sa.String(length=8), nullable=False),
        sa.Column("district", sa.String(length=8), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "stats_fact",
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("facility", sa.String(length=200), nullable=False),
        sa.Column("started", sa.Date(), nullable=True),
        sa.Column("ended", sa.Date(), nullable=True),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("category", sa.String(length=8), nullable=False),
        sa.Column("chapter", sa.String(length=8), nullable=False),
        sa.Column("dose", sa.Integer(), nullable=True),
        sa.Column("positive", sa.Boolean(), nullable=True),
        *_person_columns(),
        sa.PrimaryKeyConstraint("resource_type", "resource_id"),
    )
    op.create_index(
        "ix_stats_fact_code",
        "stats_fact",
        ["kind", "category", "code", "started"],
        postgresql_include=list(BY_CODE),
    )
    op.create_index(
        "ix_stats_fact_kind_start", "stats_fact", ["kind", "started"], postgresql_include=list(BY_DATE)
    )
    op.create_index(
        "ix_stats_fact_kind_end", "stats_fact", ["kind", "ended"], postgresql_include=list(BY_DATE)
    )
    op.create_index("ix_stats_fact_patient", "stats_fact", ["patient_id"])
    op.create_index("ix_stats_fact_golden", "stats_fact", ["golden_id"])
    op.create_table(
        "stats_person",
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        *_person_columns(),
        sa.PrimaryKeyConstraint("patient_id"),
    )
    op.create_index("ix_stats_person_golden", "stats_person", ["golden_id"])


def downgrade() -> None:
    op.drop_index("ix_stats_person_golden", table_name="stats_person")
    op.drop_table("stats_person")
    op.drop_index("ix_stats_fact_golden", table_name="stats_fact")
    op.drop_index("ix_stats_fact_patient", table_name="stats_fact")
    op.drop_index("ix_stats_fact_kind_end", table_name="stats_fact")
    op.drop_index("ix_stats_fact_kind_start", table_name="stats_fact")
    op.drop_index("ix_stats_fact_code", table_name="stats_fact")
    op.drop_table("stats_fact")
