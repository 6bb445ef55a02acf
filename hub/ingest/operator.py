"""The operator's view of intake: list and inspect stored messages (``/hl7/messages``), and release a
message held because it would move a resource to another patient (``POST /hl7/messages/{id}/release``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hub import hl7
from hub.auth import require_permission
from hub.errors import BadRequest, Conflict, NotFound
from hub.fhir_api.sessions import read_session, write_session
from hub.store.models import InboundMessage, MessageResource, Sender

router = APIRouter(
    prefix="/hl7/messages", tags=["operator"], dependencies=[Depends(require_permission("admin"))]
)

STATES = ("received", "processed", "failed", "rejected", "held")


def _iso(t: datetime | None) -> str | None:
    """UTC instants with an explicit offset (SQLite hands them back naive)."""
    if t is None:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).isoformat()


def _summary(m: InboundMessage) -> dict[str, Any]:
    return {
        "id": m.id,
        "facility": m.facility,
        "application": m.application,
        "control_id": m.control_id,
        "message_type": m.message_type,
        "message_structure": m.message_structure,
        "version": m.version,
        "transport": m.transport,
        "received_at": _iso(m.received_at),
        "state": m.state,
        "ack_code": m.ack_code,
        "error_code": m.error_code,
        "error_text": m.error_text,
        "duplicate_count": m.duplicate_count,
        "attempts": m.attempts,
        "processed_at": _iso(m.processed_at),
        # held for patient-conflict: {resource, stored_patient, message_patient, resources}
        "patient_conflict": m.patient_conflict,
    }


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


@router.get("", summary="List stored messages, newest first")
def list_messages(
    session: Annotated[Session, Depends(read_session)],
    state: str | None = None,
    sender: str | None = Query(None, description="sending facility (MSH-4)"),
    type: str | None = Query(None, description="message type, e.g. ORU^R01"),
    since: datetime | None = None,
    before_id: int | None = Query(None, description="paging: ids below this one"),
    limit: int = Query(100, ge=1, le=1000),
) -> Response:
    if state is not None and state not in STATES:
        raise BadRequest(f"unknown state {state!r}; one of {', '.join(STATES)}")
    stmt = select(InboundMessage).order_by(InboundMessage.id.desc()).limit(limit)
    if state:
        stmt = stmt.where(InboundMessage.state == state)
    if sender:
        stmt = stmt.where(InboundMessage.facility == sender)
    if type:
        stmt = stmt.where(InboundMessage.message_type == type)
    if since:
        stmt = stmt.where(InboundMessage.received_at >= since)
    if before_id:
        stmt = stmt.where(InboundMessage.id < before_id)
    rows = session.scalars(stmt).all()
    body: dict[str, Any] = {"messages": [_summary(m) for m in rows]}
    if len(rows) == limit:
        body["next_before_id"] = rows[-1].id
    return _json(body)


def _raw_text(session: Session, m: InboundMessage) -> tuple[str, str]:
    """The raw message as the pipeline reads it (MSH-18, else the sender's charset for bytes that are not
    UTF-8), and the codec used; bytes unreadable even so show as U+FFFD here, and stay as received."""
    raw = bytes(m.raw)
    try:
        header = hl7.peek_header(raw)
    except hl7.HeaderError:
        return raw.decode("utf-8", errors="replace"), "utf-8"
    charset = session.scalar(select(Sender.charset).where(Sender.id == m.sender_id)) if m.sender_id else None
    decoded = hl7.decode_checked(raw, header, charset)
    return decoded.text, decoded.codec


@router.get("/stats", summary="Messages by state, sender and type; the age of the oldest 'received'")
def message_stats(session: Annotated[Session, Depends(read_session)]) -> Response:
    m = InboundMessage
    rows = session.execute(
        select(m.state, m.facility, m.message_type, func.count(), func.min(m.received_at))
        .group_by(m.state, m.facility, m.message_type)
        .order_by(m.state, m.facility, m.message_type)
    ).all()
    now = datetime.now(UTC)
    by_state = dict.fromkeys(STATES, 0)
    groups = []
    oldest: datetime | None = None
    for state, facility, message_type, count, first in rows:
        by_state[state] = by_state.get(state, 0) + int(count)
        groups.append(
            {"state": state, "facility": facility, "message_type": message_type, "count": int(count)}
        )
        if state == "received" and first is not None:
            first = first if first.tzinfo else first.replace(tzinfo=UTC)
            oldest = first if oldest is None or first < oldest else oldest
    return _json(
        {
            "total": sum(by_state.values()),
            "by_state": by_state,
            "groups": groups,
            "oldest_received_at": _iso(oldest),
            "oldest_received_age_s": round((now - oldest).total_seconds(), 3) if oldest else None,
        }
    )


@router.get("/{message_id}", summary="One message: raw text, ACK, state, error, resources, unmapped report")
def get_message(message_id: int, session: Annotated[Session, Depends(read_session)]) -> Response:
    m = session.get(InboundMessage, message_id)
    if m is None:
        raise NotFound(f"message {message_id} is not known")
    produced = session.scalars(select(MessageResource).where(MessageResource.message_id == message_id)).all()
    body = _summary(m)
    raw_text, raw_encoding = _raw_text(session, m)
    body.update(
        {
            "raw": raw_text,
            "raw_encoding": raw_encoding,
            "ack": m.ack,
            "resources": [
                {"reference": f"{r.resource_type}/{r.resource_id}", "version_id": r.version_id}
                for r in produced
            ],
            "unmapped": m.unmapped or [],
        }
    )
    return _json(body)


@router.post(
    "/{message_id}/release",
    summary="Apply a message held for patient-conflict: its resources move to the patient it names",
)
def release_message(message_id: int, session: Annotated[Session, Depends(write_session)]) -> Response:
    """An analyst has checked that the message is right about its patient: it is processed again with
    the patient change accepted (the resources it names move to its patient). Only a message held for
    ``patient-conflict`` is released; any other is answered 409."""
    from hub.pipeline import process_batch  # the pipeline imports the mapping engine: only when used

    m = session.get(InboundMessage, message_id)
    if m is None:
        raise NotFound(f"message {message_id} is not known")
    if m.state != "held" or m.error_code != "patient-conflict":
        raise Conflict(
            f"message {message_id} is {m.state}"
            + (f" ({m.error_code})" if m.error_code else "")
            + "; only a message held for patient-conflict is released (replay others with hub replay)"
        )
    conflict = m.patient_conflict
    outcomes = process_batch(session, [message_id], force=True, accept_patient_change=True)
    mine = next((o for o in outcomes if o.message_id == message_id), None)
    session.flush()
    session.refresh(m)
    body = _summary(m)
    body["released"] = conflict
    return _json(body, 200 if mine is not None and mine.state == "processed" else 409)
