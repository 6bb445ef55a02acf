"""inbound_message.application (MSH-3): the duplicate key is (MSH-4, MSH-3, MSH-10)

HL7 makes a control id unique per sending application, so the intake's duplicate index
``ix_inbound_message_control`` becomes (facility, application, control_id). Existing rows get MSH-3
from their stored bytes (its namespace id, else its universal id; "" when MSH does not split).

Revision ID: 0008_intake_application
Revises: 0007_resource_pk
Create Date: 2026-12-07 12:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_intake_application"
down_revision: str | Sequence[str] | None = "0007_resource_pk"
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


def downgrade() -> None:
    with op.batch_alter_table("inbound_message", schema=None) as batch_op:
        batch_op.drop_index("ix_inbound_message_control")
        batch_op.create_index("ix_inbound_message_control", ["facility", "control_id"], unique=False)
        batch_op.drop_column("application")
