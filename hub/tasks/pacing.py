"""Processing that steps aside while the intake of the same machine is in a burst (``BurstPacer``: the
embedded worker paces its SQLite write turns with it, ``hub worker`` its tasks).

A burst of ACKs and a backlog of processing compete for the same cores when ``hub serve`` and
``hub worker`` share a machine: the intake's next ACK then waits for CPU the worker and its database
backend hold. The intake marks each commit in ``<var_dir>/intake-activity`` (the time on this machine's
monotonic clock and the machine's boot id, so a file read on another machine, or after a reboot, never
counts); a worker whose intake is busy (it committed within ``BUSY_S``) spaces its tasks so that they take
at most ``HUB_WORKER_BURST_SHARE`` of the time, and goes at once when the intake pauses. Workers on other
machines find no such file (or another boot id) and never wait: they take no CPU from the intake.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable
from pathlib import Path

BUSY_S = 0.005  # an intake that committed this recently is in a burst
REST_MAX_S = 1.0  # the longest pause after one task, however long it took
_FORMAT = "d16s"
_FILE = "intake-activity"


def _boot_id() -> bytes:
    try:
        return bytes.fromhex(Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", ""))
    except (OSError, ValueError):
        return b"\0" * 16


_BOOT = _boot_id()


class IntakeBeacon:
    """The intake's side: one small write per commit (the file stays open)."""

    def __init__(self, var_dir: Path) -> None:
        self.path = Path(var_dir) / _FILE
        self._fd = -1

    def mark(self) -> None:
        try:
            if self._fd < 0:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            os.pwrite(self._fd, struct.pack(_FORMAT, time.monotonic(), _BOOT), 0)
        except OSError:  # pacing is an optimisation: an unwritable var dir must not stop an ACK
            self.close()

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


def seconds_since_intake(var_dir: Path) -> float:
    """How long ago the intake of this machine last committed (infinite if never, or elsewhere)."""
    try:
        raw = (Path(var_dir) / _FILE).read_bytes()
        when, boot = struct.unpack(_FORMAT, raw[: struct.calcsize(_FORMAT)])
    except (OSError, struct.error):
        return float("inf")
    if boot != _BOOT:
        return float("inf")
    return max(0.0, time.monotonic() - float(when))


class BurstPacer:
    """The worker's side: ``before()`` each task (or write turn), ``after(seconds)`` with what it took.
    ``since_intake`` tells how long ago the intake last committed or asked to: the beacon for a
    ``hub worker`` (``for_machine``), SQLite's write gate for the embedded worker."""

    def __init__(self, share: float, since_intake: Callable[[], float]) -> None:
        self.share = min(1.0, max(0.01, share))
        self.since_intake = since_intake
        self.next_turn = float("-inf")  # time.monotonic() before which a turn waits for a pause in a burst

    @classmethod
    def for_machine(cls, var_dir: Path, share: float) -> BurstPacer:
        """Paced by the beacon of the intake on this machine (``<var_dir>/intake-activity``)."""
        return cls(share, lambda: seconds_since_intake(var_dir))

    def before(self) -> float:
        """Wait for a pause of a busy intake, at most until this worker's share allows its next turn;
        returns the seconds waited."""
        if self.share >= 1.0:
            return 0.0
        started = time.monotonic()
        while time.monotonic() < self.next_turn and self.since_intake() < BUSY_S:
            time.sleep(0.002)
        return time.monotonic() - started

    def after(self, took_s: float) -> None:
        self.next_turn = time.monotonic() + min(took_s * (1 - self.share) / self.share, REST_MAX_S)
