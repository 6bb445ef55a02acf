"""The embedded worker (no broker) and the sweeper.

Worker threads take message ids from a local queue in batches and run the pipeline, one transaction per
batch (``HUB_WORKER_BATCH``). ``hub serve`` runs them in child processes (``HUB_WORKER_PROCESSES``, fed
message ids through a pipe) so that processing has a core of its own and never holds the GIL of the
process whose threads answer ACKs; with 0 they run inside the serving process. The sweeper finds ``received`` messages that nobody processed (a task lost
with a crashed broker or process) and dispatches them again; processing is idempotent on state, so a
message dispatched twice is processed once.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import multiprocessing
import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from sqlalchemy import Engine, select

from hub.config import Settings, get_settings
from hub.db import is_sqlite, make_engine, processing_engine, retry_transient, session_scope, write_turn
from hub.pipeline import process_batch
from hub.store.models import InboundMessage

log = logging.getLogger(__name__)

SQLITE_HOLD_MS = 10.0  # on SQLite, how long one worker transaction may keep the intake waiting


class InProcessWorker:
    def __init__(self, engine: Engine, threads: int = 1, batch: int = 50) -> None:
        self.engine = engine
        self.batch = max(1, batch)
        self._queue: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=f"hub-worker-{n}", daemon=True)
            for n in range(max(1, threads))
        ]
        self._sqlite = is_sqlite(engine)
        self._ms_per_message = 1.0  # moving average of the processing time of one message
        self._idle = threading.Condition()
        self._busy = 0
        self.processed = 0

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout=30)

    def dispatch(self, ids: Sequence[int]) -> None:
        for i in ids:
            self._queue.put(i)

    def _step(self) -> int:
        """Messages per transaction. On SQLite a transaction holds the file's only write lock and the
        intake's next commit (so the next ACKs) waits for it: there, as many as fit in about
        ``SQLITE_HOLD_MS`` (worker commits are cheap: no fsync)."""
        if not self._sqlite:
            return self.batch
        return max(1, min(self.batch, int(SQLITE_HOLD_MS / max(self._ms_per_message, 0.01))))

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until the queue is empty and no batch is running (tests, ``hub import``)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._queue.empty() and self._busy == 0, timeout=timeout)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            ids = [first]
            stop = False
            while len(ids) < self.batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                ids.append(nxt)
            with self._idle:
                self._busy += 1
            try:
                while ids:
                    step = self._step()
                    chunk, ids = ids[:step], ids[step:]
                    started = time.perf_counter()
                    try:

                        def work(chunk: list[int] = chunk) -> int:
                            with write_turn(self.engine), session_scope(self.engine) as session:
                                return len(process_batch(session, chunk))

                        self.processed += retry_transient(work)
                    except Exception:  # a broken batch stays 'received'; the sweeper brings it back
                        log.exception("worker batch of %d message(s) failed", len(chunk))
                    per_message = (time.perf_counter() - started) * 1000 / len(chunk)
                    self._ms_per_message += 0.3 * (per_message - self._ms_per_message)
            finally:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()
            if stop:
                return


class ProcessWorker:
    """The embedded worker in ``processes`` child processes (spawned, so nothing of the parent's threads
    or connections is inherited). Batches of ids go to the children in turn; a child that died is
    started again at the next dispatch, and the ids it held are still ``received`` in the store, where
    the sweeper finds them. A child ends when its pipe closes: when the parent stops, or dies."""

    def __init__(self, settings: Settings, processes: int = 1) -> None:
        self.settings = settings
        self._ctx = multiprocessing.get_context("spawn")
        self._children: list[tuple[BaseProcess, Connection] | None] = [None] * max(1, processes)
        self._next = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            for n in range(len(self._children)):
                self._children[n] = self._spawn()

    def _spawn(self) -> tuple[BaseProcess, Connection]:
        receive, send = self._ctx.Pipe(duplex=False)
        proc = self._ctx.Process(
            target=_child_main, args=(self.settings, receive), name="hub-worker", daemon=True
        )
        proc.start()
        receive.close()  # the child's end: the parent keeps only its sending end
        return proc, send

    def dispatch(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        with self._lock:
            n = self._next
            self._next = (n + 1) % len(self._children)
            child = self._children[n]
            if child is None or not child[0].is_alive():
                if child is not None:
                    log.warning(
                        "worker process %s ended (exit code %s); starting another", n, child[0].exitcode
                    )
                    child[1].close()
                child = self._children[n] = self._spawn()
            try:
                child[1].send(list(ids))
            except (BrokenPipeError, OSError):  # it died just now: the sweeper brings the ids back
                log.warning("worker process %s is gone; %d id(s) left to the sweeper", n, len(ids))

    def stop(self, timeout: float = 30.0) -> None:
        """Close the pipes: each child finishes what it was given, then exits."""
        with self._lock:
            children = [c for c in self._children if c is not None]
            self._children = [None] * len(self._children)
        for _, send in children:
            send.close()
        deadline = time.monotonic() + timeout
        for proc, _ in children:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
                proc.join(5)


def _child_main(settings: Settings, receive: Connection) -> None:
    """A worker child: the parent's settings, a processing engine of its own, worker threads fed from
    the pipe until it closes."""
    _end_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    get_settings.use(settings)
    if settings.mappings_dir:
        from hub.mapping import configure

        configure(settings.mappings_dir)
    engine = processing_engine(make_engine(settings.sqlalchemy_url))
    worker = InProcessWorker(engine, settings.worker_threads, settings.worker_batch)
    worker.start()
    try:
        while True:
            try:
                ids = receive.recv()
            except (EOFError, OSError):
                break
            worker.dispatch(ids)
    finally:
        worker.stop()
        engine.dispose()


def _end_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (a kill -9 of ``hub serve`` leaves no
    worker behind); elsewhere the closed pipe ends it after its current batch."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return


def pending_ids(engine: Engine, *, older_than_s: float = 0.0, limit: int = 10000) -> list[int]:
    """Ids of ``received`` messages (optionally only those waiting longer than ``older_than_s``)."""
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
    with write_turn(engine), session_scope(engine) as session:
        stmt = select(InboundMessage.id).where(InboundMessage.state == "received")
        if older_than_s > 0:
            stmt = stmt.where(InboundMessage.received_at < cutoff)
        return list(session.scalars(stmt.order_by(InboundMessage.id).limit(limit)))


class Sweeper:
    """Re-dispatches messages left ``received``: once at start (recovery after a crash), then every
    ``interval_s`` those older than ``after_s``."""

    def __init__(
        self, engine: Engine, dispatch: Callable[[Sequence[int]], None], interval_s: float, after_s: float
    ) -> None:
        self.engine = engine
        self.dispatch = dispatch
        self.interval_s = interval_s
        self.after_s = after_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hub-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def sweep(self, older_than_s: float) -> int:
        ids = pending_ids(self.engine, older_than_s=older_than_s)
        if ids:
            log.info("sweeper re-dispatching %d message(s)", len(ids))
            self.dispatch(ids)
        return len(ids)

    def _run(self) -> None:
        try:
            self.sweep(0.0)
        except Exception:
            log.exception("initial sweep failed")
        while not self._stop.wait(self.interval_s):
            try:
                self.sweep(self.after_s)
            except Exception:
                log.exception("sweep failed")
