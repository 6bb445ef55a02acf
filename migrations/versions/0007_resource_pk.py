"""resource.pk, an integer surrogate key; the search index keyed by it (resource_pk)

The ids are hashes, so index rows keyed by (resource_type, resource_id) landed at random places in every
index holding the id: each message dirtied pages all over the probe and value indexes. ``resource.pk``
grows with every new resource (SQLite: the rowid; PostgreSQL: a bigserial) and the index tables refer to
it: the probe indexes lead with it and the value indexes end with it, followed by ``resource_id``
(SQLite pages a search by seeking the ids a value index lists). search_reference's target index keeps
``resource_id`` before the pk (searches driven by a patient reference walk a target's rows in id order).

Existing resources get their pks in order of last update (SQLite) or of their place in the table
(PostgreSQL); index rows whose resource does not exist
(nothing could find them: every search joins the resource row) are dropped.

Revision ID: 0007_resource_pk
Revises: 0006_resource_patient_index
Create Date: 2026-11-29 18:50:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0007_resource_pk"
down_revision: str | Sequence[str] | None = "0006_resource_patient_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# table: (index name, the columns before the owner) for the value index; the same for the probe or
# resource index, whose owner columns lead.
VALUE = {
    "search_token": ("ix_search_token_value", ["resource_type", "param", "code", "system"]),
    "search_string": ("ix_search_string_value", ["resource_type", "param", "value"]),
    "search_date": ("ix_search_date_value", ["resource_type", "param", "low", "high"]),
    "search_quantity": ("ix_search_quantity_value", ["resource_type", "param", "value"]),
    "search_number": ("ix_search_number_value", ["resource_type", "param", "value"]),
    "search_uri": ("ix_search_uri_value", ["resource_type", "param", "value"]),
}
TARGET = ("ix_search_reference_target", ["target_id", "target_type", "param", "resource_type", "resource_id"])
PROBE = {
    "search_token": ("ix_search_token_probe", ["param", "code", "system"]),
    "search_string": ("ix_search_string_resource", []),
    "search_date": ("ix_search_date_probe", ["param", "low", "high"]),
    "search_reference": ("ix_search_reference_probe", ["param", "target_type", "target_id"]),
    "search_quantity": ("ix_search_quantity_resource", []),
    "search_number": ("ix_search_number_resource", []),
    "search_uri": ("ix_search_uri_resource", []),
}
PATTERN_OPS = {"search_string", "search_uri"}  # value indexes that answer LIKE 'prefix%' on PostgreSQL


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _live() -> sa.TextClause:
    return sa.text("deleted IS false") if _postgres() else sa.text("deleted IS 0")


def _value_index(batch_op: Any, table: str, owner: list[str]) -> None:
    name, columns = VALUE[table]
    ops = {"value": "varchar_pattern_ops"} if table in PATTERN_OPS else {}
    batch_op.create_index(name, [*columns, *owner], unique=False, postgresql_ops=ops)


def _probe_index(batch_op: Any, table: str, owner: list[str]) -> None:
    name, columns = PROBE[table]
    batch_op.create_index(name, [*owner, *columns], unique=False)


def _resource_columns(pk: bool) -> list[sa.Column[Any]]:
    columns: list[sa.Column[Any]] = []
    if pk:
        columns.append(sa.Column("pk", sa.Integer(), autoincrement=True, nullable=False))
    return [
        *columns,
        sa.Column("resource_type", sa.String(length=64), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("last_updated", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("content", sa.LargeBinary(), nullable=False),
    ]


def _rebuild_sqlite_resource(pk: bool) -> None:
    """SQLite cannot change a primary key in place: copy the rows into a table of the new shape (new pks
    are the rowids handed out in the order of the copy) and put its indexes back."""
    names = "resource_type, id, version_id, last_updated, deleted, patient_id, content"
    key = [sa.PrimaryKeyConstraint("pk")] if pk else [sa.PrimaryKeyConstraint("resource_type", "id")]
    op.create_table("_resource_new", *_resource_columns(pk), *key)
    op.execute(
        f"INSERT INTO _resource_new ({names}) SELECT {names} FROM resource"
        " ORDER BY last_updated, resource_type, id"
    )
    op.drop_table("resource")
    op.rename_table("_resource_new", "resource")
    with op.batch_alter_table("resource", schema=None) as batch_op:
        if pk:
            batch_op.create_index("ux_resource_key", ["resource_type", "id"], unique=True)
        batch_op.create_index("ix_resource_type_updated", ["resource_type", "last_updated"], unique=False)
        batch_op.create_index("ix_resource_compartment", ["patient_id", "resource_type", "id"], unique=False)
        batch_op.create_index("ix_resource_live", ["resource_type", "id"], unique=False, sqlite_where=_live())


def upgrade() -> None:
    if _postgres():
        # ADD COLUMN … bigserial numbers the existing rows (in their order in the heap, mostly the order
        # of their creation) from resource_pk_seq, the sequence new resources draw from
        # (hub.store.resources.allocate_pks).
        op.execute("ALTER TABLE resource ADD COLUMN pk BIGSERIAL")
        op.execute("ALTER TABLE resource DROP CONSTRAINT resource_pkey")
        op.execute("ALTER TABLE resource ADD CONSTRAINT resource_pkey PRIMARY KEY (pk)")
        op.create_index("ux_resource_key", "resource", ["resource_type", "id"], unique=True)
        op.drop_index("ix_resource_live", table_name="resource")
        op.create_index(
            "ix_resource_live",
            "resource",
            ["resource_type", "id"],
            unique=False,
            postgresql_include=["pk"],
            postgresql_where=_live(),
        )
    else:
        _rebuild_sqlite_resource(pk=True)

    for table in PROBE:
        _drop_indexes(table)
        op.add_column(table, sa.Column("resource_pk", sa.BigInteger(), nullable=True))
        op.execute(
            f"UPDATE {table} SET resource_pk = resource.pk FROM resource"
            f" WHERE resource.resource_type = {table}.resource_type AND resource.id = {table}.resource_id"
        )
        op.execute(f"DELETE FROM {table} WHERE resource_pk IS NULL")
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column("resource_pk", existing_type=sa.BigInteger(), nullable=False)
            if table in VALUE:
                _value_index(batch_op, table, ["resource_pk", "resource_id"])
            else:
                batch_op.create_index(TARGET[0], [*TARGET[1], "resource_pk"], unique=False)
            _probe_index(batch_op, table, ["resource_pk"])


def _drop_indexes(table: str) -> None:
    """Drop the indexes that hold the owner columns, before those columns are rewritten."""
    with op.batch_alter_table(table, schema=None) as batch_op:
        batch_op.drop_index(PROBE[table][0])
        batch_op.drop_index(VALUE[table][0] if table in VALUE else TARGET[0])


def downgrade() -> None:
    for table in PROBE:
        _drop_indexes(table)
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("resource_pk")
            if table in VALUE:
                _value_index(batch_op, table, ["resource_id"])
            else:
                batch_op.create_index(TARGET[0], TARGET[1], unique=False)
            _probe_index(batch_op, table, ["resource_type", "resource_id"])

    if _postgres():
        op.drop_index("ix_resource_live", table_name="resource")
        op.drop_index("ux_resource_key", table_name="resource")
        op.execute("ALTER TABLE resource DROP CONSTRAINT resource_pkey")
        op.execute("ALTER TABLE resource ADD CONSTRAINT resource_pkey PRIMARY KEY (resource_type, id)")
        op.execute("ALTER TABLE resource DROP COLUMN pk")  # and its sequence
        op.create_index(
            "ix_resource_live", "resource", ["resource_type", "id"], unique=False, postgresql_where=_live()
        )
    else:
        _rebuild_sqlite_resource(pk=False)
