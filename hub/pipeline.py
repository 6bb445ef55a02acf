"""process_batch(session, ids): the one orchestration of a stored message into FHIR resources.

Parse → map → resolve identities → upsert resources (+ version and index rows) + Provenance → state
``processed``; all in the caller's transaction, one savepoint per message so a failing message becomes
data (``failed`` with an error code) without undoing its neighbours. Messages of one patient are applied
in arrival order: before a message is processed, every earlier ``received`` message with the same
patient key is processed first, so the order holds whatever the number of workers and whichever task
arrives first. On PostgreSQL a transaction first takes the per-patient advisory locks of its whole batch,
in ascending key order (so two workers never deadlock), and only then reads the messages' state (so a
message another worker processed meanwhile is not applied again); SQLite serialises all writers anyway.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from hub import hl7
from hub.errors import HubError
from hub.mapping import SenderContext, map_message
from hub.mpi.service import resolve_identities
from hub.store import resources as store
from hub.store.models import InboundMessage, MessageResource, Sender

log = logging.getLogger(__name__)

PENDING = "received"
REPLAYABLE = ("failed", "held", "processed", "received")


@dataclass(frozen=True, slots=True)
class Outcome:
    message_id: int
    state: str
    error_code: str | None = None


def process_batch(session: Session, ids: Iterable[int], *, force: bool = False) -> list[Outcome]:
    """Process messages by id. Without ``force`` only ``received`` ones are processed (a message taken
    twice, by a redelivered task or the sweeper, is processed once); with ``force`` (replay) failed,
    held and processed ones are processed again."""
    wanted = sorted(set(ids))
    if not wanted:
        return []
    if session.get_bind().dialect.name == "postgresql":
        _lock_patients(session, wanted)
    chosen = [
        row
        for row in session.scalars(select(InboundMessage).where(InboundMessage.id.in_(wanted)))
        if row.state == PENDING or (force and row.state in REPLAYABLE)
    ]
    todo = {row.id: row for row in chosen}
    # Every message still pending for a patient of this batch and older than the batch's newest goes
    # first: processing all of them in id order applies each patient's messages in arrival order.
    patients = {(row.facility, row.patient_key) for row in chosen if row.patient_key}
    if patients:
        for earlier in session.scalars(
            select(InboundMessage).where(
                InboundMessage.patient_key.in_(sorted({key for _, key in patients})),
                InboundMessage.facility.in_(sorted({fac for fac, _ in patients})),
                InboundMessage.state == PENDING,
                InboundMessage.id < max(todo),
            )
        ):
            if (earlier.facility, earlier.patient_key) in patients:
                todo.setdefault(earlier.id, earlier)
    return [_process_one(session, todo[message_id]) for message_id in sorted(todo)]


def _lock_patients(session: Session, ids: list[int]) -> None:
    """Take the transaction-scoped advisory lock of every patient (or, without a patient key, of every
    message) in the batch, in ascending key order, before any message state is read. Released at commit."""
    keys: set[int] = set()
    for message_id, facility, patient_key in session.execute(
        select(InboundMessage.id, InboundMessage.facility, InboundMessage.patient_key).where(
            InboundMessage.id.in_(ids)
        )
    ):
        basis = f"{facility}|{patient_key}" if patient_key else f"message|{message_id}"
        keys.add(zlib.crc32(basis.encode()))
    for key in sorted(keys):
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})


def _sender_context(session: Session, row: InboundMessage) -> SenderContext:
    known: dict[int | None, SenderContext] = session.info.setdefault("hub.sender_contexts", {})
    ctx = known.get(row.sender_id)
    if ctx is None:
        sender = session.get(Sender, row.sender_id) if row.sender_id is not None else None
        ctx = (
            SenderContext(facility=row.facility)
            if sender is None
            else SenderContext(facility=sender.facility, overlay=sender.overlay, time_zone=sender.time_zone)
        )
        if sender is not None:
            known[row.sender_id] = ctx
    return dataclasses.replace(ctx, message_id=row.id)


def _process_one(session: Session, row: InboundMessage) -> Outcome:
    row.attempts += 1
    try:
        # Parse and map write nothing: a message failing there needs no savepoint to undo.
        header = hl7.peek_header(row.raw)
        message = hl7.parse(hl7.decode(row.raw, header))
        ctx = _sender_context(session, row)
        result = map_message(message, ctx)
    except Exception as exc:
        return _failure(row, exc)
    try:
        with session.begin_nested():
            resolve_identities(session, result, ctx)
            session.execute(delete(MessageResource).where(MessageResource.message_id == row.id))
            now = datetime.now(UTC)
            for resource in result.resources:
                written = store.upsert(session, resource, message_id=row.id, now=now)
                session.add(
                    MessageResource(
                        message_id=row.id,
                        resource_type=written.resource_type,
                        resource_id=written.id,
                        version_id=written.version_id,
                    )
                )
            row.unmapped = result.unmapped
            row.state = "processed"
            row.error_code = None
            row.error_text = None
            row.processed_at = now
    except Exception as exc:
        return _failure(row, exc)
    return Outcome(row.id, row.state)


def _failure(row: InboundMessage, exc: Exception) -> Outcome:
    """The pipeline boundary (called from an ``except``): every error is kept as data, never lost."""
    if isinstance(exc, HubError):
        return _fail(row, exc.code, exc.message)
    if isinstance(exc, hl7.HeaderError):
        return _fail(row, "unreadable-header", exc.text)
    log.exception("message %s failed unexpectedly", row.id)
    return _fail(row, "internal-error", f"{type(exc).__name__}: {exc}")


def _fail(row: InboundMessage, code: str, text_: str) -> Outcome:
    row.state = "failed"
    row.error_code = code
    row.error_text = text_[:4000]
    row.processed_at = datetime.now(UTC)
    return Outcome(row.id, "failed", code)
