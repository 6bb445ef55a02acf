"""FHIR store and API benchmark (issue 4): a synthetic load into PostgreSQL, then p50/p99 over repeated
HTTP requests against ``uvicorn hub.app:create_app`` for read by id, Patient by identifier, Observation by
patient + code + date range (first page of 20), ``_include``, and ``$everything`` of a golden patient
with 1,000 resources across two linked sources (all pages).

The load writes exactly the rows ``hub.store.resources.upsert`` and the search-index hook write (same
JSON bytes, version rows and ``search_params.extract_rows`` index rows), but in bulk batches instead of one
ORM upsert per resource, so a million resources load in minutes.

    python -m bench fhir --resources 1000000 --patients 10000      # the issue's figures
    python -m bench fhir --resources 20000 --patients 200          # a quick sanity run
    python -m bench fhir --database-url postgresql+psycopg://…/hub_bench_1m --no-load --prewarm --cpu
                                        # measure a kept database again, its store in the OS cache, with
                                        # the server's and PostgreSQL's CPU per request
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import Engine, create_engine, insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError, ProgrammingError

from hub.auth import issue_token
from hub.config import Settings
from hub.db import make_engine
from hub.fhir_api.search import EVERYTHING_DEFAULT_COUNT
from hub.store.models import Resource, ResourceVersion
from hub.store.resources import allocate_pks
from hub.store.schema import scratch_database, upgrade
from hub.store.search_index import INDEX_MODELS
from hub.store.search_params import KINDS, extract_rows

PG_URL = os.environ.get("HUB_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MRN = "urn:oid:2.16.840.1.113883.3.9999.1"
LOINC = "http://loinc.org"
CODES = [
    ("8480-6", "Systolic blood pressure", "mm[Hg]"),
    ("8462-4", "Diastolic blood pressure", "mm[Hg]"),
    ("2345-7", "Glucose", "mmol/L"),
    ("718-7", "Hemoglobin", "g/dL"),
    ("8867-4", "Heart rate", "/min"),
    ("29463-7", "Body weight", "kg"),
    ("8310-5", "Body temperature", "Cel"),
    ("2160-0", "Creatinine", "mg/dL"),
]
BIG_PATIENT = "golden-big"
BIG_SOURCES = ("big-src-a", "big-src-b")


@dataclass
class Figures:
    resources: int
    load_s: float
    timings: dict[str, list[float]]
    machine_load: tuple[float, float] = (float("nan"), float("nan"))  # 1-minute load average, start / end
    cpu: dict[str, tuple[float, float]] = field(default_factory=dict)  # query -> CPU s: server, postgres

    def report(self) -> str:
        loaded = (
            f"loaded in {self.load_s:.1f} s ({self.resources / self.load_s:,.0f}/s)"
            if self.load_s == self.load_s  # NaN: --no-load measured a database loaded earlier
            else "loaded earlier (--no-load)"
        )
        lines = [
            f"{self.resources:,} resources, {loaded}",
            f"machine load (1-minute average) while measuring: {self.machine_load[0]:.2f} -> "
            f"{self.machine_load[1]:.2f} on {os.cpu_count()} CPUs",
            f"{'query':<50} {'n':>5} {'p50 ms':>8} {'p99 ms':>8}"
            + (f" {'server ms CPU':>14} {'postgres ms CPU':>16}" if self.cpu else ""),
        ]
        for name, values in self.timings.items():
            line = f"{name:<50} {len(values):>5} {pct(values, 50):>8.2f} {pct(values, 99):>8.2f}"
            if name in self.cpu:
                server, postgres = (1000 * t / len(values) for t in self.cpu[name])
                line += f" {server:>14.2f} {postgres:>16.2f}"
            lines.append(line)
        return "\n".join(lines)


def pct(values: list[float], p: int) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[k] * 1000


# --- synthetic data -----------------------------------------------------------------------------------


def _patient(pid: str, i: int, links: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": MRN, "value": f"MRN-{i:07d}"}],
        "active": True,
        "name": [{"family": f"Family{i % 997}", "given": [f"Given{i % 113}"]}],
        "gender": "female" if i % 2 else "male",
        "birthDate": f"{1940 + i % 80}-{1 + i % 12:02d}-{1 + i % 28:02d}",
        "address": [{"city": f"City{i % 50}", "country": "ID"}],
    }
    if links:
        res["link"] = [{"type": t, "other": {"reference": f"Patient/{o}"}} for t, o in links]
    return res


def _clinical(rng: random.Random, n: int, pid: str, practitioners: int) -> dict[str, Any]:
    when = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(5 * 365 * 24 * 60))
    stamp = when.isoformat().replace("+00:00", "Z")
    subject = {"reference": f"Patient/{pid}"}
    roll = rng.random()
    rid = f"r{n:08d}"
    if roll < 0.70:
        code, display, unit = rng.choice(CODES)
        return {
            "resourceType": "Observation",
            "id": rid,
            "status": "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "vital-signs",
                        }
                    ]
                }
            ],
            "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
            "subject": subject,
            "encounter": {"reference": f"Encounter/e{n // 7:08d}"},
            "effectiveDateTime": stamp,
            "performer": [{"reference": f"Practitioner/pr{rng.randrange(practitioners)}"}],
            "valueQuantity": {
                "value": round(rng.uniform(1, 200), 1),
                "unit": unit,
                "system": "http://unitsofmeasure.org",
                "code": unit,
            },
        }
    if roll < 0.85:
        return {
            "resourceType": "Encounter",
            "id": rid,
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": subject,
            "period": {"start": stamp, "end": (when + timedelta(hours=2)).isoformat().replace("+00:00", "Z")},
            "participant": [{"individual": {"reference": f"Practitioner/pr{rng.randrange(practitioners)}"}}],
        }
    if roll < 0.95:
        return {
            "resourceType": "Condition",
            "id": rid,
            "clinicalStatus": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
                ]
            },
            "code": {
                "coding": [
                    {
                        "system": "http://hl7.org/fhir/sid/icd-10",
                        "code": rng.choice(["A90", "J18.9", "E11.9", "I10"]),
                    }
                ]
            },
            "subject": subject,
            "onsetDateTime": stamp[:10],
        }
    return {
        "resourceType": "Immunization",
        "id": rid,
        "status": "completed",
        "vaccineCode": {
            "coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": rng.choice(["08", "20", "141"])}]
        },
        "patient": subject,
        "occurrenceDateTime": stamp,
    }


def generate(resources: int, patients: int, seed: int = 42) -> Iterator[dict[str, Any]]:
    """Patients first (one golden with two sources), practitioners, then clinical resources: the
    golden patient's two sources hold 1,000 between them, the rest spread over the other patients."""
    rng = random.Random(seed)
    practitioners = 50
    yield _patient(BIG_PATIENT, 0, [("seealso", s) for s in BIG_SOURCES])
    for k, src in enumerate(BIG_SOURCES):
        yield _patient(src, k + 1, [("refer", BIG_PATIENT)])
    others = [f"p{i:06d}" for i in range(max(1, patients - 3))]
    for i, pid in enumerate(others):
        yield _patient(pid, i + 3)
    for i in range(practitioners):
        yield {"resourceType": "Practitioner", "id": f"pr{i}", "name": [{"family": f"Dokter{i}"}]}
    fixed = 3 + len(others) + practitioners
    big = min(1000, max(0, resources - fixed))
    for n in range(big):
        yield _clinical(rng, n, BIG_SOURCES[n % 2], practitioners)
    for n in range(big, max(big, resources - fixed)):
        yield _clinical(rng, n, others[rng.randrange(len(others))], practitioners)


# --- bulk load ----------------------------------------------------------------------------------------


def _patient_of(res: dict[str, Any]) -> str | None:
    if res["resourceType"] == "Patient":
        return str(res["id"])
    for key in ("subject", "patient", "beneficiary"):
        ref = (res.get(key) or {}).get("reference", "")
        if ref.startswith("Patient/"):
            return str(ref[8:])
    return None


def load(engine: Engine, items: Iterator[dict[str, Any]], batch: int = 2000) -> int:
    """Bulk-write resources with their version rows and index rows (what upsert + the hook write)."""
    now = datetime.now(UTC)
    stamp = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    total = 0
    buf: list[dict[str, Any]] = []

    def flush() -> None:
        with engine.begin() as conn:  # the pks taken in the transaction that writes them
            write(conn)

    def write(conn: Any) -> None:
        pks = allocate_pks(conn, len(buf))
        res_rows, ver_rows = [], []
        index_rows: dict[str, list[dict[str, Any]]] = {k: [] for k in INDEX_MODELS}
        for res, pk in zip(buf, pks, strict=True):
            stored = {
                "resourceType": res["resourceType"],
                "id": res["id"],
                "meta": {"versionId": "1", "lastUpdated": stamp},
            }
            stored.update({k: v for k, v in res.items() if k not in ("resourceType", "id")})
            content = orjson.dumps(stored)
            key = {"resource_type": res["resourceType"], "id": res["id"]}
            res_rows.append(
                {
                    "pk": pk,
                    **key,
                    "version_id": 1,
                    "last_updated": now,
                    "deleted": False,
                    "patient_id": _patient_of(res),
                    "content": content,
                }
            )
            ver_rows.append(
                {
                    **key,
                    "version_id": 1,
                    "last_updated": now,
                    "deleted": False,
                    "message_id": None,
                    "content": content,
                }
            )
            for kind, extracted in extract_rows(stored).items():
                owner = {"resource_type": res["resourceType"], "resource_id": res["id"], "resource_pk": pk}
                index_rows[kind].extend(
                    {**owner, **dict(zip(KINDS[kind], row, strict=True))} for row in extracted
                )
        tables = [(Resource.__table__, res_rows), (ResourceVersion.__table__, ver_rows)]
        tables += [(model.__table__, index_rows[kind]) for kind, model in INDEX_MODELS.items()]
        for table, rows in tables:
            if rows:
                _bulk_insert(conn, table, rows)
        buf.clear()

    for item in items:
        buf.append(item)
        total += 1
        if len(buf) >= batch:
            flush()
            if total % 100_000 < batch:
                print(f"  loaded {total:,}", flush=True)
    if buf:
        flush()
    if engine.dialect.name == "postgresql":
        # VACUUM as well as ANALYZE: searches answer from index-only scans, which need the visibility map
        # that autovacuum keeps on a store in service (a freshly bulk-loaded table has none yet).
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("VACUUM ANALYZE"))
    return total


def _bulk_insert(conn: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    """COPY on PostgreSQL (an order of magnitude faster than INSERT for a million rows), INSERT elsewhere."""
    if conn.dialect.name != "postgresql":
        conn.execute(insert(table), rows)
        return
    columns = [c.name for c in table.columns if c.name in rows[0]]
    cursor = conn.connection.dbapi_connection.cursor()
    with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([row[c] for c in columns])


# --- measuring ----------------------------------------------------------------------------------------


@contextmanager
def pg_database(admin_url: str) -> Iterator[str]:
    with scratch_database(admin_url, "hub_bench_fhir") as url:
        yield url


STORE_TABLES = (
    "resource",
    "search_token",
    "search_string",
    "search_date",
    "search_reference",
    "search_quantity",
)


def prewarm(url: str) -> float:
    """Read the store's tables and their indexes into the operating system's cache (``pg_prewarm`` in
    ``read`` mode; the extension is created when missing) and return the seconds it took. Without it a
    run measures how much of a 4.6 GB database other processes left in the cache, not the hub: a probe
    that misses waits for the disk (0.3 ms a page while other processes write)."""
    engine = make_engine(url, isolation_level="AUTOCOMMIT")
    start = time.perf_counter()
    try:
        with engine.connect() as conn:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS pg_prewarm"))
            relations = conn.execute(
                text(
                    "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid "
                    "WHERE i.indrelid::regclass::text = ANY(:tables) "
                    "UNION ALL SELECT unnest(CAST(:tables AS text[]))"
                ),
                {"tables": list(STORE_TABLES)},
            ).scalars()
            for relation in list(relations):
                conn.execute(text("SELECT pg_prewarm(CAST(:r AS regclass), 'read')"), {"r": relation})
    finally:
        engine.dispose()
    return time.perf_counter() - start


@dataclass
class Server:
    base: str  # the FHIR base URL
    pid: int


@contextmanager
def serve(url: str, var_dir: Path) -> Iterator[Server]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = {**os.environ, "HUB_DATABASE_URL": url, "HUB_VAR_DIR": str(var_dir)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "hub.app:create_app",
            "--port",
            str(port),
            "--lifespan",
            "off",
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        env=env,
    )
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(base + "/metadata", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield Server(base, proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)


class CpuMeter:
    """CPU time of the hub's server process and of the PostgreSQL backends serving its database, read
    from ``/proc`` (Linux, database on this machine). On a shared 2-core machine wall-clock latency is
    mostly waiting for a CPU; the CPU a request costs is the figure other processes do not blur."""

    def __init__(self, server_pid: int, url: str) -> None:
        self.server_pid = server_pid
        self.engine = make_engine(url)
        self.backends: list[int] = []

    def refresh(self) -> None:
        """Find the server's backends again (its pool opens connections as it needs them)."""
        with self.engine.connect() as conn:
            self.backends = list(
                conn.execute(
                    text(
                        "SELECT pid FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                ).scalars()
            )

    def read(self) -> tuple[float, float]:
        return _cpu_seconds(self.server_pid), sum(_cpu_seconds(pid) for pid in self.backends)

    def close(self) -> None:
        self.engine.dispose()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (0 once it has gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    base: str, token: str, patients: int, repeats: int, page: int, meter: CpuMeter | None = None
) -> tuple[dict[str, list[float]], dict[str, tuple[float, float]]]:
    """Time every query kind with the client's cyclic garbage collector paused: parsing a page of 500
    resources makes ~50,000 objects, and the collections they trigger doubled the client's CPU and
    landed inside the timed requests (the responses are freed by reference counting all the same)."""
    gc.collect()
    gc.disable()
    try:
        return _measure(base, token, patients, repeats, page, meter)
    finally:
        gc.enable()


def _measure(
    base: str, token: str, patients: int, repeats: int, page: int, meter: CpuMeter | None
) -> tuple[dict[str, list[float]], dict[str, tuple[float, float]]]:
    rng = random.Random(7)
    headers = {"Authorization": f"Bearer {token}"}
    timings: dict[str, list[float]] = {}
    cpu: dict[str, tuple[float, float]] = {}
    others = max(1, patients - 3)

    with httpx.Client(base_url=base, headers=headers, timeout=60) as client:

        def fetch(url: str, *, follow: bool = False) -> dict[str, Any]:
            # Pages followed are parsed whole, as an app would, with orjson (the client an app that
            # cares for speed uses; httpx's json() costs twice as much CPU, which a 2-core machine
            # shares with the server under test).
            r = client.get(url)
            assert r.status_code == 200, (url, r.status_code, r.text[:300])
            body: dict[str, Any] = orjson.loads(r.content) if follow else {}
            while follow:
                nxt = next((lk["url"] for lk in body.get("link", []) if lk["relation"] == "next"), None)
                if nxt is None:
                    break
                r = client.get(nxt)
                assert r.status_code == 200, (nxt, r.status_code, r.text[:300])
                body = orjson.loads(r.content)
            return body

        def timed(name: str, url: str, *, follow: bool = False) -> dict[str, Any]:
            if meter is not None and name not in timings:
                meter.refresh()
            used = meter.read() if meter is not None else (0.0, 0.0)
            start = time.perf_counter()
            body = fetch(url, follow=follow)
            timings.setdefault(name, []).append(time.perf_counter() - start)
            if meter is not None:
                server, postgres = cpu.get(name, (0.0, 0.0))
                now = meter.read()
                cpu[name] = (server + now[0] - used[0], postgres + now[1] - used[1])
            return body

        for _ in range(20):  # warm up connections and caches
            client.get(f"/Patient/p{rng.randrange(others):06d}")
        sample = client.get(f"/Observation?_count=1000&_elements=id&date=ge{2020 + rng.randrange(4)}").json()
        observation_ids = [e["resource"]["id"] for e in sample.get("entry", [])]
        # A few untimed requests of every kind (their own random draws, so the timed sample is unchanged):
        # the first request of a kind builds and compiles its statements in the server, and would
        # otherwise be every run's slowest request, hence its p99 (with 100 samples p99 is the maximum).
        warm = random.Random(11)
        for _ in range(3):
            wp = f"p{warm.randrange(others):06d}"
            fetch(f"/Observation/{warm.choice(observation_ids)}")
            fetch(f"/Patient?identifier={MRN}|MRN-{warm.randrange(others) + 3:07d}")
            fetch(
                f"/Observation?patient={wp}&code={LOINC}|{warm.choice(CODES)[0]}"
                "&date=ge2021-01-01&date=lt2024-01-01&_count=20"
            )
            fetch(
                f"/Observation?patient={wp}&_include=Observation:performer&_include=Observation:subject&_count=20"
            )
            fetch(f"/Observation?patient={BIG_PATIENT}&code={LOINC}|8480-6&_count=20")
            fetch(f"/Patient/{BIG_PATIENT}/$everything?_count={page}", follow=True)
            fetch(f"/Patient/{BIG_PATIENT}/$everything", follow=True)
        for i in range(repeats * 5):
            url = (
                f"/Observation/{rng.choice(observation_ids)}"
                if i % 2
                else f"/Patient/p{rng.randrange(others):06d}"
            )
            timed("read by id", url)
        for _ in range(repeats):
            i = rng.randrange(others) + 3
            timed("Patient?identifier=", f"/Patient?identifier={MRN}|MRN-{i:07d}")
        for _ in range(repeats):
            pid = f"p{rng.randrange(others):06d}"
            code = rng.choice(CODES)[0]
            timed(
                "Observation?patient&code&date range (20)",
                f"/Observation?patient={pid}&code={LOINC}|{code}&date=ge2021-01-01&date=lt2024-01-01&_count=20",
            )
        for _ in range(repeats):
            pid = f"p{rng.randrange(others):06d}"
            timed(
                "Observation?patient&_include=performer (20)",
                f"/Observation?patient={pid}&_include=Observation:performer&_include=Observation:subject&_count=20",
            )
        for _ in range(repeats):
            timed(
                "Observation?patient=golden&code (20)",
                f"/Observation?patient={BIG_PATIENT}&code={LOINC}|8480-6&_count=20",
            )
        for _ in range(max(5, repeats // 5)):
            timed(
                f"$everything golden 1,000 (all pages of {page})",
                f"/Patient/{BIG_PATIENT}/$everything?_count={page}",
                follow=True,
            )
        for _ in range(max(5, repeats // 5)):
            # What an app that leaves the page size to the server gets.
            timed(
                f"$everything golden 1,000 (default pages of {EVERYTHING_DEFAULT_COUNT})",
                f"/Patient/{BIG_PATIENT}/$everything",
                follow=True,
            )
    return timings, cpu


def run(
    *,
    resources: int = 1_000_000,
    patients: int = 10_000,
    repeats: int = 100,
    page: int = 500,
    admin_url: str = PG_URL,
    database_url: str | None = None,
    load_data: bool = True,
    warm_cache: bool = False,
    count_cpu: bool = False,
) -> Figures:
    """Load ``resources`` into a fresh PostgreSQL database (or into ``database_url``, which is kept;
    ``load_data=False`` measures what an earlier run loaded there), serve it, measure."""
    with tempfile.TemporaryDirectory() as tmp:
        ctx = pg_database(admin_url) if database_url is None else _given(database_url, load_data=load_data)
        with ctx as url:
            loaded, load_s = resources, float("nan")
            if load_data:
                upgrade(url)
                engine = make_engine(url)
                start = time.perf_counter()
                loaded = load(engine, generate(resources, patients))
                load_s = time.perf_counter() - start
                engine.dispose()
            if warm_cache and url.startswith("postgresql"):
                print(f"  prewarmed the store into the OS cache in {prewarm(url):.0f} s", flush=True)
            var_dir = Path(tmp) / "var"
            token = issue_token(Settings(var_dir=var_dir, database_url=url), "clinician")
            with serve(url, var_dir) as server:
                meter = CpuMeter(server.pid, url) if count_cpu else None
                before = os.getloadavg()[0]
                try:
                    timings, cpu = measure(server.base, token, patients, repeats, page, meter)
                finally:
                    if meter is not None:
                        meter.close()
                after = os.getloadavg()[0]
    return Figures(loaded, load_s, timings, (before, after), cpu)


@contextmanager
def _given(url: str, *, load_data: bool) -> Iterator[str]:
    """The kept database ``url``: created when a load is asked for and it does not exist yet
    (PostgreSQL); checked to hold a store already when nothing is to be loaded, so that a wrong name is
    a one-line message and not a trace."""
    if load_data:
        ensure_database(url)
    else:
        _check_loaded(url)
    yield url


class BenchError(Exception):
    """A mistake in the bench's arguments or environment, reported as one line instead of a trace."""


def _safe(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def ensure_database(url: str) -> bool:
    """Create the PostgreSQL database that ``url`` names when the server lacks it (True when it did);
    other dialects create their database on first connect."""
    target = make_url(url)
    if not target.drivername.startswith("postgresql") or not target.database:
        return False
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            found = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": target.database}
            ).first()
            if found is not None:
                return False
            quoted = conn.dialect.identifier_preparer.quote_identifier(target.database)
            conn.execute(text(f"CREATE DATABASE {quoted}"))
            return True
    finally:
        admin.dispose()


def _check_loaded(url: str) -> None:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            n = conn.execute(text("SELECT count(*) FROM resource WHERE resource_type = 'Patient'")).scalar()
    except ProgrammingError as exc:
        raise BenchError(f"{_safe(url)} has no FHIR store: run once without --no-load") from exc
    finally:
        engine.dispose()
    if not n:
        raise BenchError(f"{_safe(url)} holds no Patients: run once without --no-load")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench fhir", description=__doc__.split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=1_000_000)
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--page", type=int, default=500, help="$everything page size")
    parser.add_argument("--admin-url", default=PG_URL)
    parser.add_argument("--database-url", help="load into (and keep) this database instead of a fresh one")
    parser.add_argument("--no-load", action="store_true", help="measure what --database-url already holds")
    parser.add_argument(
        "--prewarm", action="store_true", help="read the store into the OS cache first (pg_prewarm)"
    )
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="also report the CPU of the server and of PostgreSQL per request (Linux, local database)",
    )
    args, _unknown = parser.parse_known_args(argv)
    try:
        figures = run(
            resources=args.resources,
            patients=args.patients,
            repeats=args.repeats,
            page=args.page,
            admin_url=args.admin_url,
            database_url=args.database_url,
            load_data=not args.no_load,
            warm_cache=args.prewarm,
            count_cpu=args.cpu,
        )
    except BenchError as exc:
        print(f"bench fhir: {exc}", file=sys.stderr)
        return 2
    except OperationalError as exc:
        print(f"bench fhir: cannot use the database: {exc.orig}", file=sys.stderr)
        return 2
    print(figures.report())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
