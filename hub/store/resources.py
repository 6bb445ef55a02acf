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
from sqlalchemy import Connection, Table, bindparam, select
from sqlalchemy.orm import Session
from sqlalchemy.orm.util import identity_key

from hub.errors import Conflict, Gone, NotFound
from hub.store import bulk, contributions, deferred
from hub.store.models import Resource, ResourceVersion
from hub.store.search_params import compartment_paths, walk

# One write: (resource_type, id, the resource's pk, the stored dict or None when deleted, the stored dict
# it replaced or None when there was no live version: a new resource, or one deleted before).
Change = tuple[str, str, int, dict[str, Any] | None, dict[str, Any] | None]
# Called after every write with the changes of one call, in order. The search index registers itself
# here; keeping it a hook keeps this module free of index details.
WriteHook = Callable[[Session, list[Change]], None]
_write_hooks: list[WriteHook] = []
# session.info key: the sending facility of the message whose resources the session is writing (the
# pipeline sets it around its write), for hooks that attribute a resource naming no facility of its own.
MESSAGE_FACILITY = "hub.message_facility"


def register_write_hook(hook: WriteHook) -> None:
    if hook not in _write_hooks:
        _write_hooks.append(hook)


@dataclass(frozen=True, slots=True)
class Written:
    resource_type: str
    id: str
    version_id: int
    changed: bool


@dataclass(frozen=True, slots=True)
class _Current:
    pk: int
    version_id: int
    stored: dict[str, Any] | None  # the live version as stored; None when deleted


class PatientConflict(Conflict):
    """A message's version of a resource would move it to another patient: nothing of the call is
    written. ``conflicts`` lists each such resource with the patient it is stored for and the one the
    message names (ids only)."""

    code = "patient-conflict"

    def __init__(self, conflicts: list[dict[str, str]]) -> None:
        first = conflicts[0]
        more = f" (and {len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        super().__init__(
            f"{first['resource']} belongs to Patient/{first['stored_patient']}; this message names"
            f" Patient/{first['message_patient']}{more}: held, not applied (release it to apply)"
        )
        self.conflicts = conflicts


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
    rtype = resource.get("resourceType")
    if rtype == "Patient":
        return str(resource["id"])
    paths = compartment_paths(str(rtype))
    if paths:  # FHIR R4's Patient CompartmentDefinition: its parameters, in its order
        for path in paths:
            for ref in walk(resource, path):
                target = ref.get("reference", "") if isinstance(ref, dict) else ""
                if isinstance(target, str) and target.startswith("Patient/"):
                    return target[8:]
        return None
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


_RESOURCE_COLUMNS = (
    "pk",
    "resource_type",
    "id",
    "version_id",
    "last_updated",
    "deleted",
    "patient_id",
    "content",
)
_UPDATE_COLUMNS = ("version_id", "last_updated", "deleted", "patient_id", "content", "resource_type", "id")
_UPDATE = (
    "UPDATE resource SET version_id = ?, last_updated = ?, deleted = ?, patient_id = ?, content = ?"
    " WHERE resource_type = ? AND id = ?"
)
_VERSION_COLUMNS = ("resource_type", "id", "version_id", "last_updated", "deleted", "message_id", "content")


def upsert_many(
    session: Session,
    resources: list[dict[str, Any]],
    *,
    message_id: int | None = None,
    now: datetime | None = None,
    order: str | None = None,
    accept_patient_change: bool = False,
    cancels: list[dict[str, str]] | None = None,
    replaces: list[dict[str, str]] | None = None,
) -> list[Written]:
    """``upsert`` for many resources (those of one message, or of a batch of messages, in order): their
    current rows are read in one query, and each table gets one statement for all of them. The rows
    go through the driver (``bulk``), not the ORM; a ``Resource`` entity the session already holds for
    an updated row is expired, so the ORM never serves a stale version.

    With a ``message_id`` (the pipeline): a resource of a shared type (``contributions.SHARED``) is
    stored as the merge of every message's contribution in message order (``order``: the message's
    event instant, UTC ``YYYYMMDDHHMMSSffffff``); and a resource whose stored version names another
    patient than this one (``contributions.patients_of``) raises :class:`PatientConflict` before
    anything is written, unless ``accept_patient_change`` (an analyst released the message: the
    resource moves, and the contributions of the earlier patient are dropped). ``cancels``
    (``MappingResult.cancels``): the shared resources whose contribution from the latest earlier
    message of the named event this message withdraws (``contributions.cancelled``); ``replaces``
    (``MappingResult.replaces``): the shared resources whose earlier participants of the named type
    give way to this message's (``contributions.REPLACES``)."""
    if not resources:
        return []
    now = now or datetime.now(UTC)
    session.flush()  # pending ORM writes (a delete, the MPI's rows) first: the read below must see them
    connection = session.connection()
    found = _current_rows(connection, resources)
    keys = dict.fromkeys((r["resourceType"], str(r["id"])) for r in resources)
    new_keys = [key for key in keys if key not in found]
    pks = dict(zip(new_keys, allocate_pks(connection, len(new_keys)), strict=True))
    shared = [key for key in keys if key[0] in contributions.SHARED]
    merging = _Merging(message_id, order, session, [k for k in shared if k in found]) if message_id else None
    if merging is not None and cancels:
        for cancel in cancels:
            rtype, _, rid = str(cancel.get("resource", "")).partition("/")
            merging.cancels.setdefault((rtype, rid), set()).add(str(cancel.get("event", "")))
    if merging is not None and replaces:
        for replace in replaces:
            rtype, _, rid = str(replace.get("resource", "")).partition("/")
            merging.replaces.setdefault((rtype, rid), set()).add(str(replace.get("participant", "")))
    conflicts: list[dict[str, str]] = []
    out: list[Written] = []
    inserts: list[bulk.Row] = []
    updates: list[bulk.Row] = []
    versions: list[bulk.Row] = []
    changes: list[Change] = []
    for resource in resources:
        rtype = resource["resourceType"]
        rid = str(resource["id"])
        body = _strip_meta(resource)
        current = found.get((rtype, rid))
        old = current.stored if current is not None else None
        moved: frozenset[str] | None = None
        if merging is not None and old is not None:
            mine = contributions.patients_of(body)
            theirs = contributions.patients_of(old) if mine else frozenset()
            if mine and theirs and mine.isdisjoint(theirs):
                if not accept_patient_change:
                    conflicts.append(
                        {
                            "resource": f"{rtype}/{rid}",
                            "stored_patient": min(theirs),
                            "message_patient": min(mine),
                        }
                    )
                    continue
                moved = mine
        if conflicts:
            continue  # nothing is written: only the other conflicts are looked for
        if merging is not None and rtype in contributions.SHARED:
            body = merging.add(rtype, rid, body, old, moved)
        if current is not None and old is not None and _strip_meta(old) == body:
            out.append(Written(rtype, rid, current.version_id, False))
            continue
        version = current.version_id + 1 if current is not None else 1
        stored, content = _stored(rtype, rid, body, version, now)
        patient_id = _patient_of(stored)
        if current is None:
            pk = pks[(rtype, rid)]
            inserts.append((pk, rtype, rid, version, now, False, patient_id, content))
        else:  # inserts run first, so a resource new in this call may be updated later in it
            pk = current.pk
            updates.append((version, now, False, patient_id, content, rtype, rid))
        found[(rtype, rid)] = _Current(pk, version, stored)
        versions.append((rtype, rid, version, now, False, message_id, content))
        changes.append((rtype, rid, pk, stored, old))
        out.append(Written(rtype, rid, version, True))
    if conflicts:
        raise PatientConflict(conflicts)
    if merging is not None:
        merging.write()
    elif shared:  # a write that is no message's (the FHIR API): it is what is stored from now on
        contributions.write(session, [], [], [k for k in shared if k in found])
    resource_table = Resource.__table__
    bulk.insert_rows(connection, resource_table, _RESOURCE_COLUMNS, inserts)  # type: ignore[arg-type]
    bulk.execute_many(connection, resource_table, _UPDATE, _UPDATE_COLUMNS, updates)  # type: ignore[arg-type]
    version_table: Table = ResourceVersion.__table__  # type: ignore[assignment]
    held = deferred.held(session)
    if held is not None:  # a pipeline batch: written with its other messages' versions at its end
        held.hold(version_table, _VERSION_COLUMNS, versions)
    else:
        bulk.insert_rows(connection, version_table, _VERSION_COLUMNS, versions)
    _expire_entities(session, [(row[5], row[6]) for row in updates])
    if changes:
        for hook in _write_hooks:
            hook(session, changes)
    return out


class _Merging:
    """The contributions of one call's shared resources: read once, merged per resource, written at the
    end. A message's contribution that the stored resource already holds (the sending facility's
    Organization in every message) is not kept: the contributions stay few, and the merge is the same."""

    def __init__(self, message_id: int, order: str | None, session: Session, existing: list[_Key]):
        self.message_id = message_id
        self.sort_key = contributions.sort_key(message_id, order)
        self.session = session
        self.stored = contributions.read(session, existing)  # as in the database
        self.state: dict[_Key, contributions.Contributions] = {}  # as merged in this call
        self.keep: set[_Key] = set()  # the keys whose contributions are written
        self.cancels: dict[_Key, set[str]] = {}  # the events this message cancels, per resource
        self.replaces: dict[_Key, set[str]] = {}  # the participant types this message replaces

    def add(
        self,
        rtype: str,
        rid: str,
        body: dict[str, Any],
        old: dict[str, Any] | None,
        moved: frozenset[str] | None,
    ) -> dict[str, Any]:
        """The resource to store for this message's ``body``; ``old``: the live stored version."""
        key = (rtype, rid)
        state = self.state.get(key)
        if state is None:
            if old is None:  # new, or deleted: nothing earlier counts
                state = {}
            else:
                state = dict(self.stored.get(key) or {})
                if not state:  # stored before contributions were kept: that content comes first
                    state[contributions.BASELINE] = (contributions.sort_key(0, None), _strip_meta(old))
            state.pop(self.message_id, None)  # a replay: this message's contribution is replaced
            self.state[key] = state
        elif self.message_id in state:  # a repeat in this message: one contribution
            body = contributions.merge(state[self.message_id][1], body)
        if moved is not None:
            for mid in [m for m, (_, c) in state.items() if contributions.patients_of(c).isdisjoint(moved)]:
                if mid != self.message_id:
                    del state[mid]
            self.keep.add(key)
        state[self.message_id] = (self.sort_key, body)
        replaced = self.replaces.get(key)
        if replaced and contributions.REPLACES not in body:
            body = {**body, contributions.REPLACES: sorted(replaced)}
            state[self.message_id] = (self.sort_key, body)
        events = self.cancels.get(key)
        if events and contributions.WITHDRAWS not in body:
            withdrawn = contributions.cancelled(self.session, state, self.message_id, events)
            if withdrawn is not None:
                state[self.message_id] = (self.sort_key, {**body, contributions.WITHDRAWS: [withdrawn]})
        result = contributions.merged_state(state)
        if old is None or self.message_id in self.stored.get(key, {}) or _strip_meta(old) != result:
            self.keep.add(key)
        return result

    def write(self) -> None:
        replaced: list[tuple[str, str, int]] = []
        rows: list[tuple[str, str, int, str, dict[str, Any]]] = []
        for key in self.keep:
            stored = self.stored.get(key) or {}
            final = self.state[key]
            replaced.extend((*key, m) for m in stored if m == self.message_id or m not in final)
            rows.extend(
                (*key, m, k, c) for m, (k, c) in final.items() if m not in stored or m == self.message_id
            )
        contributions.write(self.session, replaced, rows)


_Key = tuple[str, str]


def _current_rows(connection: Connection, resources: list[dict[str, Any]]) -> dict[tuple[str, str], _Current]:
    """The current row of each resource that has one, in one query (two plain INs: a row-value IN makes
    SQLite scan the whole primary-key index); a key it does not return is a new resource."""
    types = sorted({str(r["resourceType"]) for r in resources})
    ids = sorted({str(r["id"]) for r in resources})
    sql = (
        "SELECT resource_type, id, pk, version_id, deleted, content FROM resource"
        f" WHERE resource_type IN ({bulk.marks(len(types))}) AND id IN ({bulk.marks(len(ids))})"
    )
    rows = connection.exec_driver_sql(bulk.placeholders(connection.dialect, sql), (*types, *ids))
    return {
        (rtype, rid): _Current(pk, version, None if deleted else orjson.loads(content))
        for rtype, rid, pk, version, deleted, content in rows
    }


def allocate_pks(connection: Connection, count: int) -> list[int]:
    """``count`` new ``resource.pk`` values, increasing, in one statement. PostgreSQL draws them from the
    column's sequence (never handed out twice, whatever rolls back). SQLite takes the ones after the
    largest pk: a writing transaction holds the database's write lock from its BEGIN IMMEDIATE
    (``hub.db.make_engine``), so no other writer can take them before this one commits, and since no
    resource row is ever removed the largest pk is never given out again."""
    if count == 0:
        return []
    if connection.dialect.name == "postgresql":
        sql = bulk.placeholders(
            connection.dialect, "SELECT nextval('resource_pk_seq') FROM generate_series(1, ?)"
        )
        return sorted(pk for (pk,) in connection.exec_driver_sql(sql, (count,)))
    top = connection.exec_driver_sql("SELECT max(pk) FROM resource").scalar() or 0
    return list(range(top + 1, top + 1 + count))


def _expire_entities(session: Session, keys: list[tuple[str, str]]) -> None:
    """Rows changed behind the ORM's back: an entity loaded earlier in the transaction (``session.get``
    in the MPI or a conditional write) reloads on its next use instead of showing the old version."""
    if not keys or not session.identity_map:
        return
    for key in keys:
        entity = session.identity_map.get(identity_key(Resource, key))
        if entity is not None:
            session.expire(entity)


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
        hook(session, [(resource_type, rid, current.pk, None, orjson.loads(current.content))])
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
