"""HL7 v2 over HTTP: ``POST /hl7/v2`` with the ER7 message as body; the ACK is the response body
(200 for AA/AE and CA/CE, 400 for AR/CR, 413 with an AR for a body over ``HUB_MLLP_MAX_FRAME_BYTES``, read
no further; 503 when the store cannot commit: nothing was accepted). Every answer, errors too, is an ACK.

A sender registered with a password must authenticate with HTTP Basic (user = its MSH-4 facility);
a wrong or missing password is answered 401 and nothing is stored.
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
from hub.auth_secrets import check_secret
from hub.fhir_api.errors import HL7_MEDIA_TYPE, hl7_error_ack
from hub.ingest.service import Intake, StorageUnavailable
from hub.limits import TooLarge, read_limited
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
    if facility:
        stored = await asyncio.to_thread(_sender_secret, request, facility)
        if stored is not None:
            creds = _basic_credentials(request)
            if creds is None or creds[0] != facility or not check_secret(creds[1], stored):
                return Response(
                    hl7_error_ack(
                        f"sender {facility} must authenticate (HTTP Basic, user = MSH-4)", raw=body
                    ),
                    status_code=401,
                    media_type=HL7_MEDIA_TYPE,
                    headers={"WWW-Authenticate": 'Basic realm="hub HL7 v2"'},
                )
    try:
        accepted = await asyncio.wrap_future(intake.submit(body, "http"))
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
