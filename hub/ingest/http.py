"""HL7 v2 over HTTP: ``POST /hl7/v2`` with the ER7 message as body; the ACK is the response body
(200 for AA/AE and CA/CE, 400 for AR/CR, 413 with an AR for a body over ``HUB_MLLP_MAX_FRAME_BYTES``, read
no further; 503 when the store cannot commit: nothing was accepted). Every answer, errors too, is an ACK.

Every request needs a sender credential: a bearer token of the ``sender`` role (its ``facility`` claim
names the facilities it may send for) or HTTP Basic with a registered sender's password (user = its
MSH-4). A missing or wrong credential is answered 401 and nothing is stored; a message whose MSH-4 is
not one of the credential's facilities is kept as ``rejected`` (``sender-not-authorized``) and answered
AR. Over the intake rate limit (``HUB_RATE_INTAKE_PER_S``) the answer is 429 with ``Retry-After`` and an
AR ACK, and nothing is stored.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from hub import hl7
from hub.auth import bearer, require_principal
from hub.auth_secrets import check_secret
from hub.errors import HubError
from hub.fhir_api.errors import HL7_MEDIA_TYPE, hl7_error_ack
from hub.ingest.service import Intake, StorageUnavailable
from hub.limits import TooLarge, read_limited
from hub.ratelimit import RateLimited, rate_limited_ack
from hub.store.models import Sender

router = APIRouter(tags=["hl7"])

_SECRET_TTL_S = 30.0
_secret_cache: dict[str, tuple[float, str | None]] = {}


def _sender_secret(request: Request, facility: str) -> str | None:
    hit = _secret_cache.get(facility)
    now = time.monotonic()
    if hit is not None and now - hit[0] < _SECRET_TTL_S:
        return hit[1]
    with Session(request.app.state.runtime.read_engine) as session:
        secret = session.scalar(select(Sender.http_secret_hash).where(Sender.facility == facility))
    _secret_cache[facility] = (now, secret)
    return secret


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    auth = request.headers.get("authorization", "")
    if not auth.lower().startswith("basic "):
        return None
    try:
        user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user, password


def _refused(text: str, status: int = 401, raw: bytes | None = None) -> Response:
    """An HL7 sender is answered in HL7: an AR ACK (with MSA/ERR) naming why, whatever the status."""
    return Response(
        hl7_error_ack(text, raw=raw),
        status_code=status,
        media_type=HL7_MEDIA_TYPE,
        headers={"WWW-Authenticate": 'Bearer realm="hub", Basic realm="hub HL7 v2"'}
        if status == 401
        else None,
    )


async def _credential(request: Request, facility: str, raw: bytes) -> frozenset[str] | Response:
    """The facilities the request's credential may send for: a sender's bearer token (its ``facility``
    claim), or HTTP Basic with a registered sender's password (user = the facility). Anything else is
    refused before the message is read further."""
    if bearer(request) is not None:
        try:
            principal = await require_principal(request)
        except HubError as exc:
            return _refused(exc.message, raw=raw)
        if not principal.has("intake"):
            return _refused(f"role {principal.role} may not send messages", 403, raw)
        return frozenset(principal.facilities)
    creds = _basic_credentials(request)
    if creds is None:
        return _refused(
            "HL7 over HTTP needs a sender credential (a bearer token, or HTTP Basic: user = MSH-4)",
            raw=raw,
        )
    request.state.audit_agent = creds[0]
    stored = await asyncio.to_thread(_sender_secret, request, creds[0])
    if stored is None or not check_secret(creds[1], stored):
        return _refused(f"sender {creds[0]} could not be authenticated", raw=raw)
    return frozenset({creds[0]})


@router.post("/hl7/v2", summary="Send one HL7 v2 message (ER7); the response body is its ACK")
async def post_hl7(request: Request) -> Response:
    intake: Intake = request.app.state.runtime.intake
    limit = request.app.state.settings.mllp_max_frame_bytes
    try:
        body = await read_limited(request, limit)
    except TooLarge as exc:  # kept (its first bytes) as a rejected message, as an oversize MLLP frame is
        try:
            refused = await asyncio.wrap_future(intake.submit(exc.head, "http", oversize=exc.size))
        except StorageUnavailable:
            return _unavailable()
        return Response(refused.ack or "", status_code=413, media_type=HL7_MEDIA_TYPE)
    try:
        facility = hl7.peek_header(body).sending_facility
    except hl7.HeaderError:
        facility = ""
    allowed = await _credential(request, facility, body)
    if isinstance(allowed, Response):
        return allowed
    limiter = getattr(request.app.state, "intake_limiter", None)
    if limiter is not None:
        try:
            limiter.check(facility or "-")
        except RateLimited as exc:
            return Response(
                rate_limited_ack(body, exc.retry_after),
                status_code=429,
                media_type=HL7_MEDIA_TYPE,
                headers={"Retry-After": str(exc.retry_after)},
            )
    try:
        accepted = await asyncio.wrap_future(intake.submit(body, "http", allowed=allowed))
    except StorageUnavailable:
        return _unavailable()
    status = 400 if accepted.code in ("AR", "CR") else 200
    return Response(accepted.ack or "", status_code=status, media_type=HL7_MEDIA_TYPE)


def _unavailable() -> Response:
    return Response(
        hl7_error_ack("store unavailable; message not accepted, resend later"),
        status_code=503,
        media_type=HL7_MEDIA_TYPE,
        headers={"Retry-After": "5"},
    )
