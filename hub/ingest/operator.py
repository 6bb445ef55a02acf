"""The operator's view of intake: list and inspect stored messages (``/hl7/messages``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.auth import require_role
from hub.errors import BadRequest, NotFound
from hub.fhir_api.sessions import read_session
from hub.store.models import InboundMessage, MessageResource

router = APIRouter(prefix="/hl7/messages", tags=["operator"], dependencies=[Depends(require_role("admin"))])

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


@router.get("/{message_id}", summary="One message: raw text, ACK, state, error, resources, unmapped report")
def get_message(message_id: int, session: Annotated[Session, Depends(read_session)]) -> Response:
    m = session.get(InboundMessage, message_id)
    if m is None:
        raise NotFound(f"message {message_id} is not known")
    produced = session.scalars(select(MessageResource).where(MessageResource.message_id == message_id)).all()
    body = _summary(m)
    body.update(
        {
            "raw": m.raw.decode("utf-8", errors="replace"),
            "ack": m.ack,
            "resources": [
                {"reference": f"{r.resource_type}/{r.resource_id}", "version_id": r.version_id}
                for r in produced
            ],
            "unmapped": m.unmapped or [],
        }
    )
    return _json(body)
