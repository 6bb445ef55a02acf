"""The MPI's HTTP surface: ``Patient/$match`` (FHIR R4), PIXm ``Patient/$ihe-pix`` and the stewards'
review queue under ``/mpi/review``.

Bodies are plain JSON (orjson); errors are HubErrors, which the application turns into OperationOutcomes.
``get_session`` is a small local dependency (one transaction per request, committed at the boundary); the
application replaces it with its own session dependency and authentication via ``dependency_overrides``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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
from hub.mpi.match import NIK_SYSTEM, features
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


# The comparison level a steward reads, from the scorer's agreement levels: "exact" (the values are the
# same, or mean the same), "partial" (close: a typo, a token left out, a transposed date, the same city but
# not the same district) or "disagree"; "missing" where one side has no value.
_EXACT_LEVELS = {
    "name": {"exact"},
    "birthDate": {"exact"},
    "gender": {"agree"},
    "locality": {"district"},
    "postalCode": {"agree"},
    "line": {"agree"},
    "telecom": {"agree"},
    "identifier": {"agree"},
    "nik": {"agree", "conflict", "suspect"},  # the same number; its conflict is told in the note
}


def comparison_grade(field: str, level: str) -> str:
    """``exact`` / ``partial`` / ``disagree`` / ``missing`` of one field's agreement level."""
    if level == "missing":
        return "missing"
    if level == "disagree":
        return "disagree"
    return "exact" if level in _EXACT_LEVELS.get(field, set()) else "partial"


def _identifier_label(ident: dict[str, Any]) -> str:
    system = str(ident.get("system") or "")
    codes = [str(c.get("code")) for c in (ident.get("type") or {}).get("coding") or [] if isinstance(c, dict)]
    if system == NIK_SYSTEM or "NNIDN" in codes:
        return "NIK"
    if "bpjs" in system.lower():
        return "BPJS"
    if "passport" in system.lower() or "PPN" in codes:
        return "Passport"
    if "MR" in codes:
        return "MRN"
    return codes[0] if codes else "identifier"


def _address_text(address: dict[str, Any]) -> str:
    parts = [*(str(x) for x in address.get("line") or [])]
    parts += [str(address[k]) for k in ("district", "city", "state", "postalCode") if address.get(k)]
    for ext in address.get("extension") or []:
        for sub in ext.get("extension") or [] if isinstance(ext, dict) else []:
            if isinstance(sub, dict) and sub.get("url") == "district" and sub.get("valueCode"):
                parts.append(f"district {sub['valueCode']}")
    return ", ".join(parts) or str(address.get("text") or "")


def _summary(session: Session, sid: str) -> dict[str, Any]:
    """What the steward compares of one source: demographics, every identifier, address and phone."""
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
        "identifiers": [
            {"label": _identifier_label(i), "system": i.get("system"), "value": str(i.get("value"))}
            for i in content.get("identifier") or []
            if isinstance(i, dict) and i.get("value")
        ],
        "addresses": [_address_text(a) for a in content.get("address") or [] if isinstance(a, dict)],
        "phones": [
            str(t.get("value"))
            for t in content.get("telecom") or []
            if isinstance(t, dict) and t.get("value") and t.get("system") in (None, "phone", "sms")
        ],
    }


def _review_dict(session: Session, review: MpiReview, others: Sequence[int] = ()) -> dict[str, Any]:
    comparisons = [
        {**c, "grade": comparison_grade(str(c["field"]), str(c["level"]))} for c in review.comparisons or []
    ]
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
        "sameReviewPair": list(others),
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
    offset: int = Query(default=0, ge=0, le=2**63 - 1),
    session: Session = Depends(get_session),
) -> Response:
    """Possible matches, highest weight first, one entry per pair of records (``total``: entries in the
    queue; ``limit`` and ``offset`` page through them), with every field's comparison level."""
    pairs = service.review_pairs(session, status)
    page = pairs[offset : offset + limit]
    reviews = {
        r.id: r for r in session.scalars(select(MpiReview).where(MpiReview.id.in_([p[0] for p in page])))
    }
    items = [_review_dict(session, reviews[first], rest) for first, rest in page if first in reviews]
    return _json({"total": len(pairs), "offset": offset, "limit": limit, "items": items})


# The review page is a shell: it holds no patient data, so a browser may load it without a bearer token
# (a navigation cannot send one). Its script asks for the steward's token (``hub token --role steward``),
# keeps it for the tab only (sessionStorage), and calls the guarded JSON API with it; rows are built
# with DOM text nodes, so names are never parsed as HTML.
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>MPI review queue</title>
<style>
body{font-family:system-ui,sans-serif;margin:2rem;max-width:72rem}
table{border-collapse:collapse;width:100%;margin:.3rem 0 1.5rem}
td,th{border:1px solid #ccc;padding:.35rem .5rem;vertical-align:top;text-align:left}
th{background:#f4f4f4;width:9rem}.review h2{font-size:1rem;margin:0}
.grade{display:inline-block;margin-right:.6rem;white-space:nowrap}
.exact{color:#060}.partial{color:#8a5a00}.disagree{color:#a00}.missing{color:#777}.note{color:#a00;font-weight:600}
nav{margin:1rem 0}
</style></head><body>
<h1>Possible matches (<span id="count">…</span> in the queue)</h1>
<p><label>Steward token <input id="token" type="password" autocomplete="off"></label>
<button id="load">Load the queue</button> <label>Reason <input id="why"></label></p>
<nav><button id="prev">Previous</button> <span id="range"></span> <button id="next">Next</button></nav>
<div id="rows"></div>
<p id="status" role="status"></p>
<script>
const $ = (id) => document.getElementById(id);
const PAGE = 20;
let offset = 0, total = 0;
const auth = () => ({authorization: "Bearer " + sessionStorage.getItem("hub.token")});
const MARK = {exact: "\u2713", partial: "\u2248", disagree: "\u2717", missing: "\u2013"};
const LABEL = {name: "name", birthDate: "birth date", gender: "sex", nik: "NIK", identifier: "BPJS/passport",
  line: "street", locality: "region", postalCode: "postal code", telecom: "phone"};
// What each row of the side-by-side table shows, and which compared fields it grades.
const ROWS = [
  ["Name", (p) => [p.name], ["name"]],
  ["Birth date", (p) => [p.birthDate], ["birthDate"]],
  ["Sex", (p) => [p.gender], ["gender"]],
  ["Identifiers", (p) => (p.identifiers || []).map((i) => `${i.label} ${i.value}`), ["nik", "identifier"]],
  ["Address", (p) => p.addresses || [], ["line", "locality", "postalCode"]],
  ["Phone", (p) => p.phones || [], ["telecom"]],
  ["Facility", (p) => [p.facility], []],
];
function cell(tag, lines) {
  const td = document.createElement(tag);
  (lines || []).filter((x) => x !== null && x !== undefined && x !== "").forEach((text, i) => {
    if (i) td.append(document.createElement("br"));
    td.append(String(text));
  });
  return td;
}
function grades(item, fields) {
  const td = document.createElement("td");
  td.className = "levels";
  for (const c of item.comparisons.filter((c) => fields.includes(c.field))) {
    const span = document.createElement("span");
    span.className = `grade ${c.grade}`;
    span.dataset.field = c.field;
    span.dataset.grade = c.grade;
    span.textContent = `${MARK[c.grade] || ""} ${LABEL[c.field] || c.field}: ${c.grade}`;
    td.append(span);
    if (c.note) {
      const note = document.createElement("span");
      note.className = "note";
      note.textContent = c.note;
      td.append(note);
    }
  }
  return td;
}
function section(item) {
  const box = document.createElement("section");
  box.className = "review";
  box.id = `review-${item.id}`;
  const head = document.createElement("h2");
  head.textContent = `Weight ${item.weight.toFixed(1)} \u2014 ${item.reason}`;
  const buttons = document.createElement("p");
  for (const [action, label] of [["link", "Same person"], ["not-duplicate", "Not the same person"]]) {
    const button = document.createElement("button");
    button.textContent = label;
    button.dataset.action = action;
    button.addEventListener("click", () => decide(item.id, action));
    buttons.append(button, " ");
  }
  const table = document.createElement("table");
  const top = document.createElement("tr");
  top.append(cell("th", [""]), cell("th", ["Patient"]), cell("th", ["Candidate"]), cell("th", ["Comparison"]));
  table.append(top);
  for (const [label, values, fields] of ROWS) {
    const tr = document.createElement("tr");
    tr.dataset.row = label;
    tr.append(cell("th", [label]), cell("td", values(item.source)), cell("td", values(item.candidate)),
      grades(item, fields));
    table.append(tr);
  }
  box.append(head, table, buttons);
  return box;
}
function showRange(shown) {
  $("count").textContent = total;
  $("range").textContent = total ? `${offset + 1}\u2013${offset + shown} of ${total}` : "none";
  $("prev").disabled = offset === 0;
  $("next").disabled = offset + shown >= total;
}
async function load() {
  const typed = $("token").value.trim();
  if (typed) sessionStorage.setItem("hub.token", typed);
  if (!sessionStorage.getItem("hub.token")) {
    $("status").textContent = "Paste a steward token first (hub token --role steward).";
    return;
  }
  const r = await fetch(`/mpi/review?limit=${PAGE}&offset=${offset}`, {headers: auth()});
  if (!r.ok) {
    $("status").textContent = `The queue could not be loaded (HTTP ${r.status}).`;
    return;
  }
  const body = await r.json();
  total = body.total;
  if (!body.items.length && offset > 0) {
    offset = Math.max(0, offset - PAGE);
    return load();
  }
  $("rows").replaceChildren(...body.items.map(section));
  showRange(body.items.length);
  $("status").textContent = "";
}
async function decide(id, action) {
  const r = await fetch(`/mpi/review/${id}/${action}`, {method: "POST",
    headers: {...auth(), "content-type": "application/json"}, body: JSON.stringify({why: $("why").value})});
  $("status").textContent = r.ok ? `Review ${id}: ${action} recorded.` : `Review ${id}: HTTP ${r.status}.`;
  if (r.ok) {
    $(`review-${id}`).remove();
    total -= 1;
    showRange($("rows").children.length);
  }
}
$("load").addEventListener("click", () => { offset = 0; load(); });
$("prev").addEventListener("click", () => { offset = Math.max(0, offset - PAGE); load(); });
$("next").addEventListener("click", () => { offset += PAGE; load(); });
if (sessionStorage.getItem("hub.token")) load();
</script></body></html>"""

page_router = APIRouter()


@page_router.get("/mpi/review/page", include_in_schema=False)
def review_page() -> Response:
    """The review queue as a small web page for data stewards (public shell; the data needs a token)."""
    return Response(_PAGE, media_type="text/html; charset=utf-8")


@router.get("/mpi/review/suspect-niks")
def suspect_nik_list(
    limit: int = Query(default=100, ge=1, le=1000), session: Session = Depends(get_session)
) -> Response:
    """NIKs carried by two people or more (golden records; placeholders left out): they link nobody
    automatically. Each with the golden records and the sources that carry it."""
    items = service.suspect_niks(session, limit)
    return _json({"total": len(items), "items": items})


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
