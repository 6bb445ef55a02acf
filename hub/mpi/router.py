"""The MPI's HTTP surface: ``Patient/$match`` (FHIR R4), PIXm ``Patient/$ihe-pix`` and the stewards'
review queue under ``/mpi/review``.

Bodies are plain JSON (orjson); errors are HubErrors, which the application turns into OperationOutcomes.
``get_session`` is a small local dependency (one transaction per request, committed at the boundary); the
application replaces it with its own session dependency and authentication via ``dependency_overrides``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.db import session_scope
from hub.errors import BadRequest, NotFound, PayloadTooLarge
from hub.limits import TooLarge, read_limited
from hub.mpi import service
from hub.mpi.match import features
from hub.store import resources as store
from hub.store.models import MpiBlock, MpiDecision, MpiReview, MpiSource

router = APIRouter()

FHIR_JSON = "application/fhir+json"
MATCH_GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"


def get_session() -> Iterator[Session]:
    with session_scope() as session:
        yield session


def _json(body: Any, status: int = 200, media_type: str = "application/json") -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=media_type)


async def _body(request: Request) -> dict[str, Any]:
    limit = request.app.state.settings.mllp_max_frame_bytes
    try:
        raw = await read_limited(request, limit)
    except TooLarge as exc:
        raise PayloadTooLarge(f"the body exceeds the {limit}-byte limit") from exc
    try:
        body = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body


# ----------------------------------------------------------------------------------------------- $match


@router.post("/fhir/Patient/$match")
async def patient_match(request: Request, session: Session = Depends(get_session)) -> Response:
    """FHIR R4 Patient/$match: a Parameters resource with ``resource`` (a Patient), optional ``count`` and
    ``onlyCertainMatches``; a searchset Bundle of golden Patients with ``search.score`` and the
    ``match-grade`` extension."""
    body = await _body(request)
    if body.get("resourceType") == "Patient":
        patient, count, only_certain = body, 10, False
    elif body.get("resourceType") == "Parameters":
        params = {p.get("name"): p for p in body.get("parameter") or [] if isinstance(p, dict)}
        patient = (params.get("resource") or {}).get("resource") or {}
        count = int((params.get("count") or {}).get("valueInteger") or 10)
        only_certain = bool((params.get("onlyCertainMatches") or {}).get("valueBoolean") or False)
    else:
        raise BadRequest("$match takes a Parameters resource with a Patient in parameter 'resource'")
    if patient.get("resourceType") != "Patient":
        raise BadRequest("parameter 'resource' must hold a Patient")
    settings = service.DEFAULT_SETTINGS
    candidates = service.find_candidates(session, features(patient, settings.match), settings)
    if only_certain:
        candidates = [c for c in candidates if c.result.grade == "certain"]
    entries = []
    for cand in candidates[: max(count, 0)]:
        try:
            golden = store.read(session, "Patient", cand.golden_id)
        except NotFound:
            continue
        entries.append(
            {
                "fullUrl": f"{request.base_url}fhir/Patient/{cand.golden_id}",
                "resource": golden,
                "search": {
                    "extension": [{"url": MATCH_GRADE, "valueCode": cand.result.grade}],
                    "mode": "match",
                    "score": cand.result.probability(settings.match),
                },
            }
        )
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}
    return _json(bundle, media_type=FHIR_JSON)


# ---------------------------------------------------------------------------------------------- PIXm


@router.get("/fhir/Patient/$ihe-pix")
def patient_pix(
    request: Request,
    source_identifier: str = Query(alias="sourceIdentifier"),
    target_system: list[str] = Query(default=[], alias="targetSystem"),
    session: Session = Depends(get_session),
) -> Response:
    """IHE PIXm ITI-83: the identifiers and Patient ids the same person has at other facilities."""
    if "|" not in source_identifier:
        raise BadRequest("sourceIdentifier must be system|value")
    system, value = source_identifier.split("|", 1)
    sources = list(
        session.scalars(select(MpiBlock.source_id).where(MpiBlock.key == f"ident:{system}|{value}"[:250]))
    )
    if not sources:
        raise NotFound(f"no patient has the identifier {source_identifier}")
    goldens = set(session.scalars(select(MpiSource.golden_id).where(MpiSource.id.in_(sources))))
    rows = list(
        session.scalars(select(MpiSource).where(MpiSource.golden_id.in_(goldens)).order_by(MpiSource.id))
    )
    wanted = set(target_system)
    params: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for row in rows:
        for ident in (row.content or {}).get("identifier") or []:
            key = (str(ident.get("system") or ""), str(ident.get("value") or ""))
            if key in seen or key == (system, value) or (wanted and key[0] not in wanted):
                continue
            seen.add(key)
            params.append(
                {"name": "targetIdentifier", "valueIdentifier": {"system": key[0], "value": key[1]}}
            )
    if not wanted:
        base = f"{request.base_url}fhir/Patient/"
        for golden in sorted(goldens):
            params.append({"name": "targetId", "valueReference": {"reference": base + golden}})
        for row in rows:
            params.append({"name": "targetId", "valueReference": {"reference": base + row.id}})
    return _json({"resourceType": "Parameters", "parameter": params}, media_type=FHIR_JSON)


# ----------------------------------------------------------------------------------------- review queue


def _summary(session: Session, sid: str) -> dict[str, Any]:
    row = session.get(MpiSource, sid)
    if row is None:
        return {"id": sid}
    content = row.content or {}
    names = content.get("name") or [{}]
    return {
        "id": sid,
        "facility": row.facility,
        "golden": row.golden_id,
        "active": row.active,
        "name": names[0].get("text")
        or " ".join([*names[0].get("given", []), names[0].get("family", "")]).strip(),
        "birthDate": content.get("birthDate"),
        "gender": content.get("gender"),
    }


def _review_dict(session: Session, review: MpiReview) -> dict[str, Any]:
    comparisons = review.comparisons or []
    return {
        "id": review.id,
        "status": review.status,
        "weight": review.weight,
        "reason": review.reason,
        "source": _summary(session, review.source_id),
        "candidate": _summary(session, review.candidate_source_id),
        "agree": [c["field"] for c in comparisons if c["weight"] > 0],
        "disagree": [c["field"] for c in comparisons if c["weight"] < 0],
        "comparisons": comparisons,
        "created": review.created_at.isoformat() if review.created_at else None,
    }


def _who_why(body: dict[str, Any], request: Request) -> tuple[str, str]:
    """Who decides is the authenticated steward (the token's subject); a ``who`` in the body is only
    used where the router runs without the hub's auth (its own tests)."""
    principal = getattr(request.state, "principal", None)
    who = str(principal.subject) if principal is not None else str(body.get("who") or "").strip()
    if not who:
        raise BadRequest("'who' (the steward making the decision) is required")
    return who, str(body.get("why") or "")


@router.get("/mpi/review")
def review_list(
    status: str = "open",
    limit: int = Query(default=50, ge=1, le=500),
    offset: int = Query(default=0, ge=0),
    session: Session = Depends(get_session),
) -> Response:
    """Possible matches, highest weight first, with the fields that agreed and disagreed."""
    reviews = session.scalars(
        select(MpiReview)
        .where(MpiReview.status == status)
        .order_by(MpiReview.weight.desc(), MpiReview.id)
        .limit(limit)
        .offset(offset)
    )
    return _json({"items": [_review_dict(session, r) for r in reviews]})


# The review page is a shell: it holds no patient data, so a browser may load it without a bearer token
# (a navigation cannot send one). Its script asks for the steward's token (``hub token --role steward``),
# keeps it for the tab only (sessionStorage), and calls the guarded JSON API with it; rows are built
# with DOM text nodes, so names are never parsed as HTML.
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>MPI review queue</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem}table{border-collapse:collapse;width:100%}
td,th{border:1px solid #ccc;padding:.4rem;vertical-align:top}.agree{color:#060}.disagree{color:#a00}
</style></head><body>
<h1>Possible matches (<span id="count">…</span>)</h1>
<p><label>Steward token <input id="token" type="password" autocomplete="off"></label>
<button id="load">Load the queue</button> <label>Reason <input id="why"></label></p>
<table><thead><tr><th>Weight</th><th>Patient</th><th>Candidate</th><th>Fields</th><th>Decision</th></tr></thead>
<tbody id="rows"></tbody></table>
<p id="status" role="status"></p>
<script>
const $ = (id) => document.getElementById(id);
const auth = () => ({authorization: "Bearer " + sessionStorage.getItem("hub.token")});
function cell(lines) {
  const td = document.createElement("td");
  lines.filter((x) => x !== null && x !== undefined && x !== "").forEach((text, i) => {
    if (i) td.append(document.createElement("br"));
    td.append(String(text));
  });
  return td;
}
const person = (p) => cell([p.name || "?", p.birthDate, p.gender, p.facility]);
function fields(item) {
  const td = document.createElement("td");
  for (const [names, cls, mark] of [[item.agree, "agree", "✓"], [item.disagree, "disagree", "✗"]]) {
    for (const name of names) {
      const span = document.createElement("span");
      span.className = cls;
      span.textContent = `${mark} ${name} `;
      td.append(span);
    }
  }
  return td;
}
function row(item) {
  const tr = document.createElement("tr");
  tr.id = `review-${item.id}`;
  const buttons = document.createElement("td");
  for (const [action, label] of [["link", "Same person"], ["not-duplicate", "Not a duplicate"]]) {
    const button = document.createElement("button");
    button.textContent = label;
    button.dataset.action = action;
    button.addEventListener("click", () => decide(item.id, action));
    buttons.append(button, " ");
  }
  tr.append(cell([item.weight.toFixed(1), item.reason]), person(item.source), person(item.candidate),
    fields(item), buttons);
  return tr;
}
async function load() {
  const typed = $("token").value.trim();
  if (typed) sessionStorage.setItem("hub.token", typed);
  if (!sessionStorage.getItem("hub.token")) {
    $("status").textContent = "Paste a steward token first (hub token --role steward).";
    return;
  }
  const r = await fetch("/mpi/review?limit=200", {headers: auth()});
  if (!r.ok) {
    $("status").textContent = `The queue could not be loaded (HTTP ${r.status}).`;
    return;
  }
  const items = (await r.json()).items;
  $("rows").replaceChildren(...items.map(row));
  $("count").textContent = items.length;
  $("status").textContent = "";
}
async function decide(id, action) {
  const r = await fetch(`/mpi/review/${id}/${action}`, {method: "POST",
    headers: {...auth(), "content-type": "application/json"}, body: JSON.stringify({why: $("why").value})});
  $("status").textContent = r.ok ? `Review ${id}: ${action} recorded.` : `Review ${id}: HTTP ${r.status}.`;
  if (r.ok) {
    $(`review-${id}`).remove();
    $("count").textContent = $("rows").children.length;
  }
}
$("load").addEventListener("click", load);
if (sessionStorage.getItem("hub.token")) load();
</script></body></html>"""

page_router = APIRouter()


@page_router.get("/mpi/review/page", include_in_schema=False)
def review_page() -> Response:
    """The review queue as a small web page for data stewards (public shell; the data needs a token)."""
    return Response(_PAGE, media_type="text/html; charset=utf-8")


@router.get("/mpi/review/decisions")
def decision_list(
    source: str | None = None,
    limit: int = Query(default=50, ge=1, le=500),
    session: Session = Depends(get_session),
) -> Response:
    stmt = select(MpiDecision).order_by(MpiDecision.id.desc()).limit(limit)
    if source:
        stmt = stmt.where(MpiDecision.source_id == source)
    return _json({"items": [service.decision_dict(d) for d in session.scalars(stmt)]})


@router.get("/mpi/review/{review_id}")
def review_get(review_id: int, session: Session = Depends(get_session)) -> Response:
    review = session.get(MpiReview, review_id)
    if review is None:
        raise NotFound(f"review {review_id} does not exist")
    return _json(_review_dict(session, review))


@router.post("/mpi/review/{review_id}/link")
async def review_link(review_id: int, request: Request, session: Session = Depends(get_session)) -> Response:
    who, why = _who_why(await _body(request), request)
    decision = service.decide_review(session, review_id, "link", actor=who, reason=why)
    return _json(service.decision_dict(decision))


@router.post("/mpi/review/{review_id}/not-duplicate")
async def review_not_duplicate(
    review_id: int, request: Request, session: Session = Depends(get_session)
) -> Response:
    who, why = _who_why(await _body(request), request)
    decision = service.decide_review(session, review_id, "not-duplicate", actor=who, reason=why)
    return _json(service.decision_dict(decision))


@router.post("/mpi/review/link")
async def source_link(request: Request, session: Session = Depends(get_session)) -> Response:
    """Link a source to another golden record: ``{"source", "target" (golden or source id), "who", "why"}``."""
    body = await _body(request)
    who, why = _who_why(body, request)
    if not body.get("source") or not body.get("target"):
        raise BadRequest("'source' and 'target' are required")
    decision = service.link(session, str(body["source"]), str(body["target"]), actor=who, reason=why)
    return _json(service.decision_dict(decision))


@router.post("/mpi/review/unlink")
async def source_unlink(request: Request, session: Session = Depends(get_session)) -> Response:
    """Take a source out of its golden record: ``{"source", "who", "why"}``."""
    body = await _body(request)
    who, why = _who_why(body, request)
    if not body.get("source"):
        raise BadRequest("'source' is required")
    decision = service.unlink(session, str(body["source"]), actor=who, reason=why)
    return _json(service.decision_dict(decision))


@router.post("/mpi/review/decisions/{decision_id}/undo")
async def decision_undo(
    decision_id: int, request: Request, session: Session = Depends(get_session)
) -> Response:
    who, why = _who_why(await _body(request), request)
    decision = service.undo(session, decision_id, actor=who, reason=why)
    return _json(service.decision_dict(decision))
