"""The Celery application (``HUB_BROKER_URL``): tasks carry message ids (one intake commit's worth, at
most ``HUB_WORKER_BATCH`` per task, processed in one transaction), acknowledged late so a worker that dies
mid-task leaves the messages to be redelivered (processing is idempotent on state)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from functools import lru_cache

from celery import Celery
from sqlalchemy import Engine

from hub.config import get_settings
from hub.tasks.pacing import BurstPacer

log = logging.getLogger(__name__)

PROCESS_TASK = "hub.process_message"  # one id (kept for tasks already queued)
PROCESS_BATCH_TASK = "hub.process_messages"  # a list of ids, one transaction


@lru_cache(maxsize=8)
def make_celery(broker_url: str | None = None, queue: str | None = None) -> Celery:
    settings = get_settings()
    url = broker_url or settings.broker_url
    app = Celery("hub", broker=url, set_as_current=False)
    maps = get_settings().mappings_dir
    if maps is not None:
        from hub.mapping import configure

        configure(maps)
    app.conf.update(
        task_default_queue=queue or settings.celery_queue,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=16,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        broker_pool_limit=4,
    )

    @app.task(name=PROCESS_TASK, bind=True, max_retries=None)  # type: ignore[untyped-decorator]
    def process_message(self: object, message_id: int) -> None:
        _process([message_id])

    @app.task(name=PROCESS_BATCH_TASK, bind=True, max_retries=None)  # type: ignore[untyped-decorator]
    def process_messages(self: object, message_ids: list[int]) -> None:
        _process(message_ids)

    return app


@lru_cache(maxsize=1)
def _engine() -> Engine:
    from hub.db import get_engine, processing_engine

    return processing_engine(get_engine())


@lru_cache(maxsize=1)
def _pacer() -> BurstPacer:
    settings = get_settings()
    return BurstPacer.for_machine(settings.var_dir, settings.worker_burst_share)


def _process(ids: Sequence[int]) -> None:
    from hub.db import retry_transient, session_scope
    from hub.pipeline import process_batch

    def work(last: bool) -> None:
        with session_scope(_engine()) as session:
            process_batch(session, ids, retrying=not last)

    pacer = _pacer()
    pacer.before()  # a burst of this machine's intake goes first
    started = time.monotonic()
    try:
        retry_transient(work)
    finally:
        pacer.after(time.monotonic() - started)


class CeleryDispatcher:
    """Publishes message ids as tasks of at most ``batch`` ids each.

    With ``linger_ms`` > 0, ids are gathered for up to that long (or until ``batch`` are waiting) by a
    publisher thread, so that the small commits of send-and-wait senders still make tasks of many ids
    (a task costs the worker far more than a message). Ids not yet published when the process dies
    are not lost: their messages are stored ``received`` and the sweeper dispatches them again."""

    def __init__(
        self, broker_url: str, queue: str | None = None, batch: int | None = None, linger_ms: float = 0.0
    ) -> None:
        self.app = make_celery(broker_url, queue)
        self.batch = max(1, batch or get_settings().worker_batch)
        self.linger_s = max(0.0, linger_ms / 1000.0)
        self._pending: list[int] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    def __call__(self, ids: Sequence[int]) -> None:
        if not self.linger_s:
            self.publish(ids)
            return
        with self._cond:
            if self._closed:
                raise RuntimeError("dispatcher closed")
            self._pending.extend(ids)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hub-celery-publish", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def publish(self, ids: Sequence[int]) -> None:
        ids = list(ids)
        if not ids:
            return
        with self.app.producer_or_acquire() as producer:
            for start in range(0, len(ids), self.batch):
                self.app.send_task(
                    PROCESS_BATCH_TASK, args=[ids[start : start + self.batch]], producer=producer
                )

    def close(self, timeout: float = 10.0) -> None:
        """Publish what is waiting and stop the publisher thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._pending) or self._closed)
                if not self._closed and len(self._pending) < self.batch:
                    deadline = time.monotonic() + self.linger_s
                    self._cond.wait_for(
                        lambda: len(self._pending) >= self.batch or self._closed,
                        timeout=max(0.0, deadline - time.monotonic()),
                    )
                ids, self._pending = self._pending, []
                closed = self._closed
            try:
                self.publish(ids)
            except Exception:  # the broker is away: the sweeper dispatches these again later
                log.exception("could not publish %d message id(s); the sweeper will retry", len(ids))
            if closed:
                with self._cond:
                    if not self._pending:
                        return
