"""The embedded worker in child processes (``HUB_WORKER_PROCESSES``) and the cross-process write turn
that keeps ACKs first on SQLite."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

from sqlalchemy import Engine, func, select

from hub.config import Settings
from hub.db import make_engine, write_turn
from hub.ingest.service import Intake
from hub.store.models import InboundMessage, MessageResource
from hub.store.schema import upgrade
from hub.tasks.worker import ProcessWorker
from tests.builders import adt


def _states(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(select(InboundMessage.state, func.count()).group_by(InboundMessage.state)).all()
    return {state: int(n) for state, n in rows}


def _wait_processed(engine: Engine, n: int, timeout: float = 60) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    states = _states(engine)
    while states.get("processed", 0) < n and time.monotonic() < deadline:
        time.sleep(0.1)
        states = _states(engine)
    return states


def test_child_processes_process_what_the_intake_dispatches_and_a_dead_child_is_replaced(
    fresh_database_url: str, tmp_path: Path
) -> None:
    upgrade(fresh_database_url)
    settings = Settings(database_url=fresh_database_url, var_dir=tmp_path, worker_processes=2)
    engine = make_engine(fresh_database_url)
    worker = ProcessWorker(settings, processes=2)
    worker.start()
    intake = Intake(engine, settings, worker.dispatch)
    intake.start()
    try:
        for i in range(6):
            assert intake.accept(adt(f"PW{i}", mrn=f"M{i}").encode()).code == "AA"
        assert _wait_processed(engine, 6) == {"processed": 6}
        with engine.connect() as conn:  # each one wrote its resources
            written = conn.scalar(select(func.count(func.distinct(MessageResource.message_id))))
        assert written == 6

        children = [c for c in worker._children if c is not None]
        assert len(children) == 2 and all(proc.is_alive() for proc, _ in children)
        victim = children[0][0]
        assert victim.pid is not None and victim.pid != os.getpid()
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(10)
        # Both children get work in turn: the next dispatches reach the dead one's slot and start another.
        for i in range(6, 10):
            assert intake.accept(adt(f"PW{i}", mrn=f"M{i}").encode()).code == "AA"
        assert _wait_processed(engine, 10) == {"processed": 10}
        alive = [c for c in worker._children if c is not None]
        assert all(proc.is_alive() for proc, _ in alive) and victim not in [p for p, _ in alive]
    finally:
        intake.stop()
        worker.stop()
        engine.dispose()
    assert all(c is None for c in worker._children)


def _hold_turn(url: str, held: str, released: str, seconds: float) -> None:
    engine = make_engine(url)
    with write_turn(engine):
        Path(held).touch()
        time.sleep(seconds)
        Path(released).touch()
    engine.dispose()


def test_the_write_turn_excludes_other_processes_and_wakes_the_waiter_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'gate.db'}"
    held, released = tmp_path / "held", tmp_path / "released"
    ctx = multiprocessing.get_context("spawn")
    child = ctx.Process(target=_hold_turn, args=(url, str(held), str(released), 0.5))
    child.start()
    try:
        deadline = time.monotonic() + 30
        while not held.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert held.exists()
        engine = make_engine(url)
        started = time.monotonic()
        with write_turn(engine, urgent=True):
            # The child's turn was over before ours began, and we were not kept waiting much beyond it
            # (SQLite's own busy handler would sleep in steps of up to 100 ms).
            assert released.exists()
            waited = time.monotonic() - started
        engine.dispose()
        assert 0.2 < waited < 2.0
    finally:
        child.join(10)
    assert child.exitcode == 0
