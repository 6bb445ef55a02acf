"""The in-process worker (embedded default) and the sweeper.

Worker threads take message ids from a local queue in batches and run the pipeline, one transaction per
batch (``HUB_WORKER_BATCH``). The sweeper finds ``received`` messages that nobody processed (a task lost
with a crashed broker or process) and dispatches them again; processing is idempotent on state, so a
message dispatched twice is processed once.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select

from hub.background import Periodic
from hub.config import Settings
from hub.db import (
    is_sqlite,
    processing_engine,
    retry_transient,
    seconds_since_urgent_write,
    session_scope,
    urgent_write_waiting,
    write_turn,
)
from hub.mapping import MappingResult
from hub.pipeline import Outcome, premap, process_batch
from hub.store.models import InboundMessage
from hub.tasks.pacing import BurstPacer

log = logging.getLogger(__name__)

Premapped = dict[int, MappingResult]

SQLITE_HOLD_MS = 10.0  # on SQLite, how long one worker transaction may keep the intake waiting
# ... and while the intake has not written for SQLITE_IDLE_S (a backlog, an import, a replay): bigger
# transactions cost less per message (one message a transaction ≈ 12.7 ms, ten ≈ 9.4, twenty ≈ 7.5 ms
# of CPU an ORU^R01), and the first ACK after the pause waits for one of them at most.
SQLITE_IDLE_HOLD_MS = 100.0
SQLITE_IDLE_S = 0.5
# While the intake commits back to back, worker turns (which its next commit waits for) take at most
# burst_share of the time (hub.tasks.pacing.BurstPacer, paced by SQLite's write gate): the ACKs of a
# burst go first and processing catches up after it. Outside bursts nothing waits.


class InProcessWorker:
    def __init__(
        self,
        engine: Engine,
        threads: int = 1,
        batch: int = 50,
        read_engine: Engine | None = None,
        burst_share: float = 1.0,
    ) -> None:
        self.engine = engine
        self.read_engine = read_engine  # set: messages are parsed and mapped before the write turn
        self.batch = max(1, batch)
        self._queue: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=f"hub-worker-{n}", daemon=True)
            for n in range(max(1, threads))
        ]
        self._sqlite = is_sqlite(engine)
        self._ms_per_message = 1.0  # moving average of the processing time of one message
        self.pacer = BurstPacer(
            burst_share if self._sqlite else 1.0, lambda: seconds_since_urgent_write(self.engine)
        )
        self._idle = threading.Condition()
        self._busy = 0
        self.processed = 0

    @classmethod
    def embedded(cls, settings: Settings, engine: Engine, read_engine: Engine) -> InProcessWorker:
        """The embedded worker ``settings`` describe, for ``engine``'s database: it writes on a
        non-durable twin of it (``processing_engine``, disposed with ``worker.engine``) and maps ahead on
        ``read_engine``."""
        return cls(
            processing_engine(engine),
            settings.worker_threads,
            settings.worker_batch,
            read_engine=read_engine,
            burst_share=settings.worker_burst_share,
        )

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

    def drop_pending(self) -> int:
        """Forget the ids queued and not yet taken (they stay ``received``: the sweeper sends them again);
        the batches in hand finish. The number dropped."""
        dropped = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return dropped
            if item is None:  # a stop request: keep it
                self._queue.put(None)
                return dropped
            dropped += 1

    def _step(self) -> int:
        """Messages per transaction. On SQLite a transaction holds the file's only write lock and the
        intake's next commit (so the next ACKs) waits for it: there, as many as fit in about
        ``SQLITE_HOLD_MS`` (worker commits are cheap: no fsync), or ``SQLITE_IDLE_HOLD_MS`` while the
        intake has been idle for ``SQLITE_IDLE_S``."""
        if not self._sqlite:
            return self.batch
        idle = seconds_since_urgent_write(self.engine) > SQLITE_IDLE_S
        hold = SQLITE_IDLE_HOLD_MS if idle else SQLITE_HOLD_MS
        return max(1, min(self.batch, int(hold / max(self._ms_per_message, 0.01))))

    def _yield(self) -> bool:
        """On SQLite: end the transaction after the current message when the intake waits to commit."""
        return urgent_write_waiting(self.engine)

    def _premap(self, ids: list[int]) -> Premapped:
        """Parse and map before the write turn, on the read engine (a deferred transaction that takes no
        lock): on SQLite the intake's next commit, so the next ACKs, then waits only for the writing
        part of a batch."""
        if self.read_engine is None:
            return {}
        try:
            with session_scope(self.read_engine) as session:
                return premap(session, ids)
        except Exception:  # the batch maps for itself
            log.exception("mapping ahead of the write turn failed")
            return {}

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
                mapped: Premapped = {}
                while ids:
                    self.pacer.before()
                    step = self._step()
                    chunk, ids = ids[:step], ids[step:]
                    started = time.perf_counter()
                    done, rest = len(chunk), []
                    try:
                        mapped.update(self._premap([i for i in chunk if i not in mapped]))

                        def work(
                            last: bool, chunk: list[int] = chunk, mapped: Premapped = mapped
                        ) -> list[Outcome]:
                            with write_turn(self.engine), session_scope(self.engine) as session:
                                return process_batch(
                                    session, chunk, retrying=not last, mapped=mapped, yield_when=self._yield
                                )

                        turn = time.monotonic()
                        try:
                            outcomes = retry_transient(work)
                        finally:
                            self.pacer.after(time.monotonic() - turn)
                        self.processed += len(outcomes)
                        if outcomes:
                            # Ended early for the intake: the rest goes first into the next transaction
                            # (an id above the last one done that was not pending is skipped there).
                            last_done = max(o.message_id for o in outcomes)
                            rest = [i for i in chunk if i > last_done]
                            ids = rest + ids
                            done = max(1, len(chunk) - len(rest))
                    except Exception:  # a broken batch stays 'received'; the sweeper brings it back
                        log.exception("worker batch of %d message(s) failed", len(chunk))
                    for i in set(chunk).difference(rest):  # not coming back: nothing to keep
                        mapped.pop(i, None)
                    per_message = (time.perf_counter() - started) * 1000 / done
                    self._ms_per_message += 0.3 * (per_message - self._ms_per_message)
            finally:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()
            if stop:
                return


def pending_ids(engine: Engine, *, older_than_s: float = 0.0, limit: int = 10000) -> list[int]:
    """Ids of ``received`` messages (optionally only those waiting longer than ``older_than_s``)."""
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than_s)
    with write_turn(engine), session_scope(engine) as session:
        stmt = select(InboundMessage.id).where(InboundMessage.state == "received")
        if older_than_s > 0:
            stmt = stmt.where(InboundMessage.received_at < cutoff)
        return list(session.scalars(stmt.order_by(InboundMessage.id).limit(limit)))


class Sweeper(Periodic):
    """Re-dispatches messages left ``received``: once at start (recovery after a crash), then every
    ``interval_s`` those older than ``after_s`` that it has not itself re-dispatched within the last
    ``after_s``. Behind a backlog (the workers slower than the intake for minutes) a message waits in the
    queue longer than ``after_s`` without being lost: sending the whole backlog again at every sweep only
    stacked one more copy of each waiting task per sweep."""

    name = "hub-sweeper"

    def __init__(
        self, engine: Engine, dispatch: Callable[[Sequence[int]], None], interval_s: float, after_s: float
    ) -> None:
        super().__init__(interval_s)
        self.engine = engine
        self.dispatch = dispatch
        self.after_s = after_s
        self._sent: dict[int, float] = {}  # id -> time.monotonic() of its last re-dispatch

    def sweep(self, older_than_s: float) -> int:
        now = time.monotonic()
        pending = pending_ids(self.engine, older_than_s=older_than_s)
        ids = [i for i in pending if now - self._sent.get(i, float("-inf")) >= self.after_s]
        # Only ids still pending are remembered: the map stays as small as one sweep's list.
        self._sent = {i: self._sent[i] for i in pending if i in self._sent}
        self._sent.update(dict.fromkeys(ids, now))
        if ids:
            log.info("sweeper re-dispatching %d message(s)", len(ids))
            self.dispatch(ids)
        return len(ids)

    def first(self) -> None:
        self.sweep(0.0)

    def tick(self) -> None:
        self.sweep(self.after_s)
