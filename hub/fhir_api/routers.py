"""The FHIR R4 REST routes under ``/fhir``: metadata, read, vread, history, search (GET and POST
``_search``), ``Patient/{id}/$everything``, and the sender's writes (create, update, conditional
create/update, delete, transaction/batch). Reads answer with the stored bytes; every route but
``/fhir/metadata`` needs a bearer token (``hub.auth.require_principal``)."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from hub.audit import note_results
from hub.auth import Principal, require_principal
from hub.errors import BadRequest, Forbidden, NotAcceptable, PayloadTooLarge
from hub.fhir_api import access as patient_access
from hub.fhir_api import bundle as bundles
from hub.fhir_api import search as fhir_search
from hub.fhir_api import writes
from hub.fhir_api.capability import capability_statement
from hub.fhir_api.outcome import warnings_outcome
from hub.fhir_api.sessions import read_connection, read_scope, read_session, write_session
from hub.limits import TooLarge, read_limited
from hub.store import resources as store
from hub.store.search_params import date_range, params_of

FHIR_JSON = bundles.FHIR_JSON

_JSON_FORMATS = frozenset({"json", "application/json", "application/fhir+json", "application/json+fhir"})


def check_format(request: Request) -> None:
    """``_format`` (and an Accept header that wants only XML): the hub answers JSON only, so anything
    else is 406, never a silent JSON answer."""
    fmt = request.query_params.get("_format")
    if fmt is not None and fmt.split(";")[0].strip().lower() not in _JSON_FORMATS:
        raise NotAcceptable("only JSON is served (_format=json or application/fhir+json)")
    accept = request.headers.get("accept", "").lower()
    if accept and "xml" in accept and "json" not in accept and "*/*" not in accept:
        raise NotAcceptable("only JSON is served (Accept: application/fhir+json)")


public = APIRouter(prefix="/fhir", tags=["fhir"], dependencies=[Depends(check_format)])
router = APIRouter(prefix="/fhir", tags=["fhir"], dependencies=[Depends(check_format)])


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/fhir"


def _fhir(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type=FHIR_JSON, headers=headers)


def _http_date(dt: datetime) -> str:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return format_datetime(dt.astimezone(UTC), usegmt=True)


def _strict(request: Request) -> bool:
    prefer = request.headers.get("prefer", "")
    return any(p.strip() == "handling=strict" for p in prefer.split(";") + prefer.split(","))


def _instant(name: str, raw: str | None, *, upper: bool = False) -> datetime | None:
    if raw is None:
        return None
    rng = date_range(raw)
    if rng is None:
        raise BadRequest(f"{name}: {raw!r} is not a FHIR date")
    return rng[1] if upper else rng[0]


def _count(raw: str | None, default: int) -> int:
    if raw is None:
        return default
    try:
        count = int(raw)
    except ValueError as exc:
        raise BadRequest("_count must be an integer") from exc
    if count < 0:
        raise BadRequest(f"_count must be between 0 and {fhir_search.MAX_COUNT}")
    return max(1, min(count, fhir_search.MAX_COUNT))


def _next_url(base: str, path: str, params: list[tuple[str, str]], cursor: str | None) -> str | None:
    if cursor is None:
        return None
    kept = [(k, v) for k, v in params if k != "_cursor"]
    return f"{base}/{path}?{urlencode([*kept, ('_cursor', cursor)])}"


def _readable(principal: Principal, rows: list[fhir_search.Row]) -> list[fhir_search.Row]:
    """The rows whose type the token may read: the scopes are checked once per type, not per row (a page
    of ``$everything`` holds hundreds of rows of a handful of types)."""
    allowed = {t: principal.allows(t, "r") for t in {row.resource_type for row in rows}}
    if all(allowed.values()):
        return rows
    return [row for row in rows if allowed[row.resource_type]]


async def raw_body(request: Request) -> bytes:
    """The request body, read before the (synchronous, thread-pooled) route runs; one larger than
    ``HUB_MLLP_MAX_FRAME_BYTES`` is 413 and read no further."""
    limit = request.app.state.settings.mllp_max_frame_bytes
    try:
        return await read_limited(request, limit)
    except TooLarge as exc:
        raise PayloadTooLarge(f"the body exceeds the {limit}-byte limit") from exc


# --- capability ---------------------------------------------------------------------------------------


@public.get("/metadata")
async def metadata(request: Request) -> Response:
    return _fhir(capability_statement(_base(request)))


@router.get("/_history")
def history_system(
    request: Request,
    principal: Principal = Depends(require_principal),
    session: Session = Depends(read_session),
) -> Response:
    if principal.require("*", "r") != "all":
        raise Forbidden("the system history needs access to every patient")
    return _history(request, session, "_history", None, None)


# --- search -------------------------------------------------------------------------------------------


def run_search(
    session: Session,
    request: Request,
    principal: Principal,
    resource_type: str,
    params: list[tuple[str, str]],
) -> bytes:
    fhir_search.check_type(resource_type)
    access = principal.require(resource_type, "s")
    query_params = patient_access.restrict_search(session, principal, access, resource_type, params)
    q = fhir_search.parse_query(session, resource_type, query_params, strict=_strict(request))
    page = fhir_search.search(session, q)
    # _include/_revinclude bring only the types the token may read (and under patient access, only the
    # patient's own resources).
    page.included = _readable(principal, page.included)
    if access == "patient":
        page.included = patient_access.filter_rows(session, principal, page.included)
    note_results(request, page.matches, page.included)
    base = _base(request)
    self_url = f"{base}/{resource_type}" + (f"?{urlencode(params)}" if params else "")
    return bundles.searchset(
        base,
        page.matches,
        page.included,
        total=page.total,
        self_url=self_url,
        next_url=_next_url(base, resource_type, params, page.next_cursor),
        outcome=warnings_outcome(page.issues),
        summary=q.summary,
        elements=q.elements,
    )


@router.get("/{resource_type}")
def search_type(
    resource_type: str,
    request: Request,
    principal: Principal = Depends(require_principal),
) -> Response:
    principal.require(resource_type, "s")
    params = list(request.query_params.multi_items())
    with read_scope(request) as session:
        return _fhir(run_search(session, request, principal, resource_type, params))


@router.post("/{resource_type}/_search")
def search_post(
    resource_type: str,
    request: Request,
    body: bytes = Depends(raw_body),
    principal: Principal = Depends(require_principal),
    session: Session = Depends(read_session),
) -> Response:
    principal.require(resource_type, "s")
    ctype = request.headers.get("content-type", "")
    if body and not ctype.startswith("application/x-www-form-urlencoded"):
        raise BadRequest("POST _search takes application/x-www-form-urlencoded parameters")
    params = list(request.query_params.multi_items()) + parse_qsl(body.decode(), keep_blank_values=True)
    return _fhir(run_search(session, request, principal, resource_type, params))


# --- $everything --------------------------------------------------------------------------------------


@router.get("/Patient/{patient_id}/$everything")
def patient_everything(
    patient_id: str,
    request: Request,
    principal: Principal = Depends(require_principal),
) -> Response:
    access = principal.require("Patient", "r")
    qp = request.query_params
    types = [t for raw in qp.getlist("_type") for t in raw.split(",") if t]
    eq = fhir_search.EverythingQuery(
        patient_id=patient_id,
        count=_count(qp.get("_count"), fhir_search.EVERYTHING_DEFAULT_COUNT),
        cursor=fhir_search.decode_cursor(qp["_cursor"]) if "_cursor" in qp else None,
        since=_instant("_since", qp.get("_since")),
        types=types,
        start=_instant("start", qp.get("start")),
        end=_instant("end", qp.get("end"), upper=True),
    )
    with read_scope(request) as session:
        patient_access.check_patient(session, principal, access, patient_id)
        page = fhir_search.everything(session, eq)
    page.matches = _readable(principal, page.matches)
    page.included = _readable(principal, page.included)
    # The compartment is the named patient's (the trail's patient search covers its linked sources): only
    # the rows it points at may hold other patients.
    note_results(request, page.included)
    base = _base(request)
    params = list(qp.multi_items())
    path = f"Patient/{patient_id}/$everything"
    return _fhir(
        bundles.searchset(
            base,
            page.matches,
            page.included,
            total=page.total,
            self_url=f"{base}/{path}" + (f"?{urlencode(params)}" if params else ""),
            next_url=_next_url(base, path, params, page.next_cursor),
        )
    )


# --- history ------------------------------------------------------------------------------------------


def _history(
    request: Request, session: Session, path: str, resource_type: str | None, rid: str | None
) -> Response:
    qp = request.query_params
    entries, cursor = fhir_search.history(
        session,
        resource_type=resource_type,
        rid=rid,
        since=_instant("_since", qp.get("_since")),
        count=_count(qp.get("_count"), fhir_search.DEFAULT_COUNT),
        cursor=fhir_search.decode_cursor(qp["_cursor"]) if "_cursor" in qp else None,
    )
    base = _base(request)
    params = list(qp.multi_items())
    return _fhir(
        bundles.history_bundle(
            base,
            entries,
            self_url=str(request.url),
            next_url=_next_url(base, path, params, cursor),
        )
    )


@router.get("/{resource_type}/_history")
def history_type(
    resource_type: str,
    request: Request,
    principal: Principal = Depends(require_principal),
    session: Session = Depends(read_session),
) -> Response:
    fhir_search.check_type(resource_type)
    if principal.require(resource_type, "r") != "all":
        raise Forbidden(f"the history of every {resource_type} needs access to every patient")
    return _history(request, session, f"{resource_type}/_history", resource_type, None)


@router.get("/{resource_type}/{rid}/_history")
def history_instance(
    resource_type: str,
    rid: str,
    request: Request,
    principal: Principal = Depends(require_principal),
    session: Session = Depends(read_session),
) -> Response:
    fhir_search.check_type(resource_type)
    access = principal.require(resource_type, "r")
    patient_access.check_resource(session, principal, access, resource_type, rid)
    return _history(request, session, f"{resource_type}/{rid}/_history", resource_type, rid)


@router.get("/{resource_type}/{rid}/_history/{version_id}")
def vread(
    resource_type: str,
    rid: str,
    version_id: str,
    principal: Principal = Depends(require_principal),
    session: Session = Depends(read_session),
) -> Response:
    fhir_search.check_type(resource_type)
    access = principal.require(resource_type, "r")
    patient_access.check_resource(session, principal, access, resource_type, rid)
    if not (version_id.isascii() and version_id.isdigit()):
        raise BadRequest(f"{version_id!r} is not a version id")
    entry = fhir_search.vread(session, resource_type, rid, int(version_id))
    return _fhir(
        entry.content,
        headers={"ETag": f'W/"{entry.version_id}"', "Last-Modified": _http_date(entry.last_updated)},
    )


@router.get("/Patient/{patient_id}/{resource_type}")
def search_compartment(
    patient_id: str,
    resource_type: str,
    request: Request,
    principal: Principal = Depends(require_principal),
) -> Response:
    """Patient compartment search (``Patient/{id}/Observation?code=…``): the type search with
    ``patient={id}``, so a golden Patient covers its linked sources here too."""
    fhir_search.check_type(resource_type)
    principal.require(resource_type, "s")
    if "patient" not in params_of(resource_type) or params_of(resource_type)["patient"].type != "reference":
        raise BadRequest(f"{resource_type} has no patient search parameter (not in the Patient compartment)")
    params = [("patient", f"Patient/{patient_id}"), *request.query_params.multi_items()]
    with read_scope(request) as session:
        patient_access.check_patient(session, principal, principal.require(resource_type, "s"), patient_id)
        return _fhir(run_search(session, request, principal, resource_type, params))


# --- read ---------------------------------------------------------------------------------------------


def _not_modified(request: Request, version_id: int, last_updated: datetime) -> bool:
    inm = request.headers.get("if-none-match")
    if inm is not None:
        tags = {t.strip().removeprefix("W/").strip('"') for t in inm.split(",")}
        return str(version_id) in tags or "*" in tags
    ims = request.headers.get("if-modified-since")
    if ims is not None:
        try:
            since = parsedate_to_datetime(ims)
        except (TypeError, ValueError):
            return False
        lu = last_updated if last_updated.tzinfo else last_updated.replace(tzinfo=UTC)
        return lu.replace(microsecond=0) <= since
    return False


@router.get("/{resource_type}/{rid}")
def read(
    resource_type: str,
    rid: str,
    request: Request,
    principal: Principal = Depends(require_principal),
) -> Response:
    fhir_search.check_type(resource_type)
    access = principal.require(resource_type, "r")
    with read_connection(request) as conn:
        if access == "patient":
            with Session(bind=conn) as session:
                patient_access.check_resource(session, principal, access, resource_type, rid)
        content, version_id, last_updated = store.read_bytes(conn, resource_type, rid)
    headers = {"ETag": f'W/"{version_id}"', "Last-Modified": _http_date(last_updated)}
    if _not_modified(request, version_id, last_updated):
        return Response(status_code=304, headers=headers)
    return _fhir(content, headers=headers)


# --- writes -------------------------------------------------------------------------------------------


def _json_body(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not JSON ({exc})") from exc


def _written(request: Request, result: writes.WriteResult) -> Response:
    base = _base(request)
    headers = {
        "ETag": f'W/"{result.version_id}"',
        "Last-Modified": _http_date(result.last_updated),
        "Location": f"{base}/{result.resource_type}/{result.id}/_history/{result.version_id}",
    }
    if "return=minimal" in request.headers.get("prefer", ""):
        return Response(status_code=result.status, headers=headers)
    return _fhir(result.content, result.status, headers)


def _read_entry(request: Request, principal: Principal) -> Any:
    def read_entry(session: Session, url: str) -> tuple[int, bytes]:
        path, _, query = url.partition("?")
        parts = [p for p in path.split("/") if p]
        if len(parts) == 2:
            access = principal.require(parts[0], "r")
            patient_access.check_resource(session, principal, access, parts[0], parts[1])
            return 200, store.read_bytes(session, parts[0], parts[1])[0]
        return 200, run_search(session, request, principal, parts[0], parse_qsl(query))

    return read_entry


@router.post("")
def transaction(
    request: Request,
    raw: bytes = Depends(raw_body),
    principal: Principal = Depends(require_principal),
    session: Session = Depends(write_session, scope="function"),
) -> Response:
    body = _json_body(raw)
    out = writes.process_bundle(
        session, principal, body, base=_base(request), read_entry=_read_entry(request, principal)
    )
    return _fhir(out)


@router.post("/{resource_type}")
def create(
    resource_type: str,
    request: Request,
    raw: bytes = Depends(raw_body),
    principal: Principal = Depends(require_principal),
    session: Session = Depends(write_session, scope="function"),
) -> Response:
    fhir_search.check_type(resource_type)
    principal.require(resource_type, "c")
    body = _json_body(raw)
    targets: list[str] = []
    now = datetime.now(UTC)
    result = writes.create(
        session,
        resource_type,
        body,
        if_none_exist=request.headers.get("if-none-exist"),
        now=now,
        targets=targets,
        facility=writes.identity_facility(principal),
        writer=principal,
    )
    writes.record_provenance(session, principal, targets, now)
    return _written(request, result)


@router.put("/{resource_type}/{rid}")
def update(
    resource_type: str,
    rid: str,
    request: Request,
    raw: bytes = Depends(raw_body),
    principal: Principal = Depends(require_principal),
    session: Session = Depends(write_session, scope="function"),
) -> Response:
    fhir_search.check_type(resource_type)
    principal.require(resource_type, "u")
    body = _json_body(raw)
    targets: list[str] = []
    now = datetime.now(UTC)
    result = writes.update(
        session,
        resource_type,
        rid,
        body,
        if_match=request.headers.get("if-match"),
        now=now,
        targets=targets,
        facility=writes.identity_facility(principal),
        writer=principal,
    )
    writes.record_provenance(session, principal, targets, now)
    return _written(request, result)


@router.put("/{resource_type}")
def conditional_update(
    resource_type: str,
    request: Request,
    raw: bytes = Depends(raw_body),
    principal: Principal = Depends(require_principal),
    session: Session = Depends(write_session, scope="function"),
) -> Response:
    fhir_search.check_type(resource_type)
    principal.require(resource_type, "u")
    criteria = list(request.query_params.multi_items())
    if not criteria:
        raise BadRequest("a conditional update needs search criteria")
    body = _json_body(raw)
    targets: list[str] = []
    now = datetime.now(UTC)
    result = writes.conditional_update(
        session,
        resource_type,
        criteria,
        body,
        now=now,
        targets=targets,
        facility=writes.identity_facility(principal),
        writer=principal,
    )
    writes.record_provenance(session, principal, targets, now)
    return _written(request, result)


@router.delete("/{resource_type}/{rid}")
def delete(
    resource_type: str,
    rid: str,
    principal: Principal = Depends(require_principal),
    session: Session = Depends(write_session, scope="function"),
) -> Response:
    fhir_search.check_type(resource_type)
    principal.require(resource_type, "d")
    writes.delete(session, resource_type, rid, principal)
    return Response(status_code=204)
