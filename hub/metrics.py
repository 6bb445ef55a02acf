"""Prometheus metrics (``GET /metrics``, admin token): what an operator watches.

Counted in the serving process as things happen: messages accepted by transport and ACK code
(``hub_intake_messages_total``, whose rate is the intake rate), the time from receipt to ACK
(``hub_ack_latency_seconds``), and the API's latency by route (``hub_http_request_duration_seconds``).
Read from the database at each scrape (so they are right whichever process did the work: the embedded
worker process, ``hub worker``): messages by state (``hub_messages``), the queue of ``received`` messages
and the age of its oldest (``hub_queue_depth``, ``hub_queue_oldest_age_seconds``), failed messages by
error code (``hub_processing_errors``), processed messages whose report carries a warning
(``hub_messages_with_warning``: ``invalid-encoding``, ``control-characters``), and MPI outcomes: source
Patients by how they are linked (``hub_mpi_sources``: ``new``, ``national-id``, ``probabilistic``,
``manual``, ``merged``) and possible-match reviews queued, by status (``hub_mpi_reviews``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, func, select, text
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# The warnings the pipeline puts in a message's unmapped report (an entry with a "warning" key).
WARNINGS = ("invalid-encoding", "control-characters")
_WARNED = {
    "postgresql": (
        "SELECT e.value ->> 'warning', count(DISTINCT m.id) FROM inbound_message m"
        " CROSS JOIN LATERAL jsonb_array_elements("
        "CASE WHEN jsonb_typeof(m.unmapped) = 'array' THEN m.unmapped ELSE '[]'::jsonb END) AS e(value)"
        " WHERE m.state = 'processed' AND e.value ? 'warning' GROUP BY 1"
    ),
    "sqlite": (
        "SELECT json_extract(e.value, '$.warning'), count(DISTINCT m.id) FROM inbound_message m,"
        " json_each(CASE WHEN json_type(m.unmapped) = 'array' THEN m.unmapped ELSE '[]' END) AS e"
        " WHERE m.state = 'processed' AND json_extract(e.value, '$.warning') IS NOT NULL GROUP BY 1"
    ),
}
# Automatic links whose source shares its NIK (a ``nik:`` blocking key) with another source of the same
# golden record: the national id decided (it does whenever it agrees and is not suspect); the other
# automatic links were decided by the probabilistic score.
_BY_NIK = (
    "SELECT count(DISTINCT s.id) FROM mpi_source s"
    " JOIN mpi_block bs ON bs.source_id = s.id AND bs.key LIKE 'nik:%'"
    " JOIN mpi_block bt ON bt.key = bs.key AND bt.source_id <> s.id"
    " JOIN mpi_source t ON t.id = bt.source_id AND t.golden_id = s.golden_id"
    " WHERE s.link_kind = 'auto'"
)
_LINK_KINDS = {"new": "new", "manual": "manual", "merge": "merged"}

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
            "hub_mpi_reviews", "MPI possible-match reviews queued, by status", labels=["status"]
        )
        warned = GaugeMetricFamily(
            "hub_messages_with_warning",
            "Processed messages whose unmapped report carries a warning, by warning",
            labels=["warning"],
        )
        sources = GaugeMetricFamily(
            "hub_mpi_sources",
            "MPI source Patients by outcome: new (own golden record), national-id or probabilistic"
            " (matched automatically), manual (a steward's decision), merged",
            labels=["outcome"],
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
            warnings = _warned(conn)
            outcomes = _mpi_outcomes(conn)
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
        for code in sorted(set(WARNINGS) | set(warnings)):
            warned.add_metric([code], float(warnings.get(code, 0)))
        for outcome in ("new", "national-id", "probabilistic", "manual", "merged"):
            sources.add_metric([outcome], float(outcomes.get(outcome, 0)))
        yield from (states, errors, depth, oldest, reviews, warned, sources)


def _warned(conn: Connection) -> dict[str, int]:
    """Processed messages by warning of their unmapped report (one scan of the reports)."""
    sql = _WARNED.get(conn.dialect.name)
    if sql is None:
        return {}
    return {str(code): int(n) for code, n in conn.execute(text(sql)).all() if code}


def _mpi_outcomes(conn: Connection) -> dict[str, int]:
    """Source Patients by how they are linked now; the automatic links split by what decided them."""
    from hub.store.models import MpiSource as S

    kinds = {str(k): int(n) for k, n in conn.execute(select(S.link_kind, func.count()).group_by(S.link_kind))}
    out = {name: kinds.get(kind, 0) for kind, name in _LINK_KINDS.items()}
    auto = kinds.get("auto", 0)
    by_nik = int(conn.execute(text(_BY_NIK)).scalar() or 0) if auto else 0
    out["national-id"] = by_nik
    out["probabilistic"] = auto - by_nik
    return out


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
