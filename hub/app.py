"""create_app(): the FastAPI application (FHIR API, HL7 over HTTP, operator API), its lifespan and its
exception handlers."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response

from hub import __version__
from hub.config import Settings, get_settings
from hub.errors import HubError


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from hub.runtime import Runtime

        runtime = Runtime(settings)
        app.state.runtime = runtime
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(title="hub", version=__version__, lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.settings = settings

    @app.exception_handler(HubError)
    async def _hub_error(request: Request, exc: HubError) -> Response:
        from hub.fhir.outcome import operation_outcome

        return Response(
            operation_outcome("error", exc.code, exc.message),
            status_code=exc.http_status,
            media_type="application/fhir+json",
            headers=getattr(exc, "headers", None),
        )

    from hub.ingest.http import router as hl7_router
    from hub.ingest.operator import router as operator_router

    app.include_router(hl7_router)
    app.include_router(operator_router)

    from hub.auth import mpi_guard
    from hub.fhir_api.sessions import write_session
    from hub.mpi.router import get_session as mpi_session
    from hub.mpi.router import page_router as mpi_page_router
    from hub.mpi.router import router as mpi_router

    app.include_router(mpi_page_router)  # the review page's shell: no patient data, no token needed
    # Before the FHIR routers: /fhir/Patient/$match and $ihe-pix must win over /fhir/{type}/{id}.
    app.include_router(mpi_router, dependencies=[Depends(mpi_guard)])
    app.dependency_overrides[mpi_session] = write_session

    from hub.stats.router import fhir_router as stats_fhir_router
    from hub.stats.router import page_router as stats_page_router
    from hub.stats.router import router as stats_router

    app.include_router(stats_page_router)  # the dashboard's shell and its chart library: public
    app.include_router(stats_router)  # before the FHIR routers: /fhir/Measure is computed, not stored
    app.include_router(stats_fhir_router)

    from hub.fhir_api.routers import public as fhir_public
    from hub.fhir_api.routers import router as fhir_router

    app.include_router(fhir_public)
    app.include_router(fhir_router)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    _freeze_startup_objects()
    return app


_frozen = False


def _freeze_startup_objects() -> None:
    """Once per process: move everything imported and built so far (modules, the app, its routes) out of
    the cyclic collector's reach. Full collections then scan only what requests create, which takes a
    full collection from tens of milliseconds (a latency spike on whichever request triggers it) to a few."""
    global _frozen
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()
