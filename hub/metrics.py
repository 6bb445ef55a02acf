"""Prometheus metrics (``GET /metrics``, admin token): what an operator watches.

Counted in the serving process as things happen: messages accepted by transport and ACK code
(``hub_intake_messages_total``, whose rate is the intake rate), the time from receipt to ACK
(``hub_ack_latency_seconds``), and the API's latency by route (``hub_http_request_duration_seconds``).
Read from the database at each scrape (so they are right whichever process did the work: the embedded
worker process, ``hub worker``): messages by state (``hub_messages``), the queue of ``received`` messages
and the age of its oldest (``hub_queue_depth``, ``hub_queue_oldest_age_seconds``), failed messages by
error code (``hub_processing_errors``) and MPI outcomes (``hub_mpi_reviews`` by status).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

INTAKE = Counter(
    "hub_intake_messages",
    "Messages answered by the intake, by transport and ACK code",
    ["transport", "code"],
    registry=None,
)
ACK_LATENCY = Histogram(
    "hub_ack_latency_seconds",
    "From a message's receipt to its ACK (its commit)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    registry=None,
)
HTTP_LATENCY = Histogram(
    "hub_http_request_duration_seconds",
    "HTTP request duration by route template, method and status class",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=None,
)


class _StoreCollector(Collector):
    """Gauges read from the database at scrape time (a few GROUP BY queries on indexed columns)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        from hub.store.models import InboundMessage as M
        from hub.store.models import MpiReview

        states = GaugeMetricFamily("hub_messages", "Stored messages by state", labels=["state"])
        errors = GaugeMetricFamily("hub_processing_errors", "Failed messages by error code", labels=["code"])
        depth = GaugeMetricFamily("hub_queue_depth", "Messages received and not yet processed")
        oldest = GaugeMetricFamily(
            "hub_queue_oldest_age_seconds", "Age of the oldest message still received (0: none)"
        )
        reviews = GaugeMetricFamily(
            "hub_mpi_reviews", "MPI possible-match reviews by status", labels=["status"]
        )
        with self.engine.connect() as conn:
            counts = dict(conn.execute(select(M.state, func.count()).group_by(M.state)).all())
            failed = conn.execute(
                select(M.error_code, func.count()).where(M.state == "failed").group_by(M.error_code)
            ).all()
            first = conn.execute(select(func.min(M.received_at)).where(M.state == "received")).scalar()
            try:
                review_rows = conn.execute(
                    select(MpiReview.status, func.count()).group_by(MpiReview.status)
                ).all()
            except Exception:
                review_rows = []
        for state in ("received", "processed", "failed", "rejected", "held"):
            states.add_metric([state], float(counts.get(state, 0)))
        for code, n in failed:
            errors.add_metric([code or ""], float(n))
        depth.add_metric([], float(counts.get("received", 0)))
        age = 0.0
        if first is not None:
            first = first if first.tzinfo else first.replace(tzinfo=UTC)
            age = max(0.0, (datetime.now(UTC) - first).total_seconds())
        oldest.add_metric([], age)
        for status, n in review_rows:
            reviews.add_metric([str(status)], float(n))
        yield from (states, errors, depth, oldest, reviews)


def registry_for(engine: Engine) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=True)
    for metric in (INTAKE, ACK_LATENCY, HTTP_LATENCY):
        registry.register(metric)
    registry.register(_StoreCollector(engine))
    return registry


def render(registry: CollectorRegistry) -> Response:
    return Response(generate_latest(registry), media_type=CONTENT_TYPE)


class HttpTimer:
    """ASGI middleware: the duration of every request, labelled by its route template (never the path
    itself, whose ids would make a series per resource). Plain ASGI, not ``BaseHTTPMiddleware``: it
    adds no task and no copy of the body to a request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            HTTP_LATENCY.labels(template, scope.get("method", ""), f"{status // 100}xx").observe(
                time.perf_counter() - started
            )
