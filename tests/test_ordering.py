"""Messages of one patient are applied in arrival order whatever the worker count: a burst of A01, A08,
A03 for many patients through the intake and 4 in-process worker threads (SQLite and PostgreSQL; the
Celery variant is in tests/tasks/test_celery.py)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from hub import pipeline
from hub.config import Settings
from hub.db import session_scope
from hub.hl7 import Message
from hub.ingest.service import Intake
from hub.mapping import MappingResult, SenderContext
from hub.tasks import worker as worker_module
from hub.tasks.worker import InProcessWorker
from tests.ordering import (
    assert_encounters_finished,
    assert_patient_order,
    burst,
    require_adt_maps,
    stored_rows,
)

PATIENTS = 50


def _run_burst(engine: Engine, prefix: str) -> list[int]:
    worker = InProcessWorker(engine, threads=4, batch=8)
    intake = Intake(engine, Settings(), worker.dispatch)
    worker.start()
    intake.start()
    try:
        futures = [intake.submit(raw) for raw in burst(PATIENTS, prefix)]
        accepted = [f.result(timeout=30) for f in futures]
        assert {a.code for a in accepted} == {"AA"}
        assert worker.wait_idle(timeout=120)
    finally:
        intake.stop()
        worker.stop()
    return [a.message_id for a in accepted if a.message_id is not None]


def test_patient_order_across_four_worker_threads(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, list[str]] = defaultdict(list)
    lock = threading.Lock()
    attempt = threading.local()  # what the mapping saw in this thread's current transaction
    real_map, real_batch = pipeline.map_message, worker_module.process_batch

    def recording_map(message: Message, ctx: SenderContext) -> MappingResult:
        attempt.seen.append((message.get("PID-3"), message.get("MSH-9.2")))
        return real_map(message, ctx)

    def recording_batch(session: Session, ids: Iterable[int], **kw: Any) -> list[pipeline.Outcome]:
        # A batch rolled back to be run again (a PostgreSQL deadlock victim) applied nothing: only what
        # a batch that completed saw counts as applied.
        attempt.seen = []
        outcomes = real_batch(session, ids, **kw)
        with lock:
            for patient, event in attempt.seen:
                seen[patient].append(event)
        return outcomes

    monkeypatch.setattr(pipeline, "map_message", recording_map)
    monkeypatch.setattr(worker_module, "process_batch", recording_batch)
    ids = _run_burst(engine, "IP")
    assert len(ids) == 3 * PATIENTS
    assert_patient_order(stored_rows(engine, ids))
    # The mapping step saw each patient's events once each, in arrival order (nothing applied twice).
    assert len(seen) == PATIENTS
    assert {tuple(events) for events in seen.values()} == {("A01", "A08", "A03")}


def test_each_encounter_ends_finished_with_the_update(engine: Engine) -> None:
    require_adt_maps()
    ids = _run_burst(engine, "EN")
    rows = stored_rows(engine, ids)
    assert {r.state for r in rows} == {"processed"}, {r.error_text for r in rows if r.state != "processed"}
    assert_patient_order(rows)
    assert_encounters_finished(engine, PATIENTS, "EN")


def test_a_message_taken_by_two_workers_at_once_is_applied_once(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Worker 1 is applying a patient's A01 (as the earlier message of its A03) when worker 2 takes the
    A01 task too: worker 2 waits for the patient, then must see the A01 done and not apply it again."""
    applied: list[str] = []
    entered, go = threading.Event(), threading.Event()
    real_map = pipeline.map_message

    def slow_map(message: Message, ctx: SenderContext) -> MappingResult:
        applied.append(message.get("MSH-9.2"))
        if message.get("MSH-9.2") == "A01" and not entered.is_set():
            entered.set()
            assert go.wait(10)
        return real_map(message, ctx)

    monkeypatch.setattr(pipeline, "map_message", slow_map)
    intake = Intake(engine, Settings())
    a01, _a08, a03 = (intake.accept(raw).message_id for raw in burst(1, "TW"))
    assert a01 is not None and a03 is not None

    def work(message_id: int) -> None:
        with session_scope(engine) as s:
            pipeline.process_batch(s, [message_id])

    first = threading.Thread(target=work, args=(a03,))
    first.start()
    assert entered.wait(10)
    second = threading.Thread(target=work, args=(a01,))
    second.start()
    _wait_until_blocked(engine)
    go.set()
    first.join(20)
    second.join(20)
    assert not first.is_alive() and not second.is_alive()
    assert applied == ["A01", "A08", "A03"]
    assert_patient_order(stored_rows(engine, [a01, _a08, a03]))  # type: ignore[list-item]


def _wait_until_blocked(engine: Engine) -> None:
    """Until the second worker waits for the patient's lock (PostgreSQL) or the write lock (SQLite)."""
    if engine.dialect.name != "postgresql":
        time.sleep(0.5)
        return
    deadline = time.monotonic() + 10
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            waiting = conn.execute(
                text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            ).scalar()
            if waiting:
                return
            conn.rollback()
            time.sleep(0.02)
    raise AssertionError("the second worker never waited for the patient's lock")
