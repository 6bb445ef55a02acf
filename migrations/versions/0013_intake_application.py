"""inbound_message.application (MSH-3): the duplicate key is (MSH-4, MSH-3, MSH-10); the Patient
compartment of FHIR R4's CompartmentDefinition

HL7 makes a control id unique per sending application, so the intake's duplicate index
``ix_inbound_message_control`` becomes (facility, application, control_id). Existing rows get MSH-3
from their stored bytes (its namespace id, else its universal id; "" when MSH does not split).

The types whose compartment or search parameters changed (Account, Appointment, CareTeam, ChargeItem,
Coverage, EpisodeOfCare, MedicationAdministration) get their ``resource.patient_id`` again from the
definition's parameters and their search-index rows rewritten by today's extraction.

Revision ID: 0013_intake_application
Revises: 0012_stats_facts
Create Date: 2026-12-07 12:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_intake_application"
down_revision: str | Sequence[str] | None = "0012_stats_facts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BATCH = 2000


def _application(raw: bytes | None) -> str:
    """MSH-3 of stored message bytes (as the intake reads it)."""
    if not raw:
        return ""
    data = bytes(raw)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    line = data.lstrip(b"\r\n\t ").split(b"\r", 1)[0].split(b"\n", 1)[0]
    if not line.startswith(b"MSH") or len(line) < 8:
        return ""
    parts = line.split(line[3:4])
    if len(parts) < 3:
        return ""
    comp = parts[1][:1] or b"^"
    first, _, rest = parts[2].partition(comp)
    value = first or rest.split(comp, 1)[0]
    return value.decode("latin-1", "replace").strip()[:200]


def upgrade() -> None:
    with op.batch_alter_table("inbound_message", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("application", sa.String(length=200), server_default="", nullable=False)
        )
    bind = op.get_bind()
    messages = sa.table("inbound_message", sa.column("id"), sa.column("raw"), sa.column("application"))
    update = (
        sa.update(messages)
        .where(messages.c.id == sa.bindparam("rid"))
        .values(application=sa.bindparam("app"))
    )
    last = 0
    while True:
        rows = bind.execute(
            sa.select(messages.c.id, messages.c.raw)
            .where(messages.c.id > last)
            .order_by(messages.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            break
        changes = [{"rid": r.id, "app": app} for r in rows if (app := _application(r.raw))]
        if changes:
            bind.execute(update, changes)
        last = rows[-1].id
    with op.batch_alter_table("inbound_message", schema=None) as batch_op:
        batch_op.drop_index("ix_inbound_message_control")
        batch_op.create_index(
            "ix_inbound_message_control", ["facility", "application", "control_id"], unique=False
        )

    _reindex(bind)


REINDEXED = (
    "Account",
    "Appointment",
    "CareTeam",
    "ChargeItem",
    "Coverage",
    "EpisodeOfCare",
    "MedicationAdministration",
)


def _reindex(bind: sa.Connection) -> None:
    import orjson

    from hub.store import bulk
    from hub.store.resources import _patient_of
    from hub.store.search_index import INDEX_MODELS
    from hub.store.search_params import KINDS, extract_rows

    resource = sa.table(
        "resource",
        sa.column("pk"),
        sa.column("resource_type"),
        sa.column("id"),
        sa.column("deleted"),
        sa.column("patient_id"),
        sa.column("content"),
    )
    set_patient = (
        sa.update(resource)
        .where(resource.c.pk == sa.bindparam("rpk"))
        .values(patient_id=sa.bindparam("patient"))
    )
    for rtype in REINDEXED:
        last = -1
        while True:
            rows = bind.execute(
                sa.select(
                    resource.c.pk,
                    resource.c.id,
                    resource.c.deleted,
                    resource.c.patient_id,
                    resource.c.content,
                )
                .where(resource.c.resource_type == rtype, resource.c.pk > last)
                .order_by(resource.c.pk)
                .limit(_BATCH)
            ).all()
            if not rows:
                break
            last = rows[-1].pk
            live = [r for r in rows if not r.deleted]
            docs = {r.pk: orjson.loads(r.content) for r in live}
            moved = [
                {"rpk": r.pk, "patient": p} for r in live if (p := _patient_of(docs[r.pk])) != r.patient_id
            ]
            if moved:
                bind.execute(set_patient, moved)
            pks = [r.pk for r in live]
            for kind, model in INDEX_MODELS.items():
                table = model.__table__
                bind.execute(sa.delete(table).where(table.c.resource_pk.in_(pks)))
                fresh = [(rtype, r.id, r.pk, *row) for r in live for row in extract_rows(docs[r.pk])[kind]]
                if fresh:
                    bulk.insert_rows(
                        bind, table, ("resource_type", "resource_id", "resource_pk", *KINDS[kind]), fresh
                    )


def downgrade() -> None:
    with op.batch_alter_table("inbound_message", schema=None) as batch_op:
        batch_op.drop_index("ix_inbound_message_control")
        batch_op.create_index("ix_inbound_message_control", ["facility", "control_id"], unique=False)
        batch_op.drop_column("application")
