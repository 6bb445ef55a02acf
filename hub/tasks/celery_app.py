"""The Celery application (``HUB_BROKER_URL``): one task per message id, acknowledged late so a worker
that dies mid-task leaves the message to be redelivered (processing is idempotent on state)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from celery import Celery

from hub.config import get_settings

PROCESS_TASK = "hub.process_message"


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
        from hub.db import get_engine, session_scope
        from hub.pipeline import process_batch

        with session_scope(get_engine()) as session:
            process_batch(session, [message_id])

    return app


class CeleryDispatcher:
    """Publishes one task per message id (after the intake commit)."""

    def __init__(self, broker_url: str, queue: str | None = None) -> None:
        self.app = make_celery(broker_url, queue)

    def __call__(self, ids: Sequence[int]) -> None:
        with self.app.producer_or_acquire() as producer:
            for message_id in ids:
                self.app.send_task(PROCESS_TASK, args=[message_id], producer=producer)
