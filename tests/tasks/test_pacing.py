"""Processing steps aside while the intake of the same machine is in a burst (hub.tasks.pacing)."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine

from hub.config import Settings
from hub.ingest.service import Intake
from hub.tasks import pacing
from hub.tasks.pacing import BurstPacer, IntakeBeacon, seconds_since_intake
from tests.builders import oru


def test_the_beacon_tells_how_long_ago_the_intake_of_this_machine_committed(tmp_path: Path) -> None:
    assert seconds_since_intake(tmp_path) == float("inf")  # never
    beacon = IntakeBeacon(tmp_path / "var")
    beacon.mark()
    assert 0 <= seconds_since_intake(tmp_path / "var") < 1
    time.sleep(0.05)
    assert seconds_since_intake(tmp_path / "var") >= 0.05
    beacon.close()

    # Written on another machine (another boot id), or not a beacon at all: it never counts.
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "intake-activity").write_bytes(struct.pack("d16s", time.monotonic(), b"x" * 16))
    assert seconds_since_intake(tmp_path / "other") == float("inf")
    (tmp_path / "other" / "intake-activity").write_bytes(b"garbage")
    assert seconds_since_intake(tmp_path / "other") == float("inf")


def test_an_intake_commit_marks_the_beacon(engine: Engine, tmp_path: Path) -> None:
    intake = Intake(engine, Settings(var_dir=tmp_path))
    intake.start()
    try:
        assert seconds_since_intake(tmp_path) == float("inf")
        intake.submit(oru("PACE1").encode()).result(timeout=30)
        assert seconds_since_intake(tmp_path) < 5
    finally:
        intake.stop()


def test_a_worker_spaces_its_tasks_during_a_burst_and_goes_at_once_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pacer = BurstPacer.for_machine(tmp_path, share=0.1)
    assert pacer.before() < 0.01  # no task yet: nothing to space

    # A burst that lasts 0.3 s (the beacon's clock read is the one thing replaced: a real marking thread
    # can miss a millisecond on a loaded machine, and then the pause rightly ends early).
    burst_ends = time.monotonic() + 0.3
    monkeypatch.setattr(
        pacing, "seconds_since_intake", lambda _dir: 0.0 if time.monotonic() < burst_ends else float("inf")
    )
    pacer.after(0.02)  # a task of 20 ms: the next may wait up to 180 ms for a pause
    assert 0.17 < pacer.before() < 0.3  # its share, not the whole burst

    pacer.after(0.5)  # a long task: capped at a second, and the burst ends before it: no longer than that
    assert 0.0 < pacer.before() < 0.3
    assert pacer.before() < 0.01  # the intake is idle now

    unpaced = BurstPacer.for_machine(tmp_path, share=1.0)
    unpaced.after(1.0)
    burst_ends = time.monotonic() + 1
    assert unpaced.before() == 0.0
