"""Engines: the intake's commits are durable, the workers' are not (their work is re-doable); on PostgreSQL
both plan each execution for its values; on SQLite the intake's commit goes before a waiting worker batch."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from hub.db import WriteGate, make_engine, processing_engine, seconds_since_urgent_write, write_turn


def test_intake_engine_is_durable_and_processing_engine_is_not(database_url: str) -> None:
    durable = make_engine(database_url)
    relaxed = processing_engine(durable)
    try:
        # One after the other: on SQLite each writing transaction holds the file's write lock.
        sqlite = durable.dialect.name == "sqlite"
        query = text("PRAGMA synchronous" if sqlite else "SHOW synchronous_commit")
        with durable.connect() as conn:
            assert conn.execute(query).scalar() == (2 if sqlite else "on")  # FULL
        with relaxed.connect() as conn:
            assert conn.execute(query).scalar() == (1 if sqlite else "off")  # NORMAL
            if sqlite:  # the workers' index writes keep their pages in a 64 MiB cache
                assert conn.execute(text("PRAGMA cache_size")).scalar() == -65536
        if not sqlite:  # no generic plan made while the tables were small is kept as they grow
            for engine in (durable, relaxed):
                with engine.connect() as conn:
                    assert conn.execute(text("SHOW plan_cache_mode")).scalar() == "force_custom_plan"
    finally:
        relaxed.dispose()
        durable.dispose()


def test_write_gate_lets_the_urgent_writer_go_first() -> None:
    gate = WriteGate()
    order: list[str] = []
    release = threading.Event()

    def holder() -> None:
        with gate.hold():
            order.append("worker-1")
            assert release.wait(5)

    def writer(name: str, urgent: bool) -> None:
        with gate.hold(urgent=urgent):
            order.append(name)

    first = threading.Thread(target=holder)
    first.start()
    while not order:
        time.sleep(0.001)
    worker = threading.Thread(target=writer, args=("worker-2", False))
    worker.start()
    time.sleep(0.05)
    intake = threading.Thread(target=writer, args=("intake", True))
    intake.start()
    time.sleep(0.05)
    release.set()
    for t in (first, worker, intake):
        t.join(5)
    assert order == ["worker-1", "intake", "worker-2"]


def test_transient_failures_are_retried_and_others_are_not() -> None:
    """A deadlock victim (SQLSTATE 40P01) is retried as a whole; any other error surfaces at once."""
    from sqlalchemy.exc import OperationalError

    from hub.db import retry_transient

    class Deadlock(Exception):
        sqlstate = "40P01"

    calls: list[bool] = []

    def flaky(last: bool) -> str:
        calls.append(last)
        if len(calls) < 3:
            raise OperationalError("SELECT 1", {}, Deadlock())
        return "done"

    assert retry_transient(flaky) == "done" and calls == [False, False, True]

    def broken(last: bool) -> None:
        raise OperationalError("SELECT 1", {}, ValueError("no such table"))

    with pytest.raises(OperationalError):
        retry_transient(broken)


def test_sqlite_worker_transactions_stay_short_while_the_intake_writes_and_grow_when_it_is_idle(
    tmp_path: Path,
) -> None:
    from hub.tasks import worker as worker_module
    from hub.tasks.worker import InProcessWorker

    engine = make_engine(f"sqlite:///{tmp_path / 'steps.db'}")
    try:
        worker = InProcessWorker(processing_engine(engine), batch=50)
        worker._ms_per_message = 5.0
        idle_step = int(worker_module.SQLITE_IDLE_HOLD_MS / 5.0)
        busy_step = int(worker_module.SQLITE_HOLD_MS / 5.0)
        assert busy_step < idle_step <= 50
        assert worker._step() == idle_step  # the intake never wrote: a backlog goes in big transactions
        with write_turn(engine, urgent=True):  # an intake commit
            pass
        assert worker._step() == busy_step  # its next ACKs wait for at most one short transaction
        assert seconds_since_urgent_write(engine) < worker_module.SQLITE_IDLE_S
    finally:
        engine.dispose()


def test_sqlite_worker_ends_its_transaction_for_a_waiting_intake_and_finishes_the_rest_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the intake waits to commit, the in-process worker commits after every message (the ACKs
    wait for one message, not a batch); the messages it left are processed by its next transactions."""
    from hub import pipeline
    from hub.config import Settings
    from hub.ingest.service import Intake
    from hub.store.models import InboundMessage
    from hub.store.schema import upgrade
    from hub.tasks.worker import InProcessWorker
    from tests.builders import adt

    url = f"sqlite:///{tmp_path / 'yield.db'}"
    upgrade(url)
    engine = make_engine(url)
    read_engine = make_engine(url, read_only=True)
    try:
        intake = Intake(engine, Settings())
        ids = [intake.accept(adt(f"W{i}", "A01", mrn=f"W{i}").encode()).message_id for i in range(6)]
        sizes: list[int] = []
        real = pipeline.process_batch

        def counted(*args: Any, **kwargs: Any) -> Any:
            outcomes = real(*args, **kwargs)
            sizes.append(len(outcomes))
            return outcomes

        monkeypatch.setattr("hub.tasks.worker.process_batch", counted)
        monkeypatch.setattr("hub.tasks.worker.urgent_write_waiting", lambda engine: True)
        worker = InProcessWorker(processing_engine(engine), batch=50, read_engine=read_engine)
        worker.dispatch([i for i in ids if i is not None])  # queued before it starts: one batch of six
        worker.start()
        assert worker.wait_idle(60)
        worker.stop()
        assert sizes == [1] * 6  # one message a transaction, none lost, none twice
        with Session(engine) as s:
            states = set(s.scalars(select(InboundMessage.state)))
        assert states == {"processed"}
    finally:
        read_engine.dispose()
        engine.dispose()
