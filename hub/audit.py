"""The audit trail: an AuditEvent (shaped after IHE BALP) for every access to the hub — reads, searches,
``$everything``, writes, deletes, operator and MPI actions, statistics and exports, token requests, and
every refusal (401, 403, 429) — with who (subject, role, client, issuer), what (resource and patient),
when, from where and the outcome.

**Durable before the answer leaves, written off the request path.** :class:`AuditMiddleware` (plain ASGI)
hands each request to :class:`AuditTrail` as its response starts: the event is appended to a local
:class:`Journal` (one line, ``fdatasync``'ed unless ``HUB_AUDIT_JOURNAL_SYNC`` is off) before the status
line is passed on, then queued; the writer thread appends what gathered in ``HUB_AUDIT_FLUSH_MS`` to the
chain in one transaction and removes the journal segment those events were in. A process that was killed
leaves its segments behind; the next one to start appends what of them is not in the trail yet
(:meth:`AuditTrail.recover`). Successful HL7 v2 intake is not repeated here: every accepted message is
already its own row (``inbound_message``); refused intake is audited.

**Every patient of a search.** A search or ``$everything`` notes the rows it answered with
(:func:`note_results`: Patient ids, and the ``resource.pk`` of the others); the writer looks up their
patients in one query per batch and records one event per patient (IHE BALP ``PatientQuery``, whose
patient entity is 1..1), so a patient's access history finds every search that returned its data.

**Append-only, hash-chained.** Each row's ``hash`` is the SHA-256 of the previous row's hash and the
row's own fields; the chain's head (last id and hash) is a row of ``audit_head``, updated in the same
transaction (which also serialises writers of several processes). :func:`verify` (``hub audit verify``)
recomputes the chain and names the first row that was edited, removed or added out of turn.

**Searched** by admins at ``GET /fhir/AuditEvent`` (``patient``, ``agent``, ``date``, ``type``/``subtype``,
``outcome``, ``entity``, ``purpose``, ``_count``); ``patient`` covers every id of the person (golden record
and sources), so "who read my record" is one query.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import Engine, and_, insert, or_, select, text
from sqlalchemy.orm import Session

from hub.auth import Principal, require_permission
from hub.errors import BadRequest, NotFound
from hub.store.models import AuditHead, AuditRecord, Resource

log = logging.getLogger(__name__)

GENESIS = "0" * 64
_AUDIT = AuditRecord

# Paths that hold no patient data and need no token: not audited.
PUBLIC = ("/fhir/metadata", "/.well-known/", "/healthz", "/docs", "/openapi.json", "/mpi/review/page")


@dataclass(slots=True)
class Event:
    """One access, as the middleware saw it (the writer adds id and hashes)."""

    recorded: datetime
    kind: str
    action: str
    outcome: str
    status: int
    agent: str = ""
    role: str = ""
    client: str = ""
    issuer: str = ""
    address: str = ""
    method: str = ""
    path: str = ""
    query: str = ""
    entity_type: str = ""
    entity_id: str = ""
    patient_id: str | None = None
    purpose: str = ""
    reason: str = ""
    resolve_patient: bool = field(default=False, repr=False)
    # What a search answered with (note_results): Patient ids, and the resource.pk of the other rows whose
    # patients the writer looks up. Not stored as such: the event becomes one row per patient.
    result_patients: tuple[str, ...] = field(default=(), repr=False)
    result_pks: tuple[int, ...] = field(default=(), repr=False)


_FIELDS = (
    "recorded",
    "kind",
    "action",
    "outcome",
    "status",
    "agent",
    "role",
    "client",
    "issuer",
    "address",
    "method",
    "path",
    "query",
    "entity_type",
    "entity_id",
    "patient_id",
    "purpose",
    "reason",
)


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def row_hash(prev_hash: str, row_id: int, values: dict[str, Any]) -> str:
    """The chain link of one row: SHA-256 over the previous hash, the row's id and its fields."""
    canon = [row_id] + [
        _utc(values[f]).isoformat(timespec="microseconds") if f == "recorded" else values[f] for f in _FIELDS
    ]
    return hashlib.sha256(prev_hash.encode() + orjson.dumps(canon)).hexdigest()


def append(engine: Engine, events: Sequence[Event]) -> list[int]:
    """Append ``events`` to the chain in one transaction; their ids."""
    if not events:
        return []
    from hub.db import write_turn

    with write_turn(engine), engine.begin() as conn:
        _resolve_patients(conn, events)
        events = _per_patient(conn, events)
        # The UPDATE first: it takes the head's row lock (PostgreSQL) or the write lock (SQLite) before the
        # head is read, so two writers never chain onto the same row.
        conn.execute(text("UPDATE audit_head SET last_id = last_id WHERE id = 1"))
        head = conn.execute(select(AuditHead.last_id, AuditHead.last_hash).where(AuditHead.id == 1)).first()
        if head is None:
            # The chain's first append: two writers may both find no head; the loser waits for the
            # winner's row (PostgreSQL: ON CONFLICT) and chains onto it.
            conn.execute(
                text(
                    "INSERT INTO audit_head (id, last_id, last_hash) VALUES (1, 0, :h) ON CONFLICT (id) DO NOTHING"
                ),
                {"h": GENESIS},
            )
            conn.execute(text("UPDATE audit_head SET last_id = last_id WHERE id = 1"))
            head = conn.execute(
                select(AuditHead.last_id, AuditHead.last_hash).where(AuditHead.id == 1)
            ).first()
            assert head is not None
        last_id, last_hash = int(head.last_id), str(head.last_hash)
        rows = []
        ids = []
        for ev in events:
            values = {f: getattr(ev, f) for f in _FIELDS}
            values["recorded"] = _utc(values["recorded"])
            last_id += 1
            digest = row_hash(last_hash, last_id, values)
            rows.append({"id": last_id, **values, "prev_hash": last_hash, "hash": digest})
            ids.append(last_id)
            last_hash = digest
        conn.execute(insert(_AUDIT), rows)
        conn.execute(
            text("UPDATE audit_head SET last_id = :i, last_hash = :h WHERE id = 1"),
            {"i": last_id, "h": last_hash},
        )
    return ids


def _resolve_patients(conn: Any, events: Sequence[Event]) -> None:
    """The patient of each read resource that is not a Patient (its compartment), looked up here, on the
    writer's thread, rather than on the request's."""
    wanted = {(e.entity_type, e.entity_id) for e in events if e.resolve_patient and e.entity_id}
    if not wanted:
        return
    found: dict[tuple[str, str], str | None] = {}
    keys = list(wanted)
    for i in range(0, len(keys), 200):
        chunk = keys[i : i + 200]
        cond = or_(*(and_(Resource.resource_type == t, Resource.id == r) for t, r in chunk))
        for rtype, rid, pid in conn.execute(
            select(Resource.resource_type, Resource.id, Resource.patient_id).where(cond)
        ):
            found[(rtype, rid)] = pid
    for e in events:
        if e.resolve_patient:
            e.patient_id = found.get((e.entity_type, e.entity_id))


def _per_patient(conn: Any, events: Sequence[Event]) -> list[Event]:
    """A search's event as one event per patient whose data it returned (BALP ``PatientQuery``): the
    patients of the noted rows, looked up in one query per 500 rows of the whole batch."""
    pks = sorted({pk for e in events for pk in e.result_pks})
    owner: dict[int, str] = {}
    for i in range(0, len(pks), 500):
        chunk = pks[i : i + 500]
        owner.update(
            conn.execute(
                select(Resource.pk, Resource.patient_id).where(
                    Resource.pk.in_(chunk), Resource.patient_id.is_not(None)
                )
            ).all()
        )
    out: list[Event] = []
    for e in events:
        if not (e.result_pks or e.result_patients):
            out.append(e)
            continue
        ids = set(e.result_patients)
        ids.update(owner[pk] for pk in e.result_pks if pk in owner)
        if e.patient_id:
            ids.add(e.patient_id)
        if not ids:
            out.append(dataclasses.replace(e, result_pks=(), result_patients=()))
            continue
        out.extend(
            dataclasses.replace(e, patient_id=pid[:64], result_pks=(), result_patients=())
            for pid in sorted(ids)
        )
    return out


@dataclass(frozen=True, slots=True)
class Broken:
    row_id: int
    problem: str


def verify(engine: Engine, chunk: int = 5000) -> tuple[int, Broken | None]:
    """Walk the chain in id order: (rows checked, the first broken link or None)."""
    prev_hash, expect_id, checked = GENESIS, 1, 0
    cols = [
        AuditRecord.id,
        AuditRecord.prev_hash,
        AuditRecord.hash,
        *(getattr(AuditRecord, f) for f in _FIELDS),
    ]
    with engine.connect() as conn:
        after = 0
        while True:
            batch = conn.execute(
                select(*cols).where(AuditRecord.id > after).order_by(AuditRecord.id).limit(chunk)
            ).all()
            for row in batch:
                rid = int(row.id)
                if rid != expect_id:
                    return checked, Broken(expect_id, f"row {expect_id} is missing (the next row is {rid})")
                if row.prev_hash != prev_hash:
                    return checked, Broken(
                        rid, f"row {rid} does not follow row {rid - 1} (prev_hash differs)"
                    )
                values = {f: getattr(row, f) for f in _FIELDS}
                if row_hash(prev_hash, rid, values) != row.hash:
                    return checked, Broken(rid, f"row {rid} was changed after it was written (hash differs)")
                prev_hash, expect_id, checked = row.hash, rid + 1, checked + 1
            if len(batch) < chunk:
                break
            after = int(batch[-1].id)
        head = conn.execute(select(AuditHead.last_id, AuditHead.last_hash).where(AuditHead.id == 1)).first()
    last_id = expect_id - 1
    if head is not None and (int(head.last_id) != last_id or head.last_hash != prev_hash):
        if int(head.last_id) > last_id:
            return checked, Broken(
                last_id + 1, f"row {last_id + 1} is missing (the chain's head is row {head.last_id})"
            )
        return checked, Broken(last_id, f"the chain's head does not match row {last_id}")
    return checked, None


class Journal:
    """Append-only local files of the access events not yet in the trail: one JSON line per event,
    written (and ``fdatasync``'ed when ``sync``) before the response leaves. The writer seals the current
    segment each cycle (a fresh one takes the new events) and removes it once its events are committed.
    Each segment is ``flock``'ed by the process that writes it, so a starting process replays only the
    segments of processes that are gone."""

    SUFFIX = ".audit.jsonl"

    def __init__(self, directory: Path, sync: bool = True) -> None:
        self.dir = Path(directory)
        self.sync = sync
        self.dir.mkdir(parents=True, exist_ok=True)
        self._fd = -1
        self.path: Path | None = None
        self._dirty = False
        self._open()

    def _open(self) -> None:
        path = self.dir / f"{os.getpid()}-{uuid.uuid4().hex}{self.SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if self.sync:  # the new file's name is durable too
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        self._fd, self.path, self._dirty = fd, path, False

    def write(self, event: Event) -> None:
        os.write(self._fd, orjson.dumps(event) + b"\n")
        if self.sync:
            os.fdatasync(self._fd)
        self._dirty = True

    def seal(self) -> tuple[int, Path] | None:
        """The current segment, if anything was written to it, replaced by a fresh one."""
        if not self._dirty or self.path is None:
            return None
        sealed = (self._fd, self.path)
        self._open()
        return sealed

    @staticmethod
    def remove(sealed: tuple[int, Path] | None, *, unlink: bool = True) -> None:
        if sealed is None:
            return
        fd, path = sealed
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        os.close(fd)  # releases its lock: left in place, the next start replays it

    def close(self) -> None:
        if self.path is not None:
            self.remove((self._fd, self.path), unlink=not self._dirty)
            self.path = None

    def orphans(self) -> Iterator[tuple[Path, list[Event]]]:
        """The segments no living process holds, with their events (a torn last line is skipped); each
        is locked while the caller handles it and removed when the caller resumes."""
        for path in sorted(self.dir.glob(f"*{self.SUFFIX}")):
            if path == self.path:
                continue
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a living process's
                with os.fdopen(os.dup(fd), "rb") as fh:
                    data = fh.read()
                events = []
                for line in data.split(b"\n"):
                    if not line:
                        continue
                    try:
                        events.append(_event_of(orjson.loads(line)))
                    except (orjson.JSONDecodeError, TypeError, ValueError):
                        log.warning("audit journal %s: an unreadable line was skipped", path.name)
                yield path, events
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            finally:
                os.close(fd)


def _event_of(raw: dict[str, Any]) -> Event:
    raw["recorded"] = datetime.fromisoformat(raw["recorded"])
    raw["result_patients"] = tuple(raw.get("result_patients") or ())
    raw["result_pks"] = tuple(raw.get("result_pks") or ())
    return Event(**raw)


def _missing(engine: Engine, events: list[Event]) -> list[Event]:
    """The journal's events the trail does not hold yet (a crash may come after the commit and before
    the segment's removal): matched on the instant, the request and the agent."""
    out = []
    tick = timedelta(milliseconds=1)
    with engine.connect() as conn:
        for e in events:
            at = _utc(e.recorded)
            found = conn.execute(
                select(AuditRecord.id)
                .where(
                    AuditRecord.recorded >= at - tick,
                    AuditRecord.recorded <= at + tick,
                    AuditRecord.method == e.method,
                    AuditRecord.path == e.path,
                    AuditRecord.agent == e.agent,
                    AuditRecord.status == e.status,
                )
                .limit(1)
            ).first()
            if found is None:
                out.append(e)
    return out


class AuditTrail:
    """The background writer: :meth:`record` journals and queues, the writer thread appends in batches."""

    def __init__(self, engine: Engine | str, flush_ms: float = 200.0, journal: Journal | None = None) -> None:
        # An engine (the running hub's), or a URL: then each batch opens an engine of its own and disposes
        # of it (an app served without its lifespan, e.g. `uvicorn --lifespan off`, has none to share).
        self.engine = engine
        self.flush_s = max(flush_ms, 1.0) / 1000.0
        self.journal = journal
        self._queue: queue.SimpleQueue[Event | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._jlock = threading.Lock()  # journal line and queue order are one: a seal drains the queue
        self._thread: threading.Thread | None = None
        self._pending = 0
        self._idle = threading.Condition()
        self.written = 0
        self.failures = 0
        self.recovered = 0

    def record(self, event: Event) -> None:
        with self._jlock:
            if self.journal is not None:
                try:
                    self.journal.write(event)
                except OSError:
                    log.exception("could not journal an audit event (it is queued all the same)")
            with self._idle:
                self._pending += 1
            self._queue.put(event)
        if self._thread is None:
            self._start()

    def recover(self) -> int:
        """Append what the journals of killed processes hold and the trail does not (at start)."""
        if self.journal is None:
            return 0
        n = 0
        for path, events in self.journal.orphans():
            missing: list[Event] = self._with_engine(lambda engine, ev=events: _missing(engine, ev))
            for i in range(0, len(missing), 2000):
                chunk = missing[i : i + 2000]
                self._with_engine(lambda engine, c=chunk: append(engine, c))
            if missing:
                log.warning(
                    "audit: %d events of an interrupted process appended from %s", len(missing), path.name
                )
            n += len(missing)
        self.recovered += n
        return n

    def _with_engine(self, fn: Any) -> Any:
        if isinstance(self.engine, str):
            from hub.db import make_engine

            engine = make_engine(self.engine)
            try:
                return fn(engine)
            finally:
                engine.dispose()
        return fn(self.engine)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hub-audit", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            time.sleep(self.flush_s)
            batch = [first]
            stop = False
            with self._jlock:
                sealed = self.journal.seal() if self.journal is not None else None
                while True:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
            ok = True
            for i in range(0, len(batch), 2000):
                ok = self._write(batch[i : i + 2000]) and ok
            # Written: the segment goes. Not written (the store was down): it stays for the next start.
            Journal.remove(sealed, unlink=ok)
            with self._idle:
                self._pending -= len(batch)
                self._idle.notify_all()
            if stop:
                return

    def _write(self, batch: list[Event]) -> bool:
        ok = False
        for attempt in range(5):
            try:
                self._with_engine(lambda engine: append(engine, batch))
                self.written += len(batch)
                ok = True
                break
            except Exception:  # the store is down: keep the events and try again, then say so
                if attempt == 4:
                    self.failures += len(batch)
                    log.exception("could not write %d audit events", len(batch))
                else:
                    time.sleep(0.2 * (attempt + 1))
        return ok

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until everything recorded so far is written."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending > 0 and time.monotonic() < deadline:
                self._idle.wait(timeout=0.05)

    def stop(self) -> None:
        self.flush()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)
            self._thread = None
        if self.journal is not None and self._pending == 0:
            self.journal.close()


def trail_of(app: Any) -> AuditTrail:
    trail: AuditTrail | None = getattr(app.state, "audit", None)
    if trail is None:
        with _TRAIL_LOCK:
            trail = getattr(app.state, "audit", None)
            if trail is None:
                runtime = getattr(app.state, "runtime", None)
                settings = app.state.settings
                engine: Engine | str = runtime.engine if runtime is not None else settings.sqlalchemy_url
                journal = Journal(Path(settings.var_dir) / "audit-journal", settings.audit_journal_sync)
                trail = AuditTrail(engine, settings.audit_flush_ms, journal)
                try:
                    trail.recover()
                except Exception:  # the store is down: the segments stay for the next start
                    log.exception("could not replay the audit journal")
                app.state.audit = trail
    return trail


_TRAIL_LOCK = threading.Lock()


# --- what a request was ---------------------------------------------------------------------------------

_FHIR_SEARCH_PATIENT = ("patient", "subject", "beneficiary")


def _patient_param(params: list[tuple[str, str]], rtype: str) -> str | None:
    for key, value in params:
        name = key.split(":", 1)[0]
        if name in _FHIR_SEARCH_PATIENT and value:
            first = value.split(",", 1)[0]
            if "/" in first and not first.startswith("Patient/"):
                continue
            return first.rsplit("/", 1)[-1]
        if rtype == "Patient" and name == "_id" and value:
            return value.split(",", 1)[0]
    return None


def classify(method: str, path: str, query: str) -> tuple[str, str, str, str, str | None, bool]:
    """(kind, action, entity type, entity id, patient id, look the patient up) of one request."""
    parts = [p for p in path.split("/") if p]
    params = parse_qsl(query, keep_blank_values=True) if query else []
    if not parts:
        return "rest", "E", "", "", None, False
    head = parts[0]
    if head == "fhir":
        p = parts[1:]
        if not p:
            return (
                ("transaction", "E", "Bundle", "", None, False)
                if method == "POST"
                else ("rest", "E", "", "", None, False)
            )
        rtype = p[0]
        if rtype == "_history":
            return "history-system", "R", "", "", None, False
        if len(p) == 1:
            if method == "GET":
                return "search-type", "E", rtype, "", _patient_param(params, rtype), False
            if method == "POST":
                return "create", "C", rtype, "", None, False
            if method == "PUT":
                return "update", "U", rtype, "", None, False
            if method == "DELETE":
                return "delete", "D", rtype, "", None, False
        if p[1].startswith("$"):
            return "operation", "E", rtype, "", None, False  # $match, $ihe-pix
        rid = p[1]
        if rid == "_search":
            return "search-type", "E", rtype, "", _patient_param(params, rtype), False
        if rid == "_history":
            return "history-type", "R", rtype, "", None, False
        is_patient = rtype == "Patient"
        if len(p) == 2:
            action = {"GET": "R", "PUT": "U", "DELETE": "D"}.get(method, "E")
            kind = {"R": "read", "U": "update", "D": "delete"}.get(action, "operation")
            return kind, action, rtype, rid, rid if is_patient else None, not is_patient and action == "R"
        if p[2] == "$everything" and is_patient:
            return "everything", "E", "Patient", rid, rid, False
        if p[2] == "_history":
            kind = "vread" if len(p) > 3 else "history-instance"
            return kind, "R", rtype, rid, rid if is_patient else None, not is_patient
        if is_patient:  # compartment search Patient/{id}/{type}
            return "search-compartment", "E", p[2], "", rid, False
        return "operation", "E", rtype, rid, None, False
    if head == "hl7":
        return (
            ("intake", "C", "", "", None, False)
            if parts[1:2] == ["v2"]
            else ("operator", "R", "", "", None, False)
        )
    if head == "mpi":
        return "mpi", "R" if method == "GET" else "U", "", "", None, False
    if head == "auth":
        return ("break-glass" if "break-glass" in parts else "login"), "E", "", "", None, False
    return head, "E" if method != "GET" else "R", "", "", None, False


def note_results(request: Any, *row_lists: Iterable[Any]) -> None:
    """Note the rows a search or ``$everything`` answered with (``hub.fhir_api.search.Row``): the event
    becomes one per patient whose data they hold. A loop over the page, no query: the writer looks the
    patients of non-Patient rows up by ``pk``."""
    state = request.state
    noted = getattr(state, "audit_results", None)
    if noted is None:
        noted = state.audit_results = ([], [])
    patients, pks = noted
    for rows in row_lists:
        for r in rows:
            if r.resource_type == "Patient":
                patients.append(r.id)
            else:
                pks.append(r.pk)


def _outcome(status: int) -> str:
    if status < 400:
        return "0"
    return "8" if status >= 500 else "4"


class AuditMiddleware:
    """Plain ASGI (no per-request task or copy of the body): records each request as its response starts,
    so the event is journaled before the client sees an answer."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith(PUBLIC):
            await self.app(scope, receive, send)
            return
        recorded = [False]

        async def send_audited(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start" and not recorded[0]:
                recorded[0] = True
                with contextlib.suppress(Exception):  # auditing must never turn an answer into an error
                    self._record(scope, int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_audited)
        finally:
            if not recorded[0]:  # no answer was started (the server answers 500)
                with contextlib.suppress(Exception):
                    self._record(scope, 500)

    def _record(self, scope: dict[str, Any], status: int) -> None:
        state = scope.get("state") or {}
        path: str = scope["path"]
        method: str = scope["method"]
        if path == "/hl7/v2" and status < 400:
            return  # the accepted message is its own record
        query = scope.get("query_string", b"").decode("latin-1")
        kind, action, etype, eid, patient, resolve = classify(method, path, query)
        kind = state.get("audit_kind") or kind
        principal: Principal | None = state.get("principal")
        client = scope.get("client")
        ev = Event(
            recorded=datetime.now(UTC),
            kind=kind,
            action=action,
            outcome=_outcome(status),
            status=status,
            address=str(client[0]) if client else "",
            method=method,
            path=path[:500],
            query=query,
            entity_type=etype[:64],
            entity_id=eid[:64],
            patient_id=patient[:64] if patient else None,
            resolve_patient=resolve and status < 400,
        )
        if principal is not None:
            ev.agent, ev.role, ev.issuer = principal.subject[:200], principal.role, principal.issuer[:300]
            ev.client = (principal.client_id or "")[:200]
            if principal.emergency:
                ev.purpose, ev.reason = "BTG", principal.emergency
        elif state.get("audit_agent"):
            ev.agent = str(state["audit_agent"])[:200]
        results = state.get("audit_results")
        if results is not None and status < 400:
            ev.result_patients, ev.result_pks = tuple(results[0]), tuple(results[1])
        if state.get("audit_patient"):  # a break-the-glass declaration
            ev.patient_id = str(state["audit_patient"])[:64]
            ev.purpose, ev.reason = "BTG", str(state.get("audit_reason") or "")
        trail_of(scope["app"]).record(ev)


# --- AuditEvent resources and the search ----------------------------------------------------------------

_SUBTYPE_SYSTEM = "http://hl7.org/fhir/restful-interaction"
_HUB_SUBTYPES = "https://hub.kemkes.go.id/fhir/CodeSystem/audit-kind"
_REST_KINDS = {
    "read",
    "vread",
    "update",
    "delete",
    "create",
    "search-type",
    "history-instance",
    "history-type",
    "history-system",
    "transaction",
    "operation",
}


def _iso(t: datetime) -> str:
    return _utc(t).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_fhir(row: Any) -> dict[str, Any]:
    """An audit row as an R4 AuditEvent (IHE BALP's shape: rest type, interaction subtype, agents,
    source, entities for the patient, the resource and the query)."""
    if row.kind in _REST_KINDS:
        subtype = {"system": _SUBTYPE_SYSTEM, "code": row.kind}
    elif row.kind in ("search-compartment", "everything"):
        subtype = {
            "system": _SUBTYPE_SYSTEM,
            "code": "search-type" if row.kind != "everything" else "operation",
        }
    else:
        subtype = {"system": _HUB_SUBTYPES, "code": row.kind}
    who: dict[str, Any] = {"display": f"{row.role}:{row.agent}" if row.agent else "anonymous"}
    if row.agent:
        who["identifier"] = {"system": row.issuer or "hub", "value": row.agent}
    agents: list[dict[str, Any]] = [
        {
            "type": {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                        "code": "IRCP",
                        "display": "information recipient",
                    }
                ]
            },
            "who": who,
            "requestor": True,
            **({"role": [{"text": row.role}]} if row.role else {}),
            **({"network": {"address": row.address, "type": "2"}} if row.address else {}),
            **(
                {
                    "purposeOfUse": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                                    "code": "BTG",
                                    "display": "break the glass",
                                }
                            ]
                        }
                    ]
                }
                if row.purpose == "BTG"
                else {}
            ),
        }
    ]
    if row.client:
        agents.append(
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://dicom.nema.org/resources/ontology/DCM",
                            "code": "110150",
                            "display": "Application",
                        }
                    ]
                },
                "who": {"identifier": {"value": row.client}},
                "requestor": False,
            }
        )
    entities: list[dict[str, Any]] = []
    if row.patient_id:
        entities.append(
            {
                "what": {"reference": f"Patient/{row.patient_id}"},
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1"},
                "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1"},
            }
        )
    if (
        row.entity_type
        and row.entity_id
        and not (row.entity_type == "Patient" and row.entity_id == row.patient_id)
    ):
        entities.append(
            {
                "what": {"reference": f"{row.entity_type}/{row.entity_id}"},
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"},
                "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "4"},
            }
        )
    if row.query or row.action == "E":
        entities.append(
            {
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"},
                "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "24"},
                "description": f"{row.method} {row.path}",
                **({"query": base64.b64encode(row.query.encode()).decode()} if row.query else {}),
            }
        )
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": str(row.id),
        "type": {
            "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
            "code": "rest",
            "display": "RESTful Operation",
        },
        "subtype": [subtype],
        "action": row.action,
        "recorded": _iso(row.recorded),
        "outcome": row.outcome,
        "outcomeDesc": f"HTTP {row.status}"
        + (f"; emergency access: {row.reason}" if row.purpose == "BTG" else "")
        + (f"; {row.reason}" if row.kind == "export" and row.reason else ""),
        "agent": agents,
        "source": {
            "observer": {"display": "hub"},
            "type": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                    "code": "4",
                    "display": "Application Server",
                }
            ],
        },
    }
    if row.purpose == "BTG":
        event["purposeOfEvent"] = [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                        "code": "BTG",
                        "display": "break the glass",
                    }
                ]
            }
        ]
    if entities:
        event["entity"] = entities
    return event


router = APIRouter(prefix="/fhir", tags=["audit"])

_PREFIXES = ("ge", "le", "gt", "lt", "eq")


def _date_clauses(values: Iterable[str]) -> list[Any]:
    from hub.store.search_params import date_range

    out = []
    for raw in values:
        prefix, value = (raw[:2], raw[2:]) if raw[:2] in _PREFIXES else ("eq", raw)
        rng = date_range(value)
        if rng is None:
            raise BadRequest(f"date: {raw!r} is not a FHIR date")
        lo, hi = rng
        col = AuditRecord.recorded
        out.append(
            {
                "ge": col >= lo,
                "gt": col > hi,
                "le": col <= hi,
                "lt": col < lo,
                "eq": and_(col >= lo, col <= hi),
            }[prefix]
        )
    return out


def _linked(session: Session, patient: str) -> list[str]:
    from hub.mpi.service import linked_patient_ids

    return linked_patient_ids(session, patient.rsplit("/", 1)[-1])


def search_rows(session: Session, params: list[tuple[str, str]]) -> tuple[list[Any], int | None]:
    stmt = select(AuditRecord)
    count = 50
    before: int | None = None
    for key, value in params:
        name = key.split(":", 1)[0]
        values = [v for v in value.split(",") if v]
        if name == "patient":
            ids = sorted({i for v in values for i in _linked(session, v)})
            stmt = stmt.where(AuditRecord.patient_id.in_(ids))
        elif name == "agent":
            stmt = stmt.where(or_(AuditRecord.agent.in_(values), AuditRecord.client.in_(values)))
        elif name == "date":
            for clause in _date_clauses([value]):
                stmt = stmt.where(clause)
        elif name in ("type", "subtype"):
            stmt = stmt.where(AuditRecord.kind.in_([v.rsplit("|", 1)[-1] for v in values]))
        elif name == "action":
            stmt = stmt.where(AuditRecord.action.in_(values))
        elif name == "outcome":
            stmt = stmt.where(AuditRecord.outcome.in_(values))
        elif name == "entity":
            conds = [
                and_(AuditRecord.entity_type == t, AuditRecord.entity_id == i)
                for t, _, i in (v.partition("/") for v in values)
            ]
            stmt = stmt.where(or_(*conds))
        elif name == "purpose":
            stmt = stmt.where(AuditRecord.purpose.in_([v.rsplit("|", 1)[-1] for v in values]))
        elif name == "address":
            stmt = stmt.where(AuditRecord.address.in_(values))
        elif name == "_count":
            try:
                count = max(1, min(int(value), 1000))
            except ValueError as exc:
                raise BadRequest(f"_count must be an integer, not {value!r}") from exc
        elif name == "_before":
            try:
                before = int(value)
            except ValueError as exc:
                raise BadRequest(f"_before must be an AuditEvent id, not {value!r}") from exc
        else:
            raise BadRequest(f"AuditEvent has no search parameter {key!r} here")
    if before is not None:
        stmt = stmt.where(AuditRecord.id < before)
    rows = list(session.scalars(stmt.order_by(AuditRecord.id.desc()).limit(count + 1)))
    next_before = rows[count - 1].id if len(rows) > count else None
    return rows[:count], next_before


def _fhir(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/fhir+json")


@router.get("/AuditEvent", summary="Search the audit trail (admins)")
def search_audit(request: Request, principal: Principal = Depends(require_permission("audit"))) -> Response:
    from hub.fhir_api.sessions import read_scope

    trail_of(request.app).flush()
    params = list(request.query_params.multi_items())
    with read_scope(request) as session:
        rows, next_before = search_rows(session, params)
        events = [to_fhir(r) for r in rows]
    base = str(request.base_url).rstrip("/") + "/fhir"
    links = [{"relation": "self", "url": str(request.url)}]
    if next_before is not None:
        kept = [(k, v) for k, v in params if k != "_before"]
        from urllib.parse import urlencode

        links.append(
            {
                "relation": "next",
                "url": f"{base}/AuditEvent?{urlencode([*kept, ('_before', str(next_before))])}",
            }
        )
    return _fhir(
        {
            "resourceType": "Bundle",
            "type": "searchset",
            "link": links,
            "entry": [
                {"fullUrl": f"{base}/AuditEvent/{e['id']}", "resource": e, "search": {"mode": "match"}}
                for e in events
            ],
        }
    )


@router.get("/AuditEvent/{event_id}", summary="One AuditEvent (admins)")
def read_audit(
    event_id: str, request: Request, principal: Principal = Depends(require_permission("audit"))
) -> Response:
    from hub.fhir_api.sessions import read_scope

    if not (event_id.isascii() and event_id.isdigit()):
        raise NotFound(f"AuditEvent/{event_id} is not known")
    trail_of(request.app).flush()
    with read_scope(request) as session:
        row = session.get(AuditRecord, int(event_id))
        if row is None:
            raise NotFound(f"AuditEvent/{event_id} is not known")
        return _fhir(to_fhir(row))


def record_now(
    engine: Engine, kind: str, *, agent: str, action: str = "E", reason: str = "", **kw: Any
) -> None:
    """Append one event at once (the command line's admin changes: senders, clients, tokens)."""
    append(
        engine,
        [
            Event(
                recorded=datetime.now(UTC),
                kind=kind,
                action=action,
                outcome="0",
                status=0,
                agent=agent,
                reason=reason,
                **kw,
            )
        ],
    )


def rows_as_dicts(rows: Iterable[Any]) -> Iterator[dict[str, Any]]:
    for r in rows:
        yield {f: getattr(r, f) for f in ("id", *_FIELDS)}


__all__ = [
    "AuditMiddleware",
    "AuditTrail",
    "Event",
    "Journal",
    "append",
    "note_results",
    "record_now",
    "router",
    "verify",
]
