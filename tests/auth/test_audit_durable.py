"""The audit trail survives a killed process: each access is journaled before its answer leaves, and the
next process to start appends what the journal holds and the trail does not (once, with the chain intact).
The real case runs ``hub serve`` and kills it with SIGKILL right after a read returned."""

from __future__ import annotations

import contextlib
import json
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from hub.audit import AuditTrail, Event, Journal, append, verify
from hub.auth import issue_token
from hub.config import Settings
from hub.db import make_engine, session_scope
from hub.store import resources
from hub.store.models import AuditRecord
from tests.fhir_api import builders as b
from tests.processes import HubProcess, free_port, hub_env, hub_run


def _get(url: str, token: str) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, json.loads(r.read())


def _segments(var: Path) -> list[Path]:
    return sorted((var / "audit-journal").glob(f"*{Journal.SUFFIX}"))


def test_a_read_answered_before_a_kill9_is_in_the_trail_after_the_restart(
    fresh_database_url: str, tmp_path: Path
) -> None:
    var, port = tmp_path / "var", free_port()
    # The writer would wait a minute before writing: only the journal can save the event.
    env = hub_env(
        fresh_database_url,
        var,
        HUB_HTTP_PORT=str(port),
        HUB_MLLP_ENABLED="false",
        HUB_WORKER_ENABLED="false",
        HUB_AUDIT_FLUSH_MS="60000",
    )
    hub_run(["db", "upgrade"], env)
    engine = make_engine(fresh_database_url)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(engine.dispose)

        def serve(n: int) -> HubProcess:
            proc = HubProcess(["serve"], env, tmp_path / f"serve-{n}.log")
            cleanup.callback(proc.stop)
            proc.wait_port(port)
            return proc

        with session_scope(engine) as session:
            resources.upsert(session, b.patient("kill-p1", family="Pratama"))
            resources.upsert(session, b.observation("kill-o1", "kill-p1"))
        settings = Settings(var_dir=var)
        clinician = issue_token(settings, "clinician", subject="dr-kilat")
        admin = issue_token(settings, "admin", subject="auditor")

        first = serve(1)
        status, body = _get(f"http://127.0.0.1:{port}/fhir/Observation?patient=kill-p1", clinician)
        assert status == 200 and body["entry"][0]["resource"]["id"] == "kill-o1"
        status, _ = _get(f"http://127.0.0.1:{port}/fhir/Patient/kill-p1", clinician)
        assert status == 200
        first.kill9()  # right after the answers: nothing was written to the trail yet
        with engine.connect() as conn:
            assert (
                conn.execute(
                    select(func.count()).select_from(AuditRecord).where(AuditRecord.agent == "dr-kilat")
                ).scalar_one()
                == 0
            )
        assert len(_segments(var)) >= 1

        env["HUB_AUDIT_FLUSH_MS"] = "20"
        second = serve(2)
        status, found = _get(f"http://127.0.0.1:{port}/fhir/AuditEvent?agent=dr-kilat", admin)
        events = [e["resource"] for e in found.get("entry", [])]
        assert sorted(e["subtype"][0]["code"] for e in events) == ["read", "search-type"]
        for event in events:
            assert {"reference": "Patient/kill-p1"} in [x.get("what") for x in event["entity"]]
        second.stop()
        assert _segments(var) == []  # replayed segments and the clean stop's own are gone
        out = hub_run(["audit", "verify"], env).stdout
        assert "audit trail intact" in out

        # A third start finds nothing to replay: the events are in the trail once.
        serve(3)
        _, again = _get(f"http://127.0.0.1:{port}/fhir/AuditEvent?agent=dr-kilat", admin)
        assert len(again.get("entry", [])) == 2


def _event(path: str, agent: str) -> Event:
    return Event(datetime.now(UTC), "read", "R", "0", 200, agent=agent, method="GET", path=path)


def test_recovery_appends_only_what_the_trail_lacks_and_skips_living_journals(
    engine: Engine, tmp_path: Path
) -> None:
    jdir = tmp_path / "journal"
    dead = Journal(jdir, sync=True)
    committed, lost = _event("/fhir/Patient/a", "dr-a"), _event("/fhir/Patient/b", "dr-b")
    dead.write(committed)
    dead.write(lost)
    append(engine, [committed])  # committed, then killed before its segment was removed
    dead_path = dead.path
    assert dead_path is not None
    Journal.remove((dead._fd, dead_path), unlink=False)  # the process is gone: its lock with it

    living = Journal(jdir, sync=False)  # another process's, still running: not touched
    living.write(_event("/fhir/Patient/c", "dr-c"))

    trail = AuditTrail(engine, 5, Journal(jdir, sync=False))
    assert trail.recover() == 1
    with engine.connect() as conn:
        agents = conn.execute(select(AuditRecord.agent).order_by(AuditRecord.id)).scalars().all()
    assert agents == ["dr-a", "dr-b"]
    assert not dead_path.exists() and living.path is not None and living.path.exists()
    assert verify(engine)[1] is None
    assert trail.recover() == 0

    # The writer removes a segment once its events are committed; what arrives later is in the next one.
    trail.record(_event("/fhir/Patient/d", "dr-d"))
    first_segment = trail.journal.path if trail.journal else None
    trail.flush()
    assert first_segment is not None and not first_segment.exists()
    trail.stop()
    living_path = living.path
    living.close()  # closed with an event not in the trail: kept for the next start
    assert list(jdir.iterdir()) == [living_path]
