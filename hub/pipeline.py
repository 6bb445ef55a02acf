"""process_batch(session, ids): the one orchestration of a stored message into FHIR resources.

Parse → map → resolve identities → upsert resources (+ version and index rows) + Provenance → state
``processed``; all in the caller's transaction, one savepoint per message so a failing message becomes
data (``failed`` with an error code) without undoing its neighbours, and a message that would move a
stored resource to another patient is ``held`` (``patient-conflict``) with none of its writes applied. Messages of one patient are applied
in arrival order: before a message is processed, every earlier ``received`` message with the same
patient key is processed first, so the order holds whatever the number of workers and whichever task
arrives first. On PostgreSQL a transaction first takes the advisory locks of its batch's patients (and of
its messages without a patient), in one global order so two workers never deadlock, and only then reads
the messages' state, so a message another worker processed meanwhile is not applied again; SQLite
serialises all writers anyway.
"""

from __future__ import annotations

import dataclasses
import logging
import traceback
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, delete, select, text
from sqlalchemy.orm import Session

from hub import hl7
from hub.config import get_settings
from hub.db import is_transient
from hub.errors import HubError
from hub.fhir.validate import validate_resources
from hub.mapping import MappingResult, SenderContext, map_message
from hub.mpi.service import resolve_identities, settings_for
from hub.store import bulk, deferred
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


def premap(session: Session, ids: Iterable[int]) -> dict[int, MappingResult]:
    """Parse, map and validate the ``received`` messages among ``ids``, reading only: a worker does this
    before it takes its write turn (on SQLite the one writer's lock, which the intake's next commit waits
    for), and hands the results to :func:`process_batch`. A message that fails here is left out; the
    batch maps it again and records the failure."""
    rows = session.scalars(
        select(InboundMessage).where(InboundMessage.id.in_(sorted(set(ids))), InboundMessage.state == PENDING)
    ).all()
    out: dict[int, MappingResult] = {}
    for row in rows:
        try:
            out[row.id] = _map(session, row)
        except Exception:
            continue
    return out


def process_batch(
    session: Session,
    ids: Iterable[int],
    *,
    force: bool = False,
    retrying: bool = False,
    mapped: dict[int, MappingResult] | None = None,
    yield_when: Callable[[], bool] | None = None,
    accept_patient_change: bool = False,
) -> list[Outcome]:
    """Process messages by id. Without ``force`` only ``received`` ones are processed (a message taken
    twice, by a redelivered task or the sweeper, is processed once); with ``force`` (replay) failed,
    held and processed ones are processed again. Earlier ``received`` messages of the same patients
    are processed first, in arrival order. With ``retrying`` (the caller runs the whole transaction
    again on a transient error) a deadlock or a concurrent insert of the same row is raised instead of
    failing the message. ``mapped`` holds results of :func:`premap`; each is used once (taken out), so a
    retried transaction maps again rather than reuse dicts the identity step changed. ``yield_when`` is
    asked after each message: once it says yes the batch ends there (its later messages stay
    ``received``, for the caller's next transaction), so a waiting intake waits for one message, not a
    whole batch. ``accept_patient_change``: an analyst released these messages, so a resource they
    name for another patient than the one it is stored for moves to theirs; without it such a message is
    ``held`` (``patient-conflict``), none of its writes applied."""
    wanted = sorted(set(ids))
    if not wanted:
        return []
    states = (PENDING, *REPLAYABLE) if force else (PENDING,)
    heads = session.execute(
        select(InboundMessage.id, InboundMessage.facility, InboundMessage.patient_key).where(
            InboundMessage.id.in_(wanted), InboundMessage.state.in_(states)
        )
    ).all()
    if not heads:
        return []
    patients = {(h.facility, h.patient_key) for h in heads if h.patient_key}
    _lock_patients(session, patients, [h.id for h in heads if not h.patient_key])
    # Load (again) after the locks: another worker may have processed some of these meanwhile.
    targets = session.scalars(
        select(InboundMessage)
        .where(InboundMessage.id.in_([h.id for h in heads]), InboundMessage.state.in_(states))
        .execution_options(populate_existing=True)
    ).all()
    todo = {r.id: r for r in targets}
    if patients and todo:
        for earlier in _earlier_pending(session, patients, max(todo)):
            todo.setdefault(earlier.id, earlier)
    mapped = mapped if mapped is not None else {}
    done: list[_Done] = []
    with deferred.holding(session) as held:  # versions, links, index rows: one INSERT per table
        for i in sorted(todo):
            accept = accept_patient_change and i in wanted
            done.append(_process_one(session, todo[i], retrying, mapped.pop(i, None), held, accept))
            if yield_when is not None and len(done) < len(todo) and yield_when():
                break
    _record_outcomes(session, [todo[d.outcome.message_id] for d in done], done)
    return [d.outcome for d in done]


_LOCK_ALL = text(
    "SELECT count(pg_advisory_xact_lock(k)) FROM"
    " (SELECT k FROM unnest(CAST(:ks AS bigint[])) WITH ORDINALITY AS u(k, n) ORDER BY n) AS ordered"
)


def _lock_patients(session: Session, patients: set[tuple[str, str]], keyless: list[int]) -> None:
    """Serialise workers per patient on PostgreSQL (transaction-scoped advisory locks, taken in one
    global order so two workers never deadlock); a message without a patient key is locked by its id, so
    two workers given it at once do not both apply it. SQLite serialises all writers anyway."""
    if not (patients or keyless) or session.get_bind().dialect.name != "postgresql":
        return
    keys = sorted(
        {zlib.crc32(f"{f}|{k}".encode()) for f, k in patients}
        | {zlib.crc32(f"message|{i}".encode()) for i in keyless}
    )
    # One round trip, not one per patient; the locks are taken in the (sorted) array's order.
    session.execute(_LOCK_ALL, {"ks": keys})


def _earlier_pending(session: Session, patients: set[tuple[str, str]], below: int) -> list[InboundMessage]:
    keys = sorted({k for _, k in patients})
    facilities = {f for f, _ in patients}
    rows = session.scalars(
        select(InboundMessage)
        .where(
            InboundMessage.patient_key.in_(keys),
            InboundMessage.state == PENDING,
            InboundMessage.id < below,
        )
        .order_by(InboundMessage.id)
        .execution_options(populate_existing=True)
    ).all()
    return [r for r in rows if r.facility in facilities and (r.facility, r.patient_key) in patients]


def _sender_context(session: Session, row: InboundMessage) -> SenderContext:
    known: dict[int | None, SenderContext] = session.info.setdefault("hub.sender_contexts", {})
    ctx = known.get(row.sender_id)
    if ctx is None:
        sender = session.get(Sender, row.sender_id) if row.sender_id is not None else None
        ctx = (
            SenderContext(facility=row.facility)
            if sender is None
            else SenderContext(
                facility=sender.facility,
                overlay=sender.overlay,
                time_zone=sender.time_zone,
                charset=sender.charset,
            )
        )
        if sender is not None:
            known[row.sender_id] = ctx
    return dataclasses.replace(ctx, message_id=row.id)


@dataclass(frozen=True, slots=True)
class _Done:
    """A message's outcome and what its ``inbound_message`` row records of it (written for the whole
    batch at its end: one statement, not an ORM flush per message)."""

    outcome: Outcome
    processed_at: datetime
    error_text: str | None = None
    unmapped: list[dict[str, Any]] | None = None  # a failure keeps the report of the last success
    conflict: dict[str, Any] | None = None  # held for patient-conflict: the resource and both patients


def _event_instant(resources: list[dict[str, Any]]) -> str | None:
    """The message's event time in UTC (its Provenance: EVN's occurred time, else MSH-7), as
    ``YYYYMMDDHHMMSSffffff``: the order in which shared resources merge its contribution."""
    for resource in reversed(resources):  # the Provenance is made last
        if resource.get("resourceType") != "Provenance":
            continue
        value = resource.get("occurredDateTime") or resource.get("recorded")
        if not isinstance(value, str):
            return None
        try:
            instant = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        if instant.tzinfo is None:
            instant = instant.replace(tzinfo=UTC)
        return instant.astimezone(UTC).strftime("%Y%m%d%H%M%S%f")
    return None


def _map(session: Session, row: InboundMessage) -> MappingResult:
    """Parse, map and validate: nothing written, so a message failing here needs no savepoint to undo."""
    header = hl7.peek_header(row.raw)
    ctx = _sender_context(session, row)
    # Nothing replaced silently: the sender's charset for bytes that are not UTF-8 (no MSH-18), and a
    # warning in the report for bytes invalid in the charset in force or control characters removed.
    decoded = hl7.decode_checked(row.raw, header, ctx.charset)
    message = hl7.parse(decoded.text)
    result = map_message(message, ctx)
    for code, text_ in decoded.warnings:
        result.warnings.append(f"{code}: {text_}")
        result.unmapped.append(
            {
                "segment": "MSH",
                "index": 0,
                "field": 18,
                "name": code,
                "value": "",
                "note": text_,
                "warning": code,
            }
        )
    # HUB_VALIDATE: the R4B models check all, a sample, or none of the mapped messages.
    validate_resources(result.resources, get_settings().validate_mode, key=row.id)
    return result


def _process_one(
    session: Session,
    row: InboundMessage,
    retrying: bool,
    result: MappingResult | None = None,
    held: deferred.Held | None = None,
    accept_patient_change: bool = False,
) -> _Done:
    try:
        ctx = _sender_context(session, row)
        if result is None:
            result = _map(session, row)
    except Exception as exc:
        return _failure(row, exc)
    if held is not None:
        held.mark()
    try:
        with session.begin_nested():
            hub = get_settings()
            mpi = settings_for(hub.mpi_match_threshold, hub.mpi_possible_threshold, hub.mpi_twin_gate)
            # The golden Patients the identity step rebuilt are stored with the message's resources (one
            # store write, not one more per golden record), ahead of them as before; they are not among
            # what the message itself produced.
            goldens: list[dict[str, Any]] = []
            resolve_identities(session, result, ctx, mpi, goldens=goldens)
            if row.attempts > 0:  # processed before (a replay): what it produced then is replaced
                session.execute(delete(MessageResource).where(MessageResource.message_id == row.id))
            now = datetime.now(UTC)
            session.info[store.MESSAGE_FACILITY] = ctx.facility
            try:
                written = store.upsert_many(
                    session,
                    goldens + result.resources,
                    message_id=row.id,
                    now=now,
                    order=_event_instant(result.resources),
                    accept_patient_change=accept_patient_change,
                    cancels=result.cancels,
                    replaces=result.replaces,
                )
            finally:
                session.info.pop(store.MESSAGE_FACILITY, None)
            _record_written(session, row.id, written[len(goldens) :])
    except Exception as exc:
        if held is not None:
            held.undo()  # its savepoint was rolled back, and with it what it wrote of the held rows
        if isinstance(exc, store.PatientConflict):
            # Nothing of it is applied (the savepoint took the MPI's writes back too): an analyst
            # releases it (POST /hl7/messages/{id}/release, hub replay --accept-patient-change).
            log.warning("message %s held: patient-conflict on %s", row.id, exc.conflicts[0]["resource"])
            return _Done(
                Outcome(row.id, "held", exc.code),
                datetime.now(UTC),
                error_text=exc.message[:4000],
                conflict={**exc.conflicts[0], "resources": [c["resource"] for c in exc.conflicts]},
            )
        if retrying and is_transient(exc):
            # A deadlock with another worker (or its insert of the same new row): this transaction may
            # hold what the other one waits for, so only rolling back all of it gets both through.
            raise
        return _failure(row, exc)
    if held is not None:
        held.done()
    return _Done(Outcome(row.id, "processed"), now, unmapped=result.unmapped)


_PROCESSED_COLUMNS = ("state", "unmapped", "processed_at", "id")
_PROCESSED = (
    "UPDATE inbound_message SET attempts = attempts + 1, state = ?, error_code = NULL, error_text = NULL,"
    " patient_conflict = NULL, unmapped = ?, processed_at = ? WHERE id = ?"
)
_FAILED_COLUMNS = ("state", "error_code", "error_text", "patient_conflict", "processed_at", "id")
_FAILED = (
    "UPDATE inbound_message SET attempts = attempts + 1, state = ?, error_code = ?, error_text = ?,"
    " patient_conflict = ?, processed_at = ? WHERE id = ?"
)


def _record_outcomes(session: Session, rows: list[InboundMessage], done: list[_Done]) -> None:
    """Every processed message's state, error and attempt count, in two statements for the batch. The
    entities loaded for the batch are expired: read again, they show what was written."""
    table = InboundMessage.__table__
    connection = session.connection()
    processed = [d for d in done if d.outcome.state == "processed"]
    failed = [d for d in done if d.outcome.state != "processed"]
    bulk.execute_many(
        connection,
        table,  # type: ignore[arg-type]
        _PROCESSED,
        _PROCESSED_COLUMNS,
        [(d.outcome.state, d.unmapped, d.processed_at, d.outcome.message_id) for d in processed],
    )
    bulk.execute_many(
        connection,
        table,  # type: ignore[arg-type]
        _FAILED,
        _FAILED_COLUMNS,
        [
            (
                d.outcome.state,
                d.outcome.error_code,
                d.error_text,
                d.conflict,
                d.processed_at,
                d.outcome.message_id,
            )
            for d in failed
        ],
    )
    for row in rows:
        session.expire(row)


_MESSAGE_RESOURCE_COLUMNS = ("message_id", "resource_type", "resource_id", "version_id")


def _record_written(session: Session, message_id: int, written: list[store.Written]) -> None:
    """The message → resource version rows of the operator's view (one driver-level INSERT)."""
    rows = {(message_id, w.resource_type, w.id): w.version_id for w in written}  # last version of a repeat
    table: Table = MessageResource.__table__  # type: ignore[assignment]
    links = [(*key, version) for key, version in rows.items()]
    held = deferred.held(session)
    if held is not None:  # a pipeline batch: written with its other messages' links at its end
        held.hold(table, _MESSAGE_RESOURCE_COLUMNS, links)
    else:
        bulk.insert_rows(session.connection(), table, _MESSAGE_RESOURCE_COLUMNS, links)


def _failure(row: InboundMessage, exc: Exception) -> _Done:
    """The pipeline boundary (called from an ``except``): every error is kept as data, never lost."""
    if isinstance(exc, HubError):
        return _fail(row, exc.code, exc.message)
    if isinstance(exc, hl7.HeaderError):
        return _fail(row, "unreadable-header", exc.text)
    # Neither the exception's text (a database error's carries the SQL and its parameters: patient data)
    # nor its traceback's last line: where it happened, and what kind of error it was.
    log.error(
        "message %s failed unexpectedly: %s\n%s",
        row.id,
        type(exc).__name__,
        "".join(traceback.format_tb(exc.__traceback__)).rstrip(),
    )
    return _fail(row, "internal-error", f"{type(exc).__name__} (details in the hub's log)")


def _fail(row: InboundMessage, code: str, text_: str) -> _Done:
    # One line per failed message: id, sender, type and code (never values from the message).
    log.warning("message %s from %s (%s) failed: %s", row.id, row.facility, row.message_type, code)
    return _Done(Outcome(row.id, "failed", code), datetime.now(UTC), error_text=text_[:4000])
