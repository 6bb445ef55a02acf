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


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from hub.runtime import Runtime

        runtime = Runtime(settings)
        app.state.runtime = runtime
        await runtime.start()
        from hub.audit import trail_of

        trail_of(app)  # appends what the journal of a killed process holds, before the first request
        try:
            yield
        finally:
            audit = getattr(app.state, "audit", None)
            if audit is not None:
                audit.stop()  # what was recorded is written before the store closes
            await runtime.stop()

    app = FastAPI(title="hub", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings

    from hub.audit import AuditMiddleware
    from hub.fhir_api.errors import install as install_error_handlers
    from hub.ratelimit import RateLimiter

    app.add_middleware(AuditMiddleware)
    if settings.rate_api_per_s > 0:
        app.state.rate_limiter = RateLimiter(settings.rate_api_per_s, settings.rate_api_burst, "client")
    if settings.rate_intake_per_s > 0:
        app.state.intake_limiter = RateLimiter(
            settings.rate_intake_per_s, settings.rate_intake_burst, "sender"
        )

    install_error_handlers(app)

    from hub.site import router as site_router

    app.include_router(site_router)  # `/` and the API reference at /docs, its assets served from here

    from hub.ingest.http import router as hl7_router
    from hub.ingest.operator import router as operator_router

    app.include_router(hl7_router)
    app.include_router(operator_router)

    from hub.audit import router as audit_router
    from hub.auth_api import public as auth_public
    from hub.auth_api import router as auth_router

    app.include_router(auth_public)
    app.include_router(auth_router)
    app.include_router(audit_router)  # before the FHIR routers: /fhir/AuditEvent is the audit trail's

    from hub.auth import mpi_guard
    from hub.fhir_api.sessions import write_session
    from hub.mpi.router import get_session as mpi_session
    from hub.mpi.router import page_router as mpi_page_router
    from hub.mpi.router import router as mpi_router

    app.include_router(mpi_page_router)  # the review page's shell: no patient data, no token needed
    # Before the FHIR routers: /fhir/Patient/$match and $ihe-pix must win over /fhir/{type}/{id}.
    app.include_router(mpi_router, dependencies=[Depends(mpi_guard)])
    app.dependency_overrides[mpi_session] = write_session

    from hub.export.router import router as export_router

    app.include_router(export_router)  # before /fhir/{type}/{id}: /fhir/$export-status/… is its own

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

    from hub import metrics
    from hub.auth import require_role
    from hub.fhir_api.sessions import _engines

    app.add_middleware(metrics.HttpTimer)
    registries: dict[int, object] = {}

    @app.get("/metrics", dependencies=[Depends(require_role("admin"))], summary="Prometheus metrics")
    def prometheus_metrics(request: Request) -> Response:
        engine = _engines(request)[1]
        registry = registries.get(id(engine))
        if registry is None:
            registry = registries[id(engine)] = metrics.registry_for(engine)
        return metrics.render(registry)  # type: ignore[arg-type]

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
