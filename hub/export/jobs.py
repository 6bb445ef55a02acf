"""Bulk Data export jobs: kick-off records a job, a runner (a thread of ``hub serve`` with the embedded
worker, or of ``hub worker``) claims it, streams the resources it selects from the store into NDJSON
files, one resource type per file, split at ``HUB_EXPORT_FILE_MAX_BYTES``, and records the manifest.

A runner sends a heartbeat while it works; a job whose runner died (a restart, a crash) is claimed again
by the next runner once its heartbeat is ``HUB_EXPORT_STALE_S`` old and starts over (its partial files
are removed); after ``MAX_ATTEMPTS`` claims it fails with an OperationOutcome. Expired jobs (completed,
failed or cancelled ``HUB_EXPORT_TTL_S`` ago) are removed with their files. Memory stays flat whatever
the export's size: rows are streamed in batches, never held whole.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from sqlalchemy import Engine, and_, delete, or_, select, update
from sqlalchemy.orm import Session

from hub.background import Periodic
from hub.config import Settings
from hub.db import session_scope
from hub.export.deid import EXCLUDED_TYPES, Deidentifier
from hub.store.models import ExportJob, MpiSource, Resource

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
KEY_FILE = "export-pseudonym.key"
R = Resource.__table__.c


class Cancelled(Exception):
    """The job was cancelled (DELETE on its status URL) while it ran."""


def export_dir(settings: Settings) -> Path:
    return Path(settings.export_dir or (Path(settings.var_dir) / "exports"))


def job_dir(settings: Settings, job_id: str) -> Path:
    return export_dir(settings) / job_id


def pseudonym_key(settings: Settings) -> bytes:
    """The pseudonymisation key: ``HUB_EXPORT_PSEUDONYM_KEY`` or a key file under ``HUB_VAR_DIR``
    (created, mode 0600, on first use). Losing it changes every pseudonym of later exports."""
    if settings.export_pseudonym_key:
        return settings.export_pseudonym_key.encode()
    return _key_file(str(Path(settings.var_dir).resolve()))


@lru_cache(maxsize=8)
def _key_file(var_dir: str) -> bytes:
    path = Path(var_dir) / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_bytes().strip()
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32).hex().encode())
    return path.read_bytes().strip()


def now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


# --- kick-off -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class ExportRequest:
    level: str  # system | patient | group
    owner: str
    owner_role: str
    deidentified: bool
    request_url: str
    group_id: str | None = None
    types: list[str] = field(default_factory=list)
    since: datetime | None = None
    type_filters: list[str] = field(default_factory=list)
    elements: list[str] = field(default_factory=list)
    patients: list[str] = field(default_factory=list)  # resolved members of a group/patient export


def create_job(session: Session, req: ExportRequest) -> ExportJob:
    job = ExportJob(
        id=str(uuid.uuid4()),
        state="queued",
        level=req.level,
        group_id=req.group_id,
        params={
            "_type": req.types,
            "_since": req.since.isoformat() if req.since else None,
            "_typeFilter": req.type_filters,
            "_elements": req.elements,
            "patients": req.patients,
        },
        request_url=req.request_url,
        owner=req.owner,
        owner_role=req.owner_role,
        deidentified=req.deidentified,
        transaction_time=now(),
        created_at=now(),
        attempts=0,
        exported=0,
        progress="queued",
    )
    session.add(job)
    session.flush()
    return job


# --- the runner ---------------------------------------------------------------------------------------


class ExportRunner:
    """``settings.export_workers`` threads, each claiming and running one job at a time."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self._threads = [_RunnerThread(self, n) for n in range(max(1, settings.export_workers))]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        for t in self._threads:
            t._stop.set()
        for t in self._threads:
            t.stop()

    def run_pending(self) -> int:
        """Claim and run jobs until none is waiting (tests, ``hub export run``); the number run."""
        done = 0
        while (job_id := claim(self.engine, self.settings)) is not None:
            run_job(self.engine, self.settings, job_id)
            done += 1
        return done


class _RunnerThread(Periodic):
    name = "hub-export"

    def __init__(self, runner: ExportRunner, n: int) -> None:
        super().__init__(runner.settings.export_poll_s)
        self.runner = runner
        self.name = f"hub-export-{n}"
        self._thread.name = self.name

    def tick(self) -> None:
        job_id = claim(self.runner.engine, self.runner.settings)
        if job_id is not None:
            run_job(self.runner.engine, self.runner.settings, job_id, stop=self._stop)
        else:
            expire(self.runner.engine, self.runner.settings)


def claim(engine: Engine, settings: Settings) -> str | None:
    """Take a queued job, or a running one whose runner stopped sending heartbeats; None when there is
    none. Atomic: of two runners claiming the same job, one wins."""
    stale = now() - timedelta(seconds=settings.export_stale_s)
    waiting = or_(
        ExportJob.state == "queued",
        and_(
            ExportJob.state == "running",
            or_(ExportJob.heartbeat_at.is_(None), ExportJob.heartbeat_at < stale),
        ),
    )
    with session_scope(engine) as session:
        candidates = session.execute(
            select(ExportJob.id, ExportJob.attempts).where(waiting).order_by(ExportJob.created_at).limit(5)
        ).all()
        for job_id, attempts in candidates:
            if attempts >= MAX_ATTEMPTS:
                _fail(session, settings, job_id, "the export was interrupted too many times")
                continue
            taken = session.execute(
                update(ExportJob)
                .where(ExportJob.id == job_id, ExportJob.attempts == attempts, waiting)
                .values(state="running", heartbeat_at=now(), attempts=attempts + 1, progress="starting")
            )
            if taken.rowcount == 1:  # type: ignore[attr-defined]
                return str(job_id)
    return None


def _fail(session: Session, settings: Settings, job_id: str, why: str) -> None:
    directory = job_dir(settings, job_id)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    name = "OperationOutcome-1.ndjson"
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "fatal", "code": "exception", "diagnostics": why}],
    }
    (directory / name).write_bytes(orjson.dumps(outcome) + b"\n")
    session.execute(
        update(ExportJob)
        .where(ExportJob.id == job_id)
        .values(
            state="failed",
            progress="failed",
            output=[],
            errors=[{"type": "OperationOutcome", "file": name, "count": 1}],
            completed_at=now(),
            expires_at=now() + timedelta(seconds=settings.export_ttl_s),
        )
    )


def expire(engine: Engine, settings: Settings) -> int:
    """Remove jobs (and their files) past their expiry; the number removed."""
    with session_scope(engine) as session:
        ids = list(
            session.scalars(
                select(ExportJob.id).where(ExportJob.expires_at.is_not(None), ExportJob.expires_at < now())
            )
        )
        for job_id in ids:
            shutil.rmtree(job_dir(settings, job_id), ignore_errors=True)
        if ids:
            session.execute(delete(ExportJob).where(ExportJob.id.in_(ids)))
    return len(ids)


# --- running one job ----------------------------------------------------------------------------------


class _Writer:
    """NDJSON files of one resource type, a new file each time one reaches the size limit."""

    def __init__(self, directory: Path, rtype: str, limit: int) -> None:
        self.directory, self.rtype, self.limit = directory, rtype, max(1, limit)
        self.files: list[dict[str, Any]] = []
        self._fh: BinaryIO | None = None
        self._size = 0

    def write(self, resource: dict[str, Any]) -> None:
        self.write_raw(orjson.dumps(resource))

    def write_raw(self, content: bytes) -> None:
        line = content + b"\n"
        if self._fh is None or (self._size and self._size + len(line) > self.limit):
            self._open()
        assert self._fh is not None
        self._fh.write(line)
        self._size += len(line)
        self.files[-1]["count"] += 1

    def _open(self) -> None:
        self.close()
        name = f"{self.rtype}-{len(self.files) + 1}.ndjson"
        self._fh = (self.directory / name).open("wb")
        self._size = 0
        self.files.append({"type": self.rtype, "file": name, "count": 0})

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def run_job(engine: Engine, settings: Settings, job_id: str, stop: threading.Event | None = None) -> None:
    with session_scope(engine) as session:
        job = session.get(ExportJob, job_id)
        if job is None or job.state != "running":
            return
        snapshot = _Snapshot.of(job)
    directory = job_dir(settings, job_id)
    shutil.rmtree(directory, ignore_errors=True)  # a job claimed again starts over
    directory.mkdir(parents=True, exist_ok=True)
    try:
        outputs, exported = _export(engine, settings, snapshot, directory, stop)
    except Cancelled:
        shutil.rmtree(directory, ignore_errors=True)
        return
    except Exception as exc:
        log.exception("export %s failed", job_id)
        with session_scope(engine) as session:
            _fail(session, settings, job_id, f"the export failed ({type(exc).__name__})")
        return
    with session_scope(engine) as session:
        done = session.execute(
            update(ExportJob)
            .where(ExportJob.id == job_id, ExportJob.state == "running")
            .values(
                state="completed",
                progress="completed",
                exported=exported,
                output=outputs,
                errors=[],
                completed_at=now(),
                expires_at=now() + timedelta(seconds=settings.export_ttl_s),
            )
        )
    if done.rowcount != 1:  # type: ignore[attr-defined]
        shutil.rmtree(directory, ignore_errors=True)  # cancelled at the last moment
        return
    from hub.export.audit import record_export

    record_export(engine, snapshot.owner, snapshot.owner_role, job_id, snapshot.deidentified, outputs)


@dataclass(slots=True)
class _Snapshot:
    id: str
    level: str
    params: dict[str, Any]
    owner: str
    owner_role: str
    deidentified: bool
    transaction_time: datetime

    @classmethod
    def of(cls, job: ExportJob) -> _Snapshot:
        tt = _aware(job.transaction_time)
        assert tt is not None
        return cls(job.id, job.level, dict(job.params or {}), job.owner, job.owner_role, job.deidentified, tt)


def _heartbeat(engine: Engine, job_id: str, exported: int, progress: str) -> None:
    """Record progress; raises Cancelled when the job is no longer running (a DELETE)."""
    with session_scope(engine) as session:
        done = session.execute(
            update(ExportJob)
            .where(ExportJob.id == job_id, ExportJob.state == "running")
            .values(heartbeat_at=now(), exported=exported, progress=progress[:200])
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            raise Cancelled(job_id)


def _export(
    engine: Engine, settings: Settings, job: _Snapshot, directory: Path, stop: threading.Event | None
) -> tuple[list[dict[str, Any]], int]:
    params = job.params
    since = datetime.fromisoformat(params["_since"]) if params.get("_since") else None
    patients: list[str] = list(params.get("patients") or [])
    elements: list[str] = list(params.get("_elements") or [])
    filters = _filters_by_type(params.get("_typeFilter") or [])
    with engine.connect() as conn:
        types = list(params.get("_type") or []) or _types_present(conn, job.level)
    if job.deidentified:
        types = [t for t in types if t not in EXCLUDED_TYPES]
    deid = Deidentifier(pseudonym_key(settings), job.transaction_time.date()) if job.deidentified else None
    golden_ids = _GoldenIds(engine)
    outputs: list[dict[str, Any]] = []
    exported = 0
    batch = max(1, settings.export_batch)
    for n, rtype in enumerate(types):
        writer = _Writer(directory, rtype, settings.export_file_max_bytes)
        wanted = _filtered_ids(engine, rtype, filters[rtype]) if rtype in filters else None
        try:
            for rows in _batches(engine, rtype, job, since, patients, batch):
                if stop is not None and stop.is_set():
                    raise Cancelled(job.id)  # the runner is stopping: the next one starts over
                if deid is not None:
                    deid.golden = golden_ids.of(rows, rtype)
                for rid, content in rows:
                    if wanted is not None and rid not in wanted:
                        continue
                    if deid is None and not elements:
                        writer.write_raw(content)  # the stored bytes are the resource's JSON, one line
                        exported += 1
                        continue
                    resource = orjson.loads(content)
                    if deid is not None:
                        if rtype == "Patient" and rid in deid.golden:
                            continue  # a source record: its golden Patient stands for it
                        resource = deid.resource(resource)
                        if resource is None:
                            continue
                    if elements:
                        resource = _subset(resource, elements)
                    writer.write(resource)
                    exported += 1
                _heartbeat(
                    engine, job.id, exported, f"{rtype} ({n + 1} of {len(types)}): {exported} resources"
                )
        finally:
            writer.close()
        outputs.extend(f for f in writer.files if f["count"])
    return outputs, exported


def _types_present(conn: Any, level: str) -> list[str]:
    query = select(R.resource_type).where(R.deleted.is_(False)).distinct()
    if level != "system":
        query = query.where(or_(R.patient_id.is_not(None), R.resource_type == "Patient"))
    return sorted(str(t) for (t,) in conn.execute(query))


def _batches(
    engine: Engine, rtype: str, job: _Snapshot, since: datetime | None, patients: Sequence[str], batch: int
) -> Iterator[list[tuple[str, bytes]]]:
    """The type's current resources in ``pk`` order, ``batch`` at a time (keyset paging: each batch is
    its own short query, so no transaction stays open for the whole export)."""
    conditions = [R.resource_type == rtype, R.deleted.is_(False), R.last_updated <= job.transaction_time]
    if since is not None:
        conditions.append(R.last_updated > since)
    if job.level == "group":  # the Group's patients only (none: nothing to export)
        if not patients:
            return
        conditions.append((R.id if rtype == "Patient" else R.patient_id).in_(list(patients)))
    elif job.level == "patient" and rtype != "Patient":  # every patient's compartment
        conditions.append(R.patient_id.is_not(None))
    last = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                select(R.pk, R.id, R.content).where(*conditions, R.pk > last).order_by(R.pk).limit(batch)
            ).all()
        if not rows:
            return
        last = int(rows[-1][0])
        yield [(str(rid), bytes(content)) for _pk, rid, content in rows]
        if len(rows) < batch:
            return


class _GoldenIds:
    """Source Patient id -> golden id for the Patients a batch refers to (or is). Each id is looked up once
    per export (a ministry export names the same patients in batch after batch); the memory is bounded."""

    LIMIT = 200_000

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._known: dict[str, str | None] = {}  # None: not a source record, or its own golden record

    def of(self, rows: Sequence[tuple[str, bytes]], rtype: str) -> dict[str, str]:
        ids: set[str] = set()
        if rtype == "Patient":
            ids.update(rid for rid, _ in rows)
        for _rid, content in rows:
            start = 0
            while (i := content.find(b'"Patient/', start)) >= 0:
                end = content.find(b'"', i + 9)
                if end < 0:
                    break
                ids.add(content[i + 9 : end].split(b"/")[0].decode())
                start = end
        unknown = sorted(ids.difference(self._known))
        if unknown:
            if len(self._known) + len(unknown) > self.LIMIT:
                self._known.clear()
                unknown = sorted(ids)
            with self._engine.connect() as conn:
                found = dict(
                    conn.execute(
                        select(MpiSource.id, MpiSource.golden_id).where(MpiSource.id.in_(unknown))
                    ).all()
                )
            for source in unknown:
                golden = found.get(source)
                self._known[source] = str(golden) if golden is not None and golden != source else None
        return {i: g for i in ids if (g := self._known.get(i)) is not None}


def _filters_by_type(filters: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in filters:
        rtype, _, query = f.partition("?")
        out.setdefault(rtype, []).append(query)
    return out


def _filtered_ids(engine: Engine, rtype: str, queries: Sequence[str]) -> set[str]:
    """The ids a type's ``_typeFilter`` searches match (their union), run by the FHIR search engine."""
    from urllib.parse import parse_qsl

    from hub.fhir_api import search as fhir_search

    ids: set[str] = set()
    with Session(bind=engine) as session:
        for query in queries:
            params = parse_qsl(query, keep_blank_values=True)
            params = [(k, v) for k, v in params if k not in ("_count", "_cursor")]
            cursor: str | None = None
            while True:
                page_params = [*params, ("_count", "1000")]
                if cursor:
                    page_params.append(("_cursor", cursor))
                q = fhir_search.parse_query(session, rtype, page_params, strict=True)
                page = fhir_search.search(session, q)
                ids.update(row.id for row in page.matches)
                cursor = page.next_cursor
                if not cursor:
                    break
    return ids


_MANDATORY = ("resourceType", "id", "meta")
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}


def _subset(resource: dict[str, Any], elements: Sequence[str]) -> dict[str, Any]:
    """``_elements``: the named top-level elements (``Type.element`` or ``element``) and the mandatory
    ones, tagged SUBSETTED."""
    rtype = resource.get("resourceType")
    keep = {
        e.split(".", 1)[1] if "." in e else e for e in elements if "." not in e or e.split(".")[0] == rtype
    }
    if not keep:
        return resource
    out = {k: v for k, v in resource.items() if k in keep or k in _MANDATORY}
    meta = dict(out.get("meta") or {})
    meta["tag"] = [*(meta.get("tag") or []), SUBSETTED]
    out["meta"] = meta
    return out
