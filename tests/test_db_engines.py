"""Engines: the intake's commits are durable, the workers' are not (their work is re-doable); on SQLite
the intake's commit goes before a waiting worker batch."""

from __future__ import annotations

import threading
import time

from sqlalchemy import text

from hub.db import WriteGate, make_engine, processing_engine


def test_intake_engine_is_durable_and_processing_engine_is_not(database_url: str) -> None:
    durable = make_engine(database_url)
    relaxed = processing_engine(durable)
    try:
        with durable.connect() as a, relaxed.connect() as b:
            if durable.dialect.name == "sqlite":
                assert a.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
                assert b.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
                assert b.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            else:
                assert a.execute(text("SHOW synchronous_commit")).scalar() == "on"
                assert b.execute(text("SHOW synchronous_commit")).scalar() == "off"
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
