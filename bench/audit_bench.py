"""Audit trail benchmark: what auditing adds to a request, and how fast the writer appends.

    python -m bench audit [--requests 50000] [--database-url URL]

*Per request*: the middleware's work on the request's own path (classify the request, build the event,
queue it), timed over ``--requests`` synthetic read requests. *Writer*: events appended (hash chain,
one transaction per batch) per second to a fresh SQLite file or ``--database-url``. The end-to-end read
latency with auditing on is in ``python -m bench fhir`` (every request there is audited).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hub.audit import AuditMiddleware, AuditTrail, Event, append, verify
from hub.auth import Principal
from hub.db import make_engine
from hub.store.schema import upgrade


class _Sink(AuditTrail):
    """Counts what the middleware records instead of writing it (the request-path cost alone)."""

    def __init__(self) -> None:
        self.n = 0

    def record(self, event: Event) -> None:
        self.n += 1


def per_request_us(requests: int) -> list[float]:
    sink = _Sink()
    app: Any = SimpleNamespace(state=SimpleNamespace(audit=sink))
    mw = AuditMiddleware(app)
    principal = Principal("dr-ani", "clinician", ("user/*.rs",))
    samples = []
    for i in range(requests):
        scope = {
            "type": "http",
            "method": "GET",
            "path": f"/fhir/Observation/o{i}",
            "query_string": b"",
            "client": ("10.0.0.5", 51234),
            "state": {"principal": principal},
            "app": app,
        }
        t = time.perf_counter()
        mw._record(scope, 200)
        samples.append((time.perf_counter() - t) * 1e6)
    assert sink.n == requests
    return samples


def writer_rate(url: str, events: int, batch: int) -> tuple[float, int]:
    engine = make_engine(url)
    now = datetime.now(UTC)
    start = time.perf_counter()
    for i in range(0, events, batch):
        append(
            engine,
            [
                Event(
                    now,
                    "read",
                    "R",
                    "0",
                    200,
                    agent="dr-ani",
                    role="clinician",
                    path=f"/fhir/Patient/p{j}",
                    entity_type="Patient",
                    entity_id=f"p{j}",
                    patient_id=f"p{j}",
                )
                for j in range(i, min(i + batch, events))
            ],
        )
    elapsed = time.perf_counter() - start
    checked, broken = verify(engine)
    engine.dispose()
    assert broken is None
    return events / elapsed, checked


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench audit")
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=200, help="events per writer transaction")
    parser.add_argument("--database-url", help="a migrated database (default: a fresh SQLite file)")
    args = parser.parse_args(argv)
    samples = per_request_us(args.requests)
    qs = statistics.quantiles(samples, n=100)
    print(
        f"request path: p50 {qs[49]:.1f} µs, p99 {qs[98]:.1f} µs per audited request ({args.requests:,} requests)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'audit.db'}"
        if not args.database_url:
            upgrade(url)
        rate, checked = writer_rate(url, args.events, args.batch)
    print(
        f"writer: {rate:,.0f} events/s appended in batches of {args.batch}; chain of {checked:,} rows verified"
    )
    return 0
