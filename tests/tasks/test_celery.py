"""Celery on the real brokers (RabbitMQ and Redis): a real ``hub worker`` process (concurrency 4) on a
PostgreSQL database of its own, each run on a queue of its own that is deleted afterwards. No eager mode:
every task goes through the broker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from kombu import Connection
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from hub.config import Settings
from hub.db import make_engine
from hub.ingest.service import Intake
from hub.store.models import InboundMessage
from hub.tasks.celery_app import PROCESS_TASK, CeleryDispatcher, make_celery
from hub.tasks.worker import Sweeper
from tests.conftest import RABBITMQ_URL, REDIS_URL, fresh_pg_database, require_broker
from tests.ordering import assert_encounters_finished, assert_patient_order, burst, require_adt_maps
from tests.processes import HubProcess, hub_env, hub_run

pytestmark = [pytest.mark.slow, pytest.mark.broker, pytest.mark.postgres]

BROKERS = {"rabbitmq": RABBITMQ_URL, "redis": REDIS_URL}


@dataclass
class CeleryHub:
    broker_url: str
    queue: str
    database_url: str
    engine: Engine
    worker: HubProcess

    def intake(self) -> Intake:
        """An intake publishing as `hub serve` does (ids gathered for 20 ms); stop() it, then close its
        dispatcher (``intake.dispatch.close()``) to publish the last ids."""
        return Intake(self.engine, Settings(), CeleryDispatcher(self.broker_url, self.queue, linger_ms=20))

    def wait_processed(self, ids: list[int], timeout: float = 60) -> list[InboundMessage]:
        deadline = time.monotonic() + timeout
        while True:
            with Session(self.engine) as s:
                rows = list(
                    s.scalars(
                        select(InboundMessage).where(InboundMessage.id.in_(ids)).order_by(InboundMessage.id)
                    )
                )
            if len(rows) == len(ids) and all(r.state != "received" for r in rows):
                return rows
            if time.monotonic() > deadline or self.worker.proc.poll() is not None:
                left = sum(r.state == "received" for r in rows)
                raise AssertionError(f"{left} of {len(ids)} still received:\n{self.worker.log()}")
            time.sleep(0.2)


def _close(intake: Intake) -> None:
    assert isinstance(intake.dispatch, CeleryDispatcher)
    intake.dispatch.close()


def _delete_queue(broker_url: str, queue: str) -> None:
    with Connection(broker_url, connect_timeout=3) as conn:
        conn.default_channel.queue_delete(queue)
    if broker_url.startswith("redis"):
        import redis

        client = redis.Redis.from_url(broker_url)
        client.delete(f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
        client.close()


@pytest.fixture(scope="module", params=sorted(BROKERS))
def celery_hub(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CeleryHub]:
    broker_url = BROKERS[request.param]
    require_broker(broker_url)
    queue = f"hub-test-{uuid.uuid4().hex[:10]}"
    tmp = tmp_path_factory.mktemp(f"celery-{request.param}")
    with fresh_pg_database() as database_url:
        env = hub_env(database_url, tmp / "var", HUB_BROKER_URL=broker_url, HUB_CELERY_QUEUE=queue)
        hub_run(["db", "upgrade"], env)
        worker = HubProcess(["worker", "--concurrency", "4"], env, tmp / "worker.log")
        engine = make_engine(database_url)
        try:
            yield CeleryHub(broker_url, queue, database_url, engine, worker)
        finally:
            worker.stop()
            engine.dispose()
            _delete_queue(broker_url, queue)


def test_accepted_messages_are_processed_by_a_real_worker(celery_hub: CeleryHub) -> None:
    from tests.builders import oru

    intake = celery_hub.intake()
    intake.start()
    try:
        futures = [intake.submit(oru(f"CEL-{i}", mrn=f"CM{i}").encode()) for i in range(40)]
        accepted = [f.result(timeout=30) for f in futures]
    finally:
        intake.stop()
        _close(intake)
    assert {a.code for a in accepted} == {"AA"}
    ids = [a.message_id for a in accepted if a.message_id is not None]
    assert len(ids) == 40
    rows = celery_hub.wait_processed(ids)
    assert {r.state for r in rows} <= {"processed", "failed"}
    assert [r.id for r in rows if r.attempts != 1] == []


def test_single_message_task_still_processes(celery_hub: CeleryHub) -> None:
    """Tasks of the one-id form (queued by an earlier version) are still understood."""
    from tests.builders import adt

    app = make_celery(celery_hub.broker_url, celery_hub.queue)
    mid = (
        Intake(celery_hub.engine, Settings(), dispatch=None)
        .accept(adt("ONE-1", mrn="ONE").encode())
        .message_id
    )
    assert mid is not None
    app.send_task(PROCESS_TASK, args=[mid])
    (row,) = celery_hub.wait_processed([mid])
    assert row.attempts == 1


def test_sweeper_redispatches_a_lost_task(celery_hub: CeleryHub) -> None:
    from tests.builders import adt

    # Stored and ACKed, but the task never reached the broker (a crash between commit and publish).
    lost = Intake(celery_hub.engine, Settings(), dispatch=None)
    ids = [lost.accept(adt(f"LOST-{i}", mrn=f"LM{i}").encode()).message_id for i in range(5)]
    assert None not in ids
    time.sleep(1.0)
    with Session(celery_hub.engine) as s:
        assert {r.state for r in s.scalars(select(InboundMessage).where(InboundMessage.id.in_(ids)))} == {
            "received"
        }
    sweeper = Sweeper(celery_hub.engine, CeleryDispatcher(celery_hub.broker_url, celery_hub.queue), 30.0, 0.5)
    assert sweeper.sweep(older_than_s=0.5) >= 5
    rows = celery_hub.wait_processed([i for i in ids if i is not None])
    assert [r.id for r in rows if r.attempts != 1] == []


def test_patient_order_holds_across_four_celery_workers(celery_hub: CeleryHub) -> None:
    intake = celery_hub.intake()
    intake.start()
    try:
        futures = [intake.submit(raw) for raw in burst(patients=60, prefix="CO")]
        accepted = [f.result(timeout=30) for f in futures]
    finally:
        intake.stop()
        _close(intake)
    assert {a.code for a in accepted} == {"AA"}
    rows = celery_hub.wait_processed([a.message_id for a in accepted if a.message_id is not None])
    assert_patient_order(rows)


def test_encounters_end_finished_across_four_celery_workers(celery_hub: CeleryHub) -> None:
    require_adt_maps()
    intake = celery_hub.intake()
    intake.start()
    try:
        futures = [intake.submit(raw) for raw in burst(patients=40, prefix="CE")]
        accepted = [f.result(timeout=30) for f in futures]
    finally:
        intake.stop()
        _close(intake)
    rows = celery_hub.wait_processed([a.message_id for a in accepted if a.message_id is not None])
    assert {r.state for r in rows} == {"processed"}, {r.error_text for r in rows if r.state != "processed"}
    assert_patient_order(rows)
    assert_encounters_finished(celery_hub.engine, 40, "CE")


def test_worker_log_is_clean(celery_hub: CeleryHub) -> None:
    """Runs last on each broker: the worker met no error while processing the tests above."""
    assert celery_hub.worker.proc.poll() is None, celery_hub.worker.log()
    log = celery_hub.worker.log()
    assert "Traceback" not in log and "ERROR" not in log, log
