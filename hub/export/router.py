"""The FHIR Bulk Data Access (v2) routes: kick-off (``/fhir/$export``, ``/fhir/Patient/$export``,
``/fhir/Group/{id}/$export``), the job's status URL (poll, ``DELETE`` to cancel) and its files.

Who gets what: an ``admin`` gets the identified export of the types its scopes may read; the ``ministry``
role, and any token carrying the scope ``export/deidentified``, always gets the de-identified one
(``hub.export.deid``); every other role is refused (403). A job's status and files are for the token
subject that started it (and admins); anyone else gets 404.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response

from hub.auth import Principal, require_principal
from hub.errors import BadRequest, Forbidden, HubError, NotFound
from hub.export import jobs
from hub.fhir.outcome import operation_outcome
from hub.fhir_api.sessions import write_session
from hub.store import resources as store
from hub.store.models import ExportJob, MpiSource
from hub.store.search_params import date_range

router = APIRouter(prefix="/fhir", tags=["bulk-data"])

FHIR_JSON = "application/fhir+json"
NDJSON = "application/fhir+ndjson"
OUTPUT_FORMATS = ("application/fhir+ndjson", "application/ndjson", "ndjson")
KNOWN_PARAMS = ("_outputFormat", "_since", "_type", "_typeFilter", "_elements")
DEID_SCOPE = "export/deidentified"


class TooManyRequests(HubError):
    code = "throttled"
    http_status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


def _deidentified(principal: Principal) -> bool:
    """Whether this token's exports are de-identified; Forbidden when it may not export at all."""
    if not principal.has("export"):
        raise Forbidden(f"role {principal.role} may not run a bulk export (needs admin or ministry)")
    # The ministry's role never reads identified data (hub.auth's ceilings): its exports are de-identified.
    return principal.role != "admin" or DEID_SCOPE in principal.scopes


def _lenient(request: Request) -> bool:
    return "handling=lenient" in request.headers.get("prefer", "").replace(" ", "")


def _kickoff(
    request: Request, principal: Principal, session: Any, level: str, group_id: str | None
) -> Response:
    deidentified = _deidentified(principal)
    accept = request.headers.get("accept", "")
    if accept and not any(a in accept for a in (FHIR_JSON, "application/json", "*/*")):
        raise BadRequest(f"Accept must be {FHIR_JSON} for a bulk export kick-off")
    if "respond-async" not in request.headers.get("prefer", ""):
        raise BadRequest("a bulk export needs the header Prefer: respond-async")
    warnings: list[str] = []
    params = list(parse_qsl(request.url.query, keep_blank_values=True))
    for name, _value in params:
        if name not in KNOWN_PARAMS:
            msg = f"the export parameter {name} is not supported"
            if not _lenient(request):
                raise BadRequest(msg, code="not-supported")
            warnings.append(msg + " and was ignored")
    values: dict[str, list[str]] = {}
    for name, value in params:
        values.setdefault(name, []).append(value)
    fmt = (values.get("_outputFormat") or [NDJSON])[-1]
    if fmt not in OUTPUT_FORMATS:
        raise BadRequest(f"_outputFormat {fmt!r} is not supported (only {NDJSON})")
    types = _split(values.get("_type"))
    for t in types:
        if not t[:1].isupper() or not t.isalpha():
            raise BadRequest(f"_type: {t!r} is not a resource type")
        if not deidentified and not principal.allows(t, "r"):
            raise Forbidden(f"role {principal.role} may not read {t}")
    since: datetime | None = None
    if values.get("_since"):
        rng = date_range(values["_since"][-1])
        if rng is None:
            raise BadRequest(f"_since: {values['_since'][-1]!r} is not a FHIR instant")
        since = rng[0]
    filters = [f for raw in values.get("_typeFilter", []) for f in _split([raw])]
    for f in filters:
        rtype, sep, _query = f.partition("?")
        if not sep or not rtype[:1].isupper():
            raise BadRequest(f"_typeFilter: {f!r} is not of the form Type?search")
        if types and rtype not in types:
            raise BadRequest(f"_typeFilter: {rtype} is not one of _type")
    patients: list[str] = []
    if level == "group":
        assert group_id is not None
        patients = _group_members(session, group_id)
    req = jobs.ExportRequest(
        level=level,
        owner=principal.subject,
        owner_role=principal.role,
        deidentified=deidentified,
        request_url=str(request.url),
        group_id=group_id,
        types=types,
        since=since,
        type_filters=filters,
        elements=_split(values.get("_elements")),
        patients=patients,
    )
    job = jobs.create_job(session, req)
    status_url = f"{str(request.base_url).rstrip('/')}/fhir/$export-status/{job.id}"
    body = None
    if warnings:
        issues = [{"severity": "warning", "code": "not-supported", "diagnostics": w} for w in warnings]
        body = orjson.dumps({"resourceType": "OperationOutcome", "issue": issues})
    return Response(body, status_code=202, media_type=FHIR_JSON, headers={"Content-Location": status_url})


def _split(raw: list[str] | None) -> list[str]:
    return [v.strip() for r in raw or [] for v in r.split(",") if v.strip()]


def _group_members(session: Any, group_id: str) -> list[str]:
    """The Patients of a Group: its ``member`` entities, or, for a Group defined by a characteristic,
    the golden Patients having it (``province`` / ``regency`` region code of the home address, or
    ``facility``: registered at a sending facility). Golden Patients bring their source records."""
    from hub.fhir_api.search import expand_patients

    try:
        group = store.read(session, "Group", group_id)
    except HubError as exc:
        raise NotFound(f"Group/{group_id} is not known") from exc
    ids: list[str] = []
    for member in group.get("member") or []:
        if member.get("inactive"):
            continue
        ref = (member.get("entity") or {}).get("reference", "")
        if ref.startswith("Patient/"):
            ids.append(ref[8:])
    for ch in group.get("characteristic") or []:
        ids.extend(_having(session, ch))
    return expand_patients(session, ids) if ids else []


def _having(session: Any, characteristic: dict[str, Any]) -> list[str]:
    from sqlalchemy import select

    from hub.store.models import Resource

    code = characteristic.get("code") or {}
    kind = (code.get("text") or next((c.get("code") for c in code.get("coding") or []), "") or "").lower()
    value_cc = characteristic.get("valueCodeableConcept") or {}
    value = value_cc.get("text") or next((c.get("code") for c in value_cc.get("coding") or []), "")
    if not value:
        raise BadRequest("a Group characteristic needs a valueCodeableConcept")
    if kind == "facility":
        return [str(s) for s in session.scalars(select(MpiSource.id).where(MpiSource.facility == value))]
    if kind not in ("province", "regency", "district"):
        raise BadRequest(
            f"a Group characteristic {kind!r} is not supported (province, regency, district, facility)"
        )
    out: list[str] = []
    rows = session.execute(
        select(Resource.id, Resource.content).where(
            Resource.resource_type == "Patient", Resource.deleted.is_(False)
        )
    )
    for rid, content in rows:
        if value.encode() in content and _in_region(orjson.loads(content), value):
            out.append(str(rid))
    return out


def _in_region(patient: dict[str, Any], code: str) -> bool:
    for address in patient.get("address") or []:
        for ext in address.get("extension") or []:
            for sub in [ext, *(ext.get("extension") or [])]:
                v = sub.get("valueCode") or sub.get("valueString") or ""
                if isinstance(v, str) and v.replace(".", "").startswith(code.replace(".", "")):
                    return True
        for key in ("state", "city", "district"):
            if str(address.get(key, "")).replace(".", "") == code.replace(".", ""):
                return True
    return False


@router.get("/$export")
def export_system(
    request: Request, principal: Principal = Depends(require_principal), session: Any = Depends(write_session)
) -> Response:
    return _kickoff(request, principal, session, "system", None)


@router.get("/Patient/$export")
def export_patients(
    request: Request, principal: Principal = Depends(require_principal), session: Any = Depends(write_session)
) -> Response:
    return _kickoff(request, principal, session, "patient", None)


@router.get("/Group/{group_id}/$export")
def export_group(
    group_id: str,
    request: Request,
    principal: Principal = Depends(require_principal),
    session: Any = Depends(write_session),
) -> Response:
    return _kickoff(request, principal, session, "group", group_id)


def _job(session: Any, principal: Principal, job_id: str) -> ExportJob:
    job: ExportJob | None = session.get(ExportJob, job_id) if len(job_id) <= 36 else None
    if (
        job is None
        or job.state == "cancelled"
        or (principal.subject != job.owner and principal.role != "admin")
    ):
        raise NotFound(f"no export job {job_id}")
    return job


def _http_date(dt: datetime) -> str:
    return format_datetime((jobs._aware(dt) or jobs.now()).astimezone(UTC), usegmt=True)


@router.get("/$export-status/{job_id}")
def export_status(
    job_id: str,
    request: Request,
    principal: Principal = Depends(require_principal),
    session: Any = Depends(write_session),
) -> Response:
    settings = request.app.state.settings
    job = _job(session, principal, job_id)
    now = jobs.now()
    last = jobs._aware(job.last_polled_at)
    retry = str(settings.export_retry_after_s)
    if (
        job.state in ("queued", "running")
        and last is not None
        and now - last < timedelta(seconds=settings.export_min_poll_s)
    ):
        raise TooManyRequests("polled too often: wait for Retry-After", settings.export_retry_after_s)
    job.last_polled_at = now
    if job.state in ("queued", "running"):
        progress = f"{job.state}: {job.progress}" if job.state == "running" else "queued"
        return Response(status_code=202, headers={"X-Progress": progress[:100], "Retry-After": retry})
    if job.state == "failed":
        body = operation_outcome("fatal", "exception", "the export failed; its error file says why")
        manifest = _manifest(request, job)
        return Response(
            body,
            status_code=500,
            media_type=FHIR_JSON,
            headers={"Link": manifest["error"][0]["url"] if manifest["error"] else ""},
        )
    expires = job.expires_at
    headers = {"Expires": _http_date(expires)} if expires else {}
    return Response(orjson.dumps(_manifest(request, job)), media_type="application/json", headers=headers)


def _manifest(request: Request, job: ExportJob) -> dict[str, Any]:
    base = f"{str(request.base_url).rstrip('/')}/fhir/$export-file/{job.id}/"
    tt = jobs._aware(job.transaction_time)
    return {
        "transactionTime": tt.isoformat() if tt else None,
        "request": job.request_url,
        "requiresAccessToken": True,
        "output": [
            {"type": o["type"], "url": base + o["file"], "count": o["count"]} for o in job.output or []
        ],
        "error": [
            {"type": e["type"], "url": base + e["file"], "count": e["count"]} for e in job.errors or []
        ],
        "extension": {"deidentified": job.deidentified, "profile": "hub-deid" if job.deidentified else None},
    }


@router.delete("/$export-status/{job_id}")
def export_cancel(
    job_id: str,
    request: Request,
    principal: Principal = Depends(require_principal),
    session: Any = Depends(write_session),
) -> Response:
    job = _job(session, principal, job_id)
    job.state = "cancelled"
    job.expires_at = jobs.now()  # the next expiry sweep removes it and whatever files it has
    import shutil

    shutil.rmtree(jobs.job_dir(request.app.state.settings, job.id), ignore_errors=True)
    return Response(
        operation_outcome("information", "informational", f"export {job_id} cancelled"),
        status_code=202,
        media_type=FHIR_JSON,
    )


@router.get("/$export-file/{job_id}/{name}")
def export_file(
    job_id: str,
    name: str,
    request: Request,
    principal: Principal = Depends(require_principal),
    session: Any = Depends(write_session),
) -> Response:
    job = _job(session, principal, job_id)
    files = {o["file"] for o in (job.output or []) + (job.errors or [])}
    if job.state not in ("completed", "failed") or name not in files:
        raise NotFound(f"no file {name} in export {job_id}")
    accept = request.headers.get("accept", "")
    if accept and not any(a in accept for a in ("ndjson", "*/*", "application/json")):
        raise BadRequest(f"the export's files are {NDJSON}")
    path = jobs.job_dir(request.app.state.settings, job.id) / name
    if not path.is_file():
        raise NotFound(f"the file {name} of export {job_id} has expired")
    return FileResponse(path, media_type=NDJSON)
