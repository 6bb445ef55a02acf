"""The Celery application (``HUB_BROKER_URL``): tasks carry message ids (one intake commit's worth, at
most ``HUB_WORKER_BATCH`` per task, processed in one transaction), acknowledged late so a worker that dies
mid-task leaves the messages to be redelivered (processing is idempotent on state)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from celery import Celery
from sqlalchemy import Engine

from hub.config import get_settings

PROCESS_TASK = "hub.process_message"  # one id (kept for tasks already queued)
PROCESS_BATCH_TASK = "hub.process_messages"  # a list of ids, one transaction


@lru_cache(maxsize=8)
def make_celery(broker_url: str | None = None, queue: str | None = None) -> Celery:
    settings = get_settings()
    url = broker_url or settings.broker_url
    app = Celery("hub", broker=url, set_as_current=False)
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


def _process(ids: Sequence[int]) -> None:
    from hub.db import session_scope
    from hub.pipeline import process_batch

    with session_scope(_engine()) as session:
        process_batch(session, ids)


class CeleryDispatcher:
    """Publishes the ids of one intake commit (or one sweep) as tasks of at most ``batch`` ids each."""

    def __init__(self, broker_url: str, queue: str | None = None, batch: int | None = None) -> None:
        self.app = make_celery(broker_url, queue)
        self.batch = max(1, batch or get_settings().worker_batch)

    def __call__(self, ids: Sequence[int]) -> None:
        ids = list(ids)
        with self.app.producer_or_acquire() as producer:
            for start in range(0, len(ids), self.batch):
                self.app.send_task(
                    PROCESS_BATCH_TASK, args=[ids[start : start + self.batch]], producer=producer
                )
