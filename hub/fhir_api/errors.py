"""One error format per audience, for every error a route can raise.

- ``/fhir/…``: a FHIR OperationOutcome (``application/fhir+json``);
- ``/hl7/v2``: an HL7 ACK (AR) whose ERR says what was wrong, so an HL7 sender reads it as it reads every
  answer;
- everything else (the operator API ``/hl7/messages``, the MPI API ``/mpi/…``): RFC 9457 problem details
  (``application/problem+json``: ``type``, ``title``, ``status``, ``detail``, plus the hub's ``code``).

Handled here besides :class:`~hub.errors.HubError`: FastAPI's request validation (a 422 ``{"detail"}``
otherwise; here 400), Starlette's HTTP errors (unknown route 404, wrong method 405), and an integer too
large for the database (an id above 2^63 − 1: 404 when it is in the path, since no such row can exist,
400 when it is a query parameter). Error texts name the parameter and the rule, never the value sent.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from sqlalchemy.exc import DataError, StatementError
from starlette.exceptions import HTTPException as StarletteHTTPException

from hub.errors import HubError

PROBLEM_JSON = "application/problem+json"
FHIR_JSON = "application/fhir+json"
HL7_MEDIA_TYPE = "x-application/hl7-v2+er7"
BIGINT_MAX = 2**63 - 1

# HTTP status → FHIR issue type, for errors that carry no hub code of their own.
_STATUS_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    410: "deleted",
    412: "conflict",
    413: "too-costly",
    415: "not-supported",
    422: "processing",
}


def _audience(path: str) -> str:
    if path == "/fhir" or path.startswith(("/fhir/", "/stats")):
        return "fhir"  # the statistics answer as /fhir/Measure/$evaluate-measure does
    if path == "/hl7/v2":
        return "hl7"
    return "problem"


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
) -> Response:
    """The error in the format of the route's audience (see the module's docstring)."""
    audience = _audience(request.url.path)
    if audience == "fhir":
        from hub.fhir.outcome import operation_outcome

        return Response(
            operation_outcome("error", code, message),
            status_code=status,
            media_type=FHIR_JSON,
            headers=headers,
        )
    if audience == "hl7":
        return Response(
            hl7_error_ack(message, _hl7_error_code(status)),
            status_code=status,
            media_type=HL7_MEDIA_TYPE,
            headers=headers,
        )
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": _title(status),
        "status": status,
        "detail": message,
        "code": code,
    }
    return Response(orjson.dumps(body), status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _hl7_error_code(status: int) -> str:
    """HL7 table 0357 for an HTTP error: 207 application internal error unless something fits better."""
    return {400: "100", 401: "207", 403: "207", 413: "207"}.get(status, "207")


def hl7_error_ack(text: str, code: str = "207", raw: bytes | None = None) -> str:
    """An AR ACK for bytes that never reached the intake (refused before reading, or unauthenticated):
    the MSH of ``raw`` when it can be read, a generic one otherwise."""
    from hub import hl7
    from hub.ingest.ack import AckError, ack_code, build_ack
    from hub.ingest.service import _guess_control_id

    header = None
    if raw:
        try:
            header = hl7.peek_header(raw)
        except hl7.HeaderError:
            header = None
    control = header.control_id if header is not None else (_guess_control_id(raw) if raw else "")
    return build_ack(header, ack_code("AR", header), error=AckError(code, text, "MSH"), control_id=control)


def _huge_path_number(request: Request) -> bool:
    return any(
        isinstance(v, str) and v.isascii() and v.isdigit() and int(v) > BIGINT_MAX
        for v in request.path_params.values()
    )


def _bad_value(exc: BaseException) -> str | None:
    """What a value the database cannot hold was, or None for any other error: an integer above 2^63 − 1
    (SQLite raises OverflowError, PostgreSQL a numeric range DataError) or a NUL character (PostgreSQL's
    text refuses it), possibly wrapped by SQLAlchemy. Never the value itself."""
    orig = getattr(exc, "orig", None) if isinstance(exc, StatementError) else exc
    if isinstance(orig, OverflowError):
        return "range"
    if isinstance(exc, DataError):
        text = str(orig)
        if "out of range" in text:
            return "range"
        if "NUL" in text or "0x00" in text or "\\u0000" in text:
            return "nul"
    return None


def install(app: FastAPI) -> None:
    @app.exception_handler(HubError)
    async def _hub_error(request: Request, exc: HubError) -> Response:
        return error_response(request, exc.http_status, exc.code, exc.message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = []
        for err in exc.errors():
            loc = [str(p) for p in err.get("loc", ()) if p not in ("query", "path", "body", "header")]
            where = ".".join(loc) or "request"
            problems.append(f"{where}: {err.get('msg', 'invalid')}")
        return error_response(request, 400, "invalid", "; ".join(problems) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        status = exc.status_code
        detail = exc.detail if isinstance(exc.detail, str) else _title(status)
        if status == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}"
        return error_response(
            request, status, _STATUS_CODES.get(status, "processing"), detail, getattr(exc, "headers", None)
        )

    async def _range(request: Request, exc: Exception) -> Response:
        kind = _bad_value(exc)
        if kind is None:
            raise exc
        if kind == "nul":
            return error_response(request, 400, "invalid", "a parameter or the body holds a NUL character")
        if _huge_path_number(request):
            return error_response(request, 404, "not-found", "no such id (the number is out of range)")
        return error_response(request, 400, "invalid", "a number in the request is out of range")

    for cls in (OverflowError, DataError, StatementError):
        app.add_exception_handler(cls, _range)
