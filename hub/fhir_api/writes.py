"""FHIR-native writes for senders: create, update, conditional create/update, delete, and transaction and
batch Bundles, all through ``hub.store.resources`` (so the version rows and the search index follow) and
each recorded by a Provenance naming the token's subject, in the caller's transaction.

**A sender writes only its facilities' resources.** Before a sender's write (create, update,
conditional update, delete, and each Bundle entry) touches a stored resource, :func:`check_owner` asks
the store who made it: the facilities of the HL7 v2 messages that wrote its versions
(``resource_version.message_id``) and the ``urn:hub:sender`` agents of the Provenances that target it
(a message's, and each FHIR write's). A resource another facility, an admin, or nobody known made is
403; golden Patients are the MPI's. Other roles are not restricted here (their ceilings apply).

A created resource that carries an identifier with system and value gets a deterministic id (uuid5 of
type, system and value, as the HL7 v2 pipeline does), so a repeated create upserts instead of
duplicating. Identity linking of FHIR-native Patients is the MPI's (``hub.mpi.service``) to slot in here.
"""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.auth import Principal
from hub.errors import BadRequest, Forbidden, HubError, NotFound, PreconditionFailed, Unprocessable
from hub.fhir_api.bundle import fhir_instant
from hub.fhir_api.outcome import error_outcome
from hub.fhir_api.search import check_type, find_ids
from hub.mpi.service import GOLDEN_TAG, is_golden
from hub.store import resources as store
from hub.store.models import InboundMessage, Resource, ResourceVersion, SearchReference

SENDER_SYSTEM = "urn:hub:sender"  # Provenance.agent.who.identifier of a sending facility (as the v2 maps)

ID_NAMESPACE = uuid.UUID("6f1c9a4e-2b1d-5d8e-9c4a-0d6a1f0e7b21")
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")


@dataclass(slots=True)
class WriteResult:
    status: int
    resource_type: str
    id: str
    version_id: int
    last_updated: datetime
    content: bytes


def _find_source_ids(session: Session, resource_type: str, params: list[tuple[str, str]]) -> list[str]:
    """Conditional writes match only what senders own: golden Patients are the MPI's, never a target."""
    if resource_type == "Patient":
        params = [*params, ("_tag:not", f"{GOLDEN_TAG['system']}|{GOLDEN_TAG['code']}")]
    return find_ids(session, resource_type, params)


def _check_body(resource_type: str, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a FHIR resource (a JSON object)")
    if body.get("resourceType") != resource_type:
        raise BadRequest(f"the body's resourceType must be {resource_type}, not {body.get('resourceType')!r}")
    return body


def _check_id(rid: str) -> str:
    if not rid or len(rid) > 64 or not set(rid) <= _ID_CHARS:
        raise Unprocessable(f"{rid!r} is not a valid FHIR id")
    return rid


def new_id(resource: dict[str, Any]) -> str:
    for ident in resource.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("system") and ident.get("value"):
            key = f"{resource['resourceType']}|{ident['system']}|{ident['value']}"
            return str(uuid.uuid5(ID_NAMESPACE, key))
    return str(uuid.uuid4())


def _result(session: Session, status: int, rtype: str, rid: str) -> WriteResult:
    content, version, last_updated = store.read_bytes(session, rtype, rid)
    return WriteResult(status, rtype, rid, version, last_updated, content)


def link_identity(session: Session, resource: dict[str, Any], facility: str) -> None:
    """Hand a source Patient to the MPI before it is stored, as the HL7 v2 pipeline does: the MPI sets
    its ``link`` to the golden record (and writes the golden Patient) in this transaction."""
    from hub.mapping import MappingResult, SenderContext
    from hub.mpi import service as mpi

    mpi.resolve_identities(session, MappingResult(resources=[resource]), SenderContext(facility=facility))


def validate(resource: dict[str, Any]) -> None:
    """422 with the problems ``hub.fhir.validate`` finds (the R4B models); until that validator is
    present (it arrives with the mapping issue) writes are checked for shape only."""
    try:
        validator = importlib.import_module("hub.fhir.validate")
    except ModuleNotFoundError:
        return
    problems = validator.validate_resource(resource)
    if problems:
        raise Unprocessable("; ".join(problems[:20]), code="processing")


def owners(session: Session, resource_type: str, rid: str) -> set[str] | None:
    """Who made the stored ``resource_type/rid`` (None: it is not stored): ``facility:F`` for each sending
    facility of its messages and Provenances, ``subject:S`` for a sender's FHIR write recorded before
    facilities were, ``other:…`` for any other author."""
    stored = session.execute(
        select(Resource.content).where(Resource.resource_type == resource_type, Resource.id == rid)
    ).first()
    if stored is None:
        return None
    if resource_type == "Patient" and is_golden(orjson.loads(stored[0])):
        return {"other:mpi"}
    found = {
        f"facility:{f}"
        for f in session.scalars(
            select(InboundMessage.facility)
            .join(ResourceVersion, ResourceVersion.message_id == InboundMessage.id)
            .where(ResourceVersion.resource_type == resource_type, ResourceVersion.id == rid)
            .distinct()
        )
    }
    provenances = session.scalars(
        select(Resource.content)
        .join(SearchReference, SearchReference.resource_pk == Resource.pk)
        .where(
            SearchReference.target_id == rid,
            SearchReference.target_type == resource_type,
            SearchReference.param == "target",
            SearchReference.resource_type == "Provenance",
        )
    )
    for content in provenances:
        for agent in orjson.loads(content).get("agent") or []:
            who = agent.get("who") or {}
            ident = who.get("identifier") or {}
            if ident.get("system") == SENDER_SYSTEM and ident.get("value"):
                found.add(f"facility:{ident['value']}")
            elif str(who.get("display", "")).startswith("sender:"):
                found.add(f"subject:{who['display'].removeprefix('sender:')}")
            elif agent.get("type", {}).get("coding", [{}])[0].get("code") == "author":
                found.add(f"other:{who.get('display', '')}")
    return found


def check_owner(session: Session, writer: Principal | None, resource_type: str, rid: str) -> None:
    """403 unless ``writer`` may change the stored ``resource_type/rid``: a sender only what its own
    facilities made (or a resource not stored yet); every other role is checked by its ceiling alone."""
    if writer is None or writer.role != "sender":
        return
    made_by = owners(session, resource_type, rid)
    if made_by is None:
        return
    mine = {f"facility:{f}" for f in writer.facilities} | {f"subject:{writer.subject}"}
    if not made_by or not made_by <= mine:
        raise Forbidden(
            f"{resource_type}/{rid} was not written by the facilities of sender {writer.subject}: "
            "a sender changes only its own facilities' resources"
        )


def _put(
    session: Session,
    resource: dict[str, Any],
    now: datetime,
    targets: list[str],
    facility: str | None = None,
    writer: Principal | None = None,
) -> WriteResult:
    validate(resource)
    check_owner(session, writer, resource["resourceType"], str(resource.get("id")))
    if facility is not None and resource.get("resourceType") == "Patient":
        link_identity(session, resource, facility)
    written = store.upsert(session, resource, now=now)
    if written.changed:
        targets.append(f"{written.resource_type}/{written.id}/_history/{written.version_id}")
    return _result(session, 201 if written.version_id == 1 else 200, written.resource_type, written.id)


def create(
    session: Session,
    resource_type: str,
    body: Any,
    *,
    if_none_exist: str | None = None,
    now: datetime | None = None,
    targets: list[str] | None = None,
    facility: str | None = None,
    writer: Principal | None = None,
) -> WriteResult:
    resource = dict(_check_body(resource_type, body))
    targets = targets if targets is not None else []
    if if_none_exist:
        found = _find_source_ids(session, resource_type, parse_qsl(if_none_exist.split("?", 1)[-1]))
        if len(found) > 1:
            raise PreconditionFailed(f"If-None-Exist {if_none_exist!r} matches more than one {resource_type}")
        if found:
            return _result(session, 200, resource_type, found[0])
    resource["id"] = new_id(resource)
    return _put(session, resource, now or datetime.now(UTC), targets, facility, writer)


def update(
    session: Session,
    resource_type: str,
    rid: str,
    body: Any,
    *,
    if_match: str | None = None,
    now: datetime | None = None,
    targets: list[str] | None = None,
    facility: str | None = None,
    writer: Principal | None = None,
) -> WriteResult:
    resource = _check_body(resource_type, body)
    _check_id(rid)
    if resource.get("id") != rid:
        raise BadRequest(f"the body's id {resource.get('id')!r} is not the id in the URL ({rid})")
    if if_match:
        try:
            _, version, _ = store.read_bytes(session, resource_type, rid)
        except NotFound as exc:
            raise PreconditionFailed(f"{resource_type}/{rid} does not exist (If-Match {if_match})") from exc
        if if_match.strip().removeprefix("W/").strip('"') != str(version):
            raise PreconditionFailed(f"{resource_type}/{rid} is at version {version}, not {if_match}")
    return _put(
        session, resource, now or datetime.now(UTC), targets if targets is not None else [], facility, writer
    )


def conditional_update(
    session: Session,
    resource_type: str,
    criteria: list[tuple[str, str]],
    body: Any,
    *,
    now: datetime | None = None,
    targets: list[str] | None = None,
    facility: str | None = None,
    writer: Principal | None = None,
) -> WriteResult:
    resource = dict(_check_body(resource_type, body))
    found = _find_source_ids(session, resource_type, criteria)
    if len(found) > 1:
        raise PreconditionFailed(f"the criteria match more than one {resource_type}")
    if found:
        if resource.get("id") not in (None, found[0]):
            raise BadRequest(
                f"the body's id {resource['id']!r} is not the matching {resource_type}/{found[0]}"
            )
        resource["id"] = found[0]
    else:
        resource["id"] = _check_id(str(resource.get("id") or new_id(resource)))
    return _put(
        session, resource, now or datetime.now(UTC), targets if targets is not None else [], facility, writer
    )


def delete(session: Session, resource_type: str, rid: str, writer: Principal | None = None) -> None:
    check_owner(session, writer, resource_type, rid)
    store.delete(session, resource_type, rid)


def identity_facility(principal: Principal) -> str:
    """The MPI's "sender" of a FHIR-native write: a sender's facility (the first its token is bound to),
    else the token's subject. A sender bound to no facility writes nothing."""
    if principal.role == "sender":
        if not principal.facilities:
            raise Forbidden(f"sender {principal.subject} is bound to no facility")
        return principal.facilities[0]
    return f"fhir:{principal.subject}"


def record_provenance(session: Session, principal: Principal, targets: list[str], now: datetime) -> None:
    """One Provenance per request naming every resource version it wrote and who wrote it."""
    if not targets:
        return
    store.upsert(
        session,
        {
            "resourceType": "Provenance",
            "id": str(uuid.uuid4()),
            "target": [{"reference": t} for t in targets],
            "recorded": fhir_instant(now),
            "activity": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "UPDATE"}
                ]
            },
            "agent": [
                {
                    "type": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                                "code": "author",
                            }
                        ]
                    },
                    "who": {
                        "display": f"{principal.role}:{principal.subject}",
                        **(
                            {"identifier": {"system": SENDER_SYSTEM, "value": identity_facility(principal)}}
                            if principal.role == "sender"
                            else {}
                        ),
                    },
                }
            ],
        },
        now=now,
    )


# --- Bundles ------------------------------------------------------------------------------------------


def _rewrite(value: Any, ids: dict[str, str]) -> Any:
    if isinstance(value, dict):
        out = {k: _rewrite(v, ids) for k, v in value.items()}
        ref = out.get("reference")
        if isinstance(ref, str) and ref in ids:
            out["reference"] = ids[ref]
        return out
    if isinstance(value, list):
        return [_rewrite(v, ids) for v in value]
    return value


_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "GET": 3}
_REQUEST_STRINGS = ("method", "url", "ifNoneExist", "ifMatch", "ifNoneMatch", "ifModifiedSince")


def _entries(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """``Bundle.entry``, checked to have the shape the processing reads (a 400 otherwise): objects, whose
    ``fullUrl`` is a string, ``request`` an object of strings and ``resource`` an object with a
    string ``resourceType``."""
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise BadRequest("Bundle.entry must be an array")
    for n, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise BadRequest(f"Bundle.entry[{n}] must be an object")
        if not isinstance(entry.get("fullUrl", ""), str):
            raise BadRequest(f"Bundle.entry[{n}].fullUrl must be a string")
        req = entry.get("request", {})
        if not isinstance(req, dict):
            raise BadRequest(f"Bundle.entry[{n}].request must be an object")
        for key in _REQUEST_STRINGS:
            if not isinstance(req.get(key, ""), str):
                raise BadRequest(f"Bundle.entry[{n}].request.{key} must be a string")
        res = entry.get("resource")
        if res is not None and not (isinstance(res, dict) and isinstance(res.get("resourceType"), str)):
            raise BadRequest(f"Bundle.entry[{n}].resource must be a resource (an object with resourceType)")
    return entries


def process_bundle(
    session: Session,
    principal: Principal,
    bundle: Any,
    *,
    base: str,
    read_entry: Callable[[Session, str], tuple[int, bytes]],
) -> bytes:
    """Apply a transaction (all or nothing: any error propagates and the request rolls back) or a batch
    (each entry on its own savepoint, errors reported per entry)."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BadRequest("POST /fhir takes a Bundle of type transaction or batch")
    kind = bundle.get("type")
    if kind not in ("transaction", "batch"):
        raise BadRequest(f"Bundle.type must be transaction or batch, not {kind!r}")
    entries = _entries(bundle)
    now = datetime.now(UTC)
    targets: list[str] = []
    ids: dict[str, str] = {}
    if kind == "transaction":
        # Placeholder fullUrls (urn:uuid:…) of created resources become Type/id everywhere in the Bundle.
        for entry in entries:
            req, res = entry.get("request") or {}, entry.get("resource")
            if req.get("method") == "POST" and isinstance(res, dict) and entry.get("fullUrl"):
                if req.get("ifNoneExist"):
                    found = _find_source_ids(
                        session, res.get("resourceType", ""), parse_qsl(req["ifNoneExist"])
                    )
                    if len(found) > 1:
                        raise PreconditionFailed(f"ifNoneExist {req['ifNoneExist']!r} matches several")
                    if found:
                        ids[entry["fullUrl"]] = f"{res['resourceType']}/{found[0]}"
                        continue
                rid = new_id(res)
                entry["_assigned"] = rid
                ids[entry["fullUrl"]] = f"{res['resourceType']}/{rid}"
        entries = [{**e, "resource": _rewrite(e.get("resource"), ids)} for e in entries]
    responses: list[bytes | None] = [None] * len(entries)
    order = sorted(
        range(len(entries)), key=lambda i: _ORDER.get(str((entries[i].get("request") or {}).get("method")), 9)
    )
    for i in order:
        entry = entries[i]
        if kind == "transaction":
            responses[i] = _apply(session, principal, entry, now, targets, base, read_entry)
            continue
        try:
            with session.begin_nested():
                responses[i] = _apply(session, principal, entry, now, targets, base, read_entry)
        except HubError as exc:
            status = f"{exc.http_status} {exc.code}"
            responses[i] = (
                b'{"response":{"status":"' + status.encode() + b'","outcome":' + error_outcome(exc) + b"}}"
            )
    record_provenance(session, principal, targets, now)
    body = b",".join(r or b"{}" for r in responses)
    return b'{"resourceType":"Bundle","type":"' + f"{kind}-response".encode() + b'","entry":[' + body + b"]}"


def _apply(
    session: Session,
    principal: Principal,
    entry: dict[str, Any],
    now: datetime,
    targets: list[str],
    base: str,
    read_entry: Callable[[Session, str], tuple[int, bytes]],
) -> bytes:
    facility = identity_facility(principal)
    req = entry.get("request") or {}
    method, url = req.get("method"), str(req.get("url") or "")
    path, _, query = url.partition("?")
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise BadRequest(f"entry request url {url!r} names no resource type")
    rtype = check_type(parts[0])
    if method == "GET":
        principal.require(rtype, "r" if len(parts) > 1 else "s")
        status, content = read_entry(session, url)
        return b'{"resource":' + content + b',"response":{"status":"' + str(status).encode() + b'"}}'
    if method == "DELETE":
        principal.require(rtype, "d")
        if len(parts) != 2:
            raise BadRequest("conditional delete is not supported")
        delete(session, rtype, parts[1], principal)
        return b'{"response":{"status":"204 No Content"}}'
    resource = entry.get("resource")
    if method == "POST":
        principal.require(rtype, "c")
        if "_assigned" in entry:
            res = dict(_check_body(rtype, resource))
            res["id"] = entry["_assigned"]
            result = _put(session, res, now, targets, facility, principal)
        else:
            result = create(
                session,
                rtype,
                resource,
                if_none_exist=req.get("ifNoneExist"),
                now=now,
                targets=targets,
                facility=facility,
                writer=principal,
            )
    elif method == "PUT":
        principal.require(rtype, "u")
        if len(parts) == 2:
            result = update(
                session,
                rtype,
                parts[1],
                resource,
                if_match=req.get("ifMatch"),
                now=now,
                targets=targets,
                facility=facility,
                writer=principal,
            )
        elif query:
            result = conditional_update(
                session,
                rtype,
                parse_qsl(query),
                resource,
                now=now,
                targets=targets,
                facility=facility,
                writer=principal,
            )
        else:
            raise BadRequest("PUT needs Type/id or Type?criteria")
    else:
        raise BadRequest(f"entry request method {method!r} is not supported")
    response = {
        "status": f"{result.status} {'Created' if result.status == 201 else 'OK'}",
        "location": f"{result.resource_type}/{result.id}/_history/{result.version_id}",
        "etag": f'W/"{result.version_id}"',
        "lastModified": fhir_instant(result.last_updated),
    }
    return (
        b'{"fullUrl":"'
        + f"{base}/{result.resource_type}/{result.id}".encode()
        + b'","resource":'
        + result.content
        + b',"response":'
        + orjson.dumps(response)
        + b"}"
    )
