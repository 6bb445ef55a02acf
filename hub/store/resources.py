"""Writing and reading FHIR resources: the current row, a version row per change, and (through
``search_index``) the search-index rows, all in the caller's transaction.

Resources are plain dicts on the way in and JSON bytes at rest; the read path serves those bytes as
they are. An upsert whose content equals the stored content (ignoring ``meta``) writes nothing, so a
replay or a duplicate leaves no new version behind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, bindparam, insert, select
from sqlalchemy.orm import Session

from hub.errors import Gone, NotFound
from hub.store.models import Resource, ResourceVersion

# Called after every write with (session, resource_type, id, resource dict or None when deleted).
# The search index registers itself here; keeping it a hook keeps this module free of index details.
WriteHook = Callable[[Session, str, str, dict[str, Any] | None], None]
# The same for many writes at once (``upsert_many``): [(resource_type, id, stored dict or None), …].
BatchWriteHook = Callable[[Session, list[tuple[str, str, dict[str, Any] | None]]], None]
_write_hooks: list[WriteHook] = []
_batch_hooks: dict[WriteHook, BatchWriteHook] = {}


def register_write_hook(hook: WriteHook, batch: BatchWriteHook | None = None) -> None:
    """``hook`` runs after each single write; ``batch`` (if given) replaces it for ``upsert_many``."""
    if hook not in _write_hooks:
        _write_hooks.append(hook)
    if batch is not None:
        _batch_hooks[hook] = batch


@dataclass(frozen=True, slots=True)
class Written:
    resource_type: str
    id: str
    version_id: int
    changed: bool


def _strip_meta(resource: dict[str, Any]) -> dict[str, Any]:
    body = dict(resource)
    meta = dict(body.pop("meta", None) or {})
    meta.pop("versionId", None)
    meta.pop("lastUpdated", None)
    if meta:
        body["meta"] = meta
    return body


def _patient_of(resource: dict[str, Any]) -> str | None:
    """The Patient compartment a resource belongs to (its own id for a Patient)."""
    if resource.get("resourceType") == "Patient":
        return str(resource["id"])
    for key in ("subject", "patient", "beneficiary"):
        ref = resource.get(key)
        if isinstance(ref, dict):
            target = ref.get("reference", "")
            if isinstance(target, str) and target.startswith("Patient/"):
                return target[8:]
    return None


def upsert(
    session: Session,
    resource: dict[str, Any],
    *,
    message_id: int | None = None,
    now: datetime | None = None,
) -> Written:
    """Create or update ``resource`` (which carries ``resourceType`` and ``id``)."""
    return upsert_many(session, [resource], message_id=message_id, now=now)[0]


def upsert_many(
    session: Session,
    resources: list[dict[str, Any]],
    *,
    message_id: int | None = None,
    now: datetime | None = None,
) -> list[Written]:
    """``upsert`` for the resources of one message: their current rows are read in one query, version
    rows and search-index rows are written with one statement per table instead of one per resource."""
    now = now or datetime.now(UTC)
    # One query for every current row (two plain INs: a row-value IN makes SQLite scan the whole
    # primary-key index); a key it does not return is a new resource, with no per-resource look-up.
    types = sorted({str(r["resourceType"]) for r in resources})
    ids = sorted({str(r["id"]) for r in resources})
    found = {
        (row.resource_type, row.id): row
        for row in session.scalars(
            select(Resource).where(Resource.resource_type.in_(types), Resource.id.in_(ids))
        )
    }
    out: list[Written] = []
    versions: list[dict[str, Any]] = []
    changed: list[tuple[str, str, dict[str, Any] | None]] = []
    for resource in resources:
        rtype = resource["resourceType"]
        rid = str(resource["id"])
        body = _strip_meta(resource)
        current = found.get((rtype, rid))
        if current is not None and not current.deleted and _strip_meta(orjson.loads(current.content)) == body:
            out.append(Written(rtype, rid, current.version_id, False))
            continue
        version = (current.version_id + 1) if current is not None else 1
        stored, content = _stored(rtype, rid, body, version, now)
        patient_id = _patient_of(stored)
        if current is None:
            current = Resource(
                resource_type=rtype,
                id=rid,
                version_id=version,
                last_updated=now,
                deleted=False,
                patient_id=patient_id,
                content=content,
            )
            session.add(current)
            found[(rtype, rid)] = current  # the same resource twice in one message
        else:
            current.version_id = version
            current.last_updated = now
            current.deleted = False
            current.patient_id = patient_id
            current.content = content
        versions.append(
            {
                "resource_type": rtype,
                "id": rid,
                "version_id": version,
                "last_updated": now,
                "deleted": False,
                "message_id": message_id,
                "content": content,
            }
        )
        changed.append((rtype, rid, stored))
        out.append(Written(rtype, rid, version, True))
    if versions:
        # Core, not the ORM: nothing reads these rows back in this transaction.
        session.execute(insert(ResourceVersion.metadata.tables["resource_version"]), versions)
    if changed:
        for hook in _write_hooks:
            batch = _batch_hooks.get(hook)
            if batch is not None:
                batch(session, changed)
            else:
                for item in changed:
                    hook(session, *item)
    return out


def _stored(
    rtype: str, rid: str, body: dict[str, Any], version: int, now: datetime
) -> tuple[dict[str, Any], bytes]:
    meta = dict(body.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    stored = {"resourceType": rtype, "id": rid, "meta": meta}
    stored.update({k: v for k, v in body.items() if k not in ("resourceType", "id", "meta")})
    return stored, orjson.dumps(stored)


def delete(session: Session, resource_type: str, rid: str, *, message_id: int | None = None) -> Written:
    current = session.get(Resource, (resource_type, rid))
    if current is None:
        raise NotFound(f"{resource_type}/{rid} does not exist")
    if current.deleted:
        return Written(resource_type, rid, current.version_id, False)
    now = datetime.now(UTC)
    current.version_id += 1
    current.deleted = True
    current.last_updated = now
    session.add(
        ResourceVersion(
            resource_type=resource_type,
            id=rid,
            version_id=current.version_id,
            last_updated=now,
            deleted=True,
            message_id=message_id,
            content=b"",
        )
    )
    for hook in _write_hooks:
        hook(session, resource_type, rid, None)
    return Written(resource_type, rid, current.version_id, True)


# Built once: the hot read path skips constructing (and cache-keying) a new statement per request.
_READ = select(Resource.content, Resource.version_id, Resource.last_updated, Resource.deleted).where(
    Resource.resource_type == bindparam("rtype"), Resource.id == bindparam("rid")
)


def read_bytes(session: Session | Connection, resource_type: str, rid: str) -> tuple[bytes, int, datetime]:
    """The stored JSON of the current version, its version id and last update (404/410 as errors).
    Takes a Core ``Connection`` too (the read route), which skips the ORM's execution layer."""
    row = session.execute(_READ, {"rtype": resource_type, "rid": rid}).first()
    if row is None:
        raise NotFound(f"{resource_type}/{rid} is not known")
    if row.deleted:
        raise Gone(f"{resource_type}/{rid} was deleted")
    return row.content, row.version_id, row.last_updated


def read(session: Session, resource_type: str, rid: str) -> dict[str, Any]:
    return dict(orjson.loads(read_bytes(session, resource_type, rid)[0]))
