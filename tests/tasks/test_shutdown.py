"""Clean stops: ``hub serve`` on SIGTERM (no worker restarted during the shutdown, no leaked-semaphore
warnings), and a worker process whose serving process was killed stops taking messages at once. On
SQLite and on PostgreSQL (each test on a database of its own)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from hub.db import make_engine
from hub.store.models import InboundMessage
from hub.store.schema import upgrade
from tests.processes import HubProcess, free_port, hub_env


@pytest.mark.slow
def test_sigterm_stops_hub_serve_without_restart_or_warnings(tmp_path: Path, fresh_database_url: str) -> None:
    url = fresh_database_url
    upgrade(url)
    mllp = free_port()
    env = hub_env(url, tmp_path / "var", HUB_HTTP_PORT=str(free_port()), HUB_MLLP_PORT=str(mllp))
    env["HUB_LOG_LEVEL"] = "INFO"
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    hub = HubProcess(["serve"], env, tmp_path / "serve.log")
    try:
        hub.wait_port(mllp)
        time.sleep(2.5)  # the worker process and its supervisor run
        os.killpg(hub.pid, signal.SIGTERM)  # the whole group, as Ctrl-C or a service manager does
        assert hub.proc.wait(30) == 0
        time.sleep(1.5)  # a supervisor that restarts the worker would have done it by now
    finally:
        hub.stop()
    log = hub.log_path.read_text()
    assert "Application shutdown complete" in log
    assert "starting another" not in log, log
    assert "leaked semaphore" not in log, log


_ORPHAN = """
import sys, time
from pathlib import Path
from hub.config import Settings
from hub.db import make_engine
from hub.ingest.service import Intake
from hub.tasks.worker_process import WorkerProcess
from tests.builders import oru
settings = Settings(database_url=sys.argv[1], var_dir=Path(sys.argv[2]), worker_batch=1)
intake = Intake(make_engine(sys.argv[1]), settings)
ids = [intake.accept(oru(f"O{i}", mrn=f"M{i}", n_obx=30).encode()).message_id for i in range(400)]
worker = WorkerProcess(settings)
worker.start()
worker.dispatch(ids)
print(worker.pid, flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_an_orphaned_worker_stops_taking_messages_at_once(tmp_path: Path, fresh_database_url: str) -> None:
    url = fresh_database_url
    upgrade(url)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    parent = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN, url, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=env,
    )
    engine = make_engine(url)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the child is busy with the backlog
            with Session(engine) as s:
                done = s.scalar(
                    select(func.count())
                    .select_from(InboundMessage)
                    .where(InboundMessage.state == "processed")
                )
            if done:
                break
            time.sleep(0.1)
        os.kill(parent.pid, signal.SIGKILL)  # the parent alone: not its process group
        parent.wait(10)
        killed = time.monotonic()
        while _alive(child) and time.monotonic() - killed < 15:
            time.sleep(0.05)
        stopped_after = time.monotonic() - killed
        if _alive(child):
            os.kill(child, signal.SIGKILL)
        assert stopped_after < 5, f"the orphaned worker went on for {stopped_after:.1f} s"
        with Session(engine) as s:
            left = s.scalar(
                select(func.count()).select_from(InboundMessage).where(InboundMessage.state == "received")
            )
        assert left and left > 100  # the backlog stays for the next hub serve's sweeper
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait(10)
        if parent.stdout is not None:
            parent.stdout.close()
        engine.dispose()
