"""Real hub processes for the tests: ``hub db upgrade``, ``hub serve`` and ``hub worker`` as subprocesses
of the .venv's ``hub``, on loopback ports of their own, always stopped (process group killed) afterwards."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from hub.ingest.mllp import FrameDecoder, frame

HUB = str(Path(sys.executable).with_name("hub"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def hub_env(database_url: str, var_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a hub process: only the test's settings, none of the caller's HUB_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(
        HUB_DATABASE_URL=database_url,
        HUB_VAR_DIR=str(var_dir),
        HUB_LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def hub_run(args: list[str], env: Mapping[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [HUB, *args], env=dict(env), capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"hub {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


class HubProcess:
    """A ``hub`` subprocess in a process group of its own; its output goes to a log file."""

    def __init__(self, args: list[str], env: Mapping[str, str], log: Path) -> None:
        self.args = args
        self.log_path = log
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [HUB, *args],
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_port(self, port: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"hub {self.args} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"hub {self.args} did not open port {port} within {timeout} s:\n{self.log()}")

    def kill9(self) -> None:
        """SIGKILL the whole process group: no shutdown code runs (a crash)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL if it does not go."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=timeout)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                self.kill9()
        # Children left behind in the group (e.g. Celery's pool) go too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()


class MLLPClient:
    """A blocking MLLP sender that sends one message and waits for its ACK, as real senders do."""

    def __init__(self, port: int, timeout: float = 10) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.decoder = FrameDecoder()
        self._acks: list[bytes] = []

    def send(self, raw: bytes) -> str:
        """The ACK as text; raises OSError/ConnectionError when the connection fails first."""
        self.sock.sendall(frame(raw))
        while not self._acks:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the hub before an ACK")
            self._acks += [a for a in self.decoder.feed(data) if isinstance(a, bytes)]
        return self._acks.pop(0).decode("utf-8", "replace")

    def close(self) -> None:
        self.sock.close()
