"""The embedded worker in a process of its own (``hub serve`` without a broker, ``HUB_WORKER_PROCESS``).

In the serving process the worker threads share one interpreter lock with the intake: while a batch is
mapped and written, the MLLP connections and the committer wait for the lock, and the whole process
(intake and processing together) never uses more than one core. Here an ``InProcessWorker`` runs in a
spawned child process at a lower priority (``HUB_WORKER_NICE``): the intake keeps its interpreter and the
scheduler's preference; the processing takes the other core. The two still share SQLite's single writer
through :class:`hub.db.WriteGate`, whose lock files make the intake's turn come first across processes.

Message ids go to the child over a pipe; a child that dies is started again (what it held stays
``received``, and the sweeper brings it back); a child whose parent died stops.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
import uuid
from collections.abc import Sequence
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from typing import Any

from hub.config import Settings

log = logging.getLogger(__name__)

_SYNC = "sync"
_PARENT_CHECK_S = 0.2  # how often the child checks that its parent is still alive


class WorkerProcess:
    """The interface of ``InProcessWorker`` (start, stop, dispatch, wait_idle) over a child process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._ctx = multiprocessing.get_context("spawn")  # never fork a process that runs threads
        self._inbox: Queue[Any] | None = None
        self._replies: Queue[str] | None = None
        self._proc: BaseProcess | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._watch: threading.Thread | None = None
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        self._spawn()
        self._watch = threading.Thread(target=self._supervise, name="hub-worker-watch", daemon=True)
        self._watch.start()

    def _spawn(self) -> None:
        with self._lock:
            # New queues for every child: one killed inside ``get`` keeps the old queue's read lock.
            self._abandon()
            self._inbox, self._replies = self._ctx.Queue(), self._ctx.Queue()
            self._proc = self._ctx.Process(
                target=_child_main,
                args=(self.settings, self._inbox, self._replies, os.getpid()),
                name="hub-worker",
                daemon=True,
            )
            self._proc.start()

    def _supervise(self) -> None:
        while not self._stopping.wait(1.0):
            proc = self._proc
            if proc is not None and not proc.is_alive() and not self._stopping.is_set():
                log.error(
                    "the worker process %s ended (exit code %s); starting another (its messages stay "
                    "'received' and the sweeper sends them again)",
                    proc.pid,
                    proc.exitcode,
                )
                self._spawn()
                self.restarts += 1  # counted once the new child runs, so a reader sees its pid with it

    def _abandon(self) -> None:
        """Let go of the current queues without waiting for a reader that may be gone (their feeder
        threads would otherwise hold up the exit of this process)."""
        for q in (self._inbox, self._replies):
            if q is not None:
                q.cancel_join_thread()
                q.close()

    def dispatch(self, ids: Sequence[int]) -> None:
        if ids:
            with self._lock:
                inbox = self._inbox
            if inbox is not None:
                inbox.put(list(ids))  # never blocks: a feeder thread writes to the pipe

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until the child has processed everything dispatched before this call (tests)."""
        with self._lock:
            inbox, replies = self._inbox, self._replies
        if inbox is None or replies is None:
            return False
        token = uuid.uuid4().hex
        inbox.put((_SYNC, token, timeout))
        deadline = time.monotonic() + timeout + 5
        while (left := deadline - time.monotonic()) > 0:
            try:
                if replies.get(timeout=left) == token:
                    return True
            except queue.Empty:
                return False
        return False

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        proc = self._proc
        if proc is None:
            return
        if proc.is_alive() and self._inbox is not None:
            self._inbox.put(None)
            proc.join(timeout)
        if proc.is_alive():
            log.warning("the worker process %s did not stop in %.0f s; killing it", proc.pid, timeout)
            proc.kill()  # it ignores SIGTERM (see _child_main)
            proc.join(5)
        with self._lock:
            self._abandon()


def _child_main(settings: Settings, inbox: Queue[Any], replies: Queue[str], parent: int) -> None:
    """The child: an ``InProcessWorker`` fed from ``inbox``, until ``None`` or the parent's death.

    It ignores SIGINT and SIGTERM: a signal sent to the whole process group (Ctrl-C, a service manager's
    stop) is the serving process's to handle, which stops the child through ``inbox`` once the intake is
    closed; killed by the signal instead, the child would be restarted during the shutdown. Should the
    serving process die, the child notices within ``_PARENT_CHECK_S``, takes no new message and ends
    after the one in hand (the rest stay ``received``; the sweeper of the next ``hub serve`` sends them)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from hub import logs

    logs.configure(settings)
    if settings.worker_nice > 0:
        os.nice(settings.worker_nice)
    if settings.mappings_dir:
        from hub.mapping import configure

        configure(settings.mappings_dir)
    from hub.db import make_engine
    from hub.tasks.worker import InProcessWorker

    engine = make_engine(settings.sqlalchemy_url)
    read_engine = make_engine(settings.sqlalchemy_url, read_only=True)
    worker = InProcessWorker.embedded(settings, engine, read_engine)
    worker.start()
    orphaned = threading.Event()

    def watch_parent() -> None:
        while not orphaned.is_set():
            if os.getppid() != parent:
                log.warning("the serving process %s is gone; the worker process stops", parent)
                orphaned.set()
                worker.drop_pending()  # not the queued ids: only the batch in hand is finished
                return
            time.sleep(_PARENT_CHECK_S)

    watcher = threading.Thread(target=watch_parent, name="hub-parent-watch", daemon=True)
    watcher.start()
    try:
        while not orphaned.is_set():
            try:
                item = inbox.get(timeout=_PARENT_CHECK_S)
            except queue.Empty:
                continue
            if orphaned.is_set():
                return
            if item is None:
                return
            if isinstance(item, tuple) and item[0] == _SYNC:
                worker.wait_idle(item[2])
                replies.put(item[1])
                continue
            worker.dispatch(item)
    finally:
        orphaned.set()
        worker.stop()
        worker.engine.dispose()
        read_engine.dispose()
        engine.dispose()
