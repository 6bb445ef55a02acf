"""The embedded worker in a process of its own, and the SQLite write gate across processes.

The gate's other side runs in real spawned processes (module-level functions below), so what is tested
is the kernel's ``flock`` between two interpreters, not two threads of one."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from hub.config import Settings
from hub.db import make_engine, seconds_since_urgent_write, urgent_write_waiting, write_turn
from hub.ingest.service import Intake
from hub.store.models import InboundMessage
from hub.store.schema import upgrade
from hub.tasks.worker_process import WorkerProcess
from tests.builders import oru

SPAWN = multiprocessing.get_context("spawn")


def _hold_turn(
    url: str, held: Event, release: Event, saw_urgent: Any, idle_before: Any, idle_after: Any
) -> None:
    """In another process: take a (worker's) write turn, report, hold it until ``release``."""
    engine = make_engine(url)
    idle_before.value = seconds_since_urgent_write(engine)
    with write_turn(engine):
        held.set()
        deadline = time.monotonic() + 20
        while not release.is_set() and time.monotonic() < deadline:
            if urgent_write_waiting(engine):
                saw_urgent.value = 1
                idle_after.value = seconds_since_urgent_write(engine)
            time.sleep(0.005)
    engine.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    upgrade(url)
    return url


def _start_holder(url: str) -> tuple[Any, Event, Event, Any, Any, Any]:
    held, release = SPAWN.Event(), SPAWN.Event()
    saw_urgent, before, after = SPAWN.Value("i", 0), SPAWN.Value("d", 0.0), SPAWN.Value("d", -1.0)
    proc = SPAWN.Process(target=_hold_turn, args=(url, held, release, saw_urgent, before, after))
    proc.start()
    assert held.wait(30), "the other process never got its write turn"
    return proc, held, release, saw_urgent, before, after


def _turn_in_thread(engine: Engine, *, urgent: bool, when: list[float] | None = None) -> threading.Event:
    got = threading.Event()

    def take() -> None:
        with write_turn(engine, urgent=urgent):
            if when is not None:
                when.append(time.monotonic())
            got.set()

    threading.Thread(target=take, daemon=True).start()
    return got


def test_an_intake_waits_for_a_worker_in_another_process_which_sees_it_waiting(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    proc, _, release, saw_urgent, before, after = _start_holder(sqlite_url)
    try:
        assert before.value == float("inf")  # no intake had asked yet
        got = _turn_in_thread(engine, urgent=True)
        assert not got.wait(0.5), "the intake wrote while another process held the turn"
        deadline = time.monotonic() + 5
        while not saw_urgent.value and time.monotonic() < deadline:
            time.sleep(0.01)
        assert saw_urgent.value == 1, "the worker process never saw the intake waiting"
        assert after.value == 0.0  # ... and counted it as busy this very moment
        release.set()
        assert got.wait(5), "the intake did not get the turn once the other process let go"
    finally:
        release.set()
        proc.join(10)
        engine.dispose()


def test_a_turn_held_by_a_killed_process_is_free_at_once(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    proc, _, release, *_ = _start_holder(sqlite_url)
    try:
        got = _turn_in_thread(engine, urgent=False)
        assert not got.wait(0.3)
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGKILL)
        assert got.wait(5), "the lock of a killed process was not released"
    finally:
        release.set()
        proc.join(10)
        engine.dispose()


def test_a_worker_in_this_process_waits_while_an_intake_elsewhere_asks(sqlite_url: str) -> None:
    """A worker does not start a turn while an intake (another process) waits for one: the intake's
    next ACKs do not queue behind a new batch."""
    engine = make_engine(sqlite_url)
    proc, _, release, *_ = _start_holder(sqlite_url)  # a stand-in for a writer holding the turn
    other = make_engine(sqlite_url)
    try:
        # An intake of a third party (a thread with its own gate: as another process would be) asks ...
        intake_at = SPAWN.Value("d", 0.0)
        intake = SPAWN.Process(target=_urgent_turn, args=(sqlite_url, intake_at))
        intake.start()
        deadline = time.monotonic() + 10
        while not urgent_write_waiting(other) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert urgent_write_waiting(other)
        worker_at: list[float] = []
        worker = _turn_in_thread(engine, urgent=False, when=worker_at)
        assert not worker.wait(0.3)
        release.set()  # the holder lets go: the intake goes first, then the worker
        intake.join(10)
        assert intake.exitcode == 0
        assert worker.wait(5)
        assert 0 < intake_at.value < worker_at[0]
    finally:
        release.set()
        proc.join(10)
        engine.dispose()
        other.dispose()


def _urgent_turn(url: str, at: Any) -> None:
    engine = make_engine(url)
    with write_turn(engine, urgent=True):
        at.value = time.monotonic()
        time.sleep(0.05)
    engine.dispose()


def _stored(engine: Engine, intake: Intake, n: int, prefix: str) -> list[int]:
    ids = []
    for i in range(n):
        accepted = intake.accept(oru(f"{prefix}{i}", mrn=f"MRN{prefix}{i}").encode())
        assert accepted.message_id is not None
        ids.append(accepted.message_id)
    return ids


def _states(engine: Engine, ids: list[int]) -> dict[str, int]:
    with Session(engine) as s:
        rows = s.scalars(select(InboundMessage.state).where(InboundMessage.id.in_(ids))).all()
    out: dict[str, int] = {}
    for state in rows:
        out[state] = out.get(state, 0) + 1
    return out


@pytest.mark.slow
def test_the_worker_process_processes_at_lower_priority_and_is_restarted(
    sqlite_url: str, tmp_path: Path
) -> None:
    settings = Settings(database_url=sqlite_url, var_dir=tmp_path, worker_nice=5)
    engine = make_engine(sqlite_url)
    intake = Intake(engine, settings)
    worker = WorkerProcess(settings)
    worker.start()
    try:
        ids = _stored(engine, intake, 5, "WP")
        worker.dispatch(ids)
        assert worker.wait_idle(60)
        assert _states(engine, ids) == {"processed": 5}
        pid = worker.pid
        assert pid is not None and pid != os.getpid()
        assert os.getpriority(os.PRIO_PROCESS, pid) == os.getpriority(os.PRIO_PROCESS, 0) + 5

        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 15
        while worker.restarts == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert worker.restarts == 1 and worker.pid != pid
        more = _stored(engine, intake, 3, "WQ")
        worker.dispatch(more)
        assert worker.wait_idle(60)
        assert _states(engine, more) == {"processed": 3}
    finally:
        worker.stop()
        engine.dispose()
    assert worker.pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(worker.pid, 0)


_ORPHAN = """
import sys, time
from pathlib import Path
from hub.config import Settings
from hub.tasks.worker_process import WorkerProcess
worker = WorkerProcess(Settings(database_url=sys.argv[1], var_dir=Path(sys.argv[2])))
worker.start()
print(worker.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_the_worker_process_stops_when_the_serving_process_dies(sqlite_url: str, tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN, sqlite_url, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        os.kill(parent.pid, signal.SIGKILL)  # the parent alone: not its process group
        parent.wait(10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
            except FileNotFoundError:
                return
            if state == "Z":  # exited; whoever adopted it has not reaped it yet
                return
            time.sleep(0.1)
        os.kill(child, signal.SIGKILL)
        pytest.fail("the worker process outlived its serving process by 20 s")
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait(10)
        if parent.stdout is not None:
            parent.stdout.close()


@pytest.mark.slow
@pytest.mark.parametrize("in_process", [True, False], ids=["worker-process", "worker-threads"])
def test_the_runtime_processes_with_either_embedded_worker(
    sqlite_url: str, tmp_path: Path, in_process: bool
) -> None:
    import asyncio

    from hub.runtime import Runtime

    settings = Settings(
        database_url=sqlite_url, var_dir=tmp_path, mllp_enabled=False, worker_process=in_process
    )
    runtime = Runtime(settings)
    assert isinstance(runtime.worker, WorkerProcess) is in_process
    asyncio.run(runtime.start())
    try:
        ids = _stored(runtime.engine, runtime.intake, 4, "RT")  # dispatched by the intake after its commits
        deadline = time.monotonic() + 60
        while _states(runtime.engine, ids) != {"processed": 4} and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _states(runtime.engine, ids) == {"processed": 4}
    finally:
        asyncio.run(runtime.stop())


def test_during_a_burst_of_the_intake_a_worker_turn_waits_its_share(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a turn of t seconds, with share 0.1, the next waits up to 9 t for a pause of the intake:
    it goes as soon as the intake pauses, and at once when the intake is idle."""
    from hub.tasks import worker as worker_module
    from hub.tasks.worker import InProcessWorker

    engine = make_engine(sqlite_url)
    worker = InProcessWorker(engine, burst_share=0.1)
    unthrottled = InProcessWorker(engine, burst_share=1.0)
    try:
        worker.pacer.after(0.02)
        unthrottled.pacer.after(0.02)
        now = time.monotonic()
        assert 0.17 < worker.pacer.next_turn - now <= 0.18
        assert unthrottled.pacer.next_turn <= now

        worker.pacer.after(0.5)  # capped: a long turn never parks the worker for more than a second
        assert worker.pacer.next_turn - time.monotonic() <= 1.0

        # A burst of 0.3 s as the gate reports it (the gate's own reading is tested above, across
        # processes; a real committing thread can miss SQLITE_BUSY_MS on a loaded machine).
        burst_ends = time.monotonic() + 0.3
        monkeypatch.setattr(
            worker_module,
            "seconds_since_urgent_write",
            lambda _engine: 0.0 if time.monotonic() < burst_ends else float("inf"),
        )
        started = time.monotonic()
        worker.pacer.before()
        waited = time.monotonic() - started
        assert 0.25 < waited < 0.6  # until the burst ended, well before its 1 s turn

        worker.pacer.after(0.5)
        started = time.monotonic()
        worker.pacer.before()  # the intake is idle: at once
        assert time.monotonic() - started < 0.05
    finally:
        engine.dispose()
