"""The running hub: intake (group commit), the processing dispatch (Celery or in-process worker), the
sweeper and the MLLP listener, started and stopped together by the app's lifespan."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from hub.config import Settings
from hub.db import make_engine
from hub.ingest.listener import MLLPServer
from hub.ingest.service import Intake
from hub.tasks.worker import InProcessWorker, Sweeper
from hub.tasks.worker_process import WorkerProcess

if TYPE_CHECKING:
    from hub.tasks.celery_app import CeleryDispatcher

log = logging.getLogger(__name__)


class Runtime:
    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        if settings.mappings_dir:
            from hub.mapping import configure

            configure(settings.mappings_dir)
        self.engine = engine or make_engine(settings.sqlalchemy_url)
        self.read_engine = make_engine(settings.sqlalchemy_url, read_only=True)
        self.worker: InProcessWorker | WorkerProcess | None = None
        self.worker_engine: Engine | None = None
        self.celery: CeleryDispatcher | None = None
        self.dispatch: Callable[[Sequence[int]], None]
        if settings.broker_url:
            from hub.tasks.celery_app import CeleryDispatcher

            self.celery = CeleryDispatcher(
                settings.broker_url, settings.celery_queue, settings.worker_batch, settings.celery_linger_ms
            )
            self.dispatch = self.celery
        elif settings.worker_enabled and settings.worker_process:
            self.worker = WorkerProcess(settings)
            self.dispatch = self.worker.dispatch
        elif settings.worker_enabled:
            threads = InProcessWorker.embedded(settings, self.engine, self.read_engine)
            self.worker, self.worker_engine = threads, threads.engine
            self.dispatch = threads.dispatch
        else:
            self.dispatch = _nowhere
        self.intake = Intake(self.engine, settings, self.dispatch)
        self.sweeper = Sweeper(self.engine, self.dispatch, settings.sweep_interval_s, settings.sweep_after_s)
        self.mllp: MLLPServer | None = MLLPServer(self.intake, settings) if settings.mllp_enabled else None
        from hub.export.jobs import ExportRunner

        self.exports = ExportRunner(self.engine, settings) if settings.export_runner else None

    async def start(self) -> None:
        self.intake.start()
        if self.worker is not None:
            self.worker.start()
        if self.settings.broker_url or self.worker is not None:
            self.sweeper.start()
        if self.exports is not None:
            self.exports.start()
        if self.mllp is not None:
            await self.mllp.start()

    async def stop(self) -> None:
        if self.mllp is not None:
            await self.mllp.stop()
        self.intake.stop()
        self.sweeper.stop()
        if self.exports is not None:
            self.exports.stop()
        if self.celery is not None:
            self.celery.close()
        if self.worker is not None:
            self.worker.stop()
        if self.worker_engine is not None:
            self.worker_engine.dispose()
        self.engine.dispose()
        self.read_engine.dispose()


def _nowhere(ids: Sequence[int]) -> None:
    """No broker and no worker: messages stay ``received`` until a worker runs."""
