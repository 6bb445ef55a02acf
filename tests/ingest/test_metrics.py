"""``GET /metrics``: Prometheus text with the intake, the queue, processing errors and API latency."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from hub.app import create_app
from hub.auth import issue_token
from hub.config import Settings
from tests.builders import adt


@pytest.fixture
def client(engine: Engine, database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(database_url=database_url, mllp_enabled=False, worker_enabled=False, var_dir=tmp_path)
    with TestClient(create_app(settings)) as c:
        c.headers["Authorization"] = "Bearer " + issue_token(settings, "admin")
        yield c


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_count_messages_queue_and_latency(client: TestClient) -> None:
    before = _samples(client.get("/metrics").text)
    settings = client.app.state.settings  # type: ignore[attr-defined]
    sender = {"Authorization": "Bearer " + issue_token(settings, "sender", facilities=["RSUD_SEHAT"])}
    client.post("/hl7/v2", content=adt("M1").encode(), headers=sender)
    client.post("/hl7/v2", content=b"garbage", headers=sender)
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    after = _samples(r.text)
    assert after[("hub_messages", (("state", "received"),))] == 1
    assert after[("hub_messages", (("state", "rejected"),))] == 1
    assert after[("hub_queue_depth", ())] == 1 and after[("hub_queue_oldest_age_seconds", ())] >= 0
    key = ("hub_intake_messages_total", (("code", "AA"), ("transport", "http")))
    assert after[key] - before.get(key, 0) == 1
    assert (
        after[("hub_ack_latency_seconds_count", ())] - before.get(("hub_ack_latency_seconds_count", ()), 0)
        == 2
    )
    route = (
        "hub_http_request_duration_seconds_count",
        (("method", "POST"), ("route", "/hl7/v2"), ("status", "2xx")),
    )
    assert after[route] >= 1


def test_metrics_need_an_admin_token(client: TestClient) -> None:
    clinician = issue_token(client.app.state.settings, "clinician")  # type: ignore[attr-defined]
    assert client.get("/metrics", headers={"Authorization": f"Bearer {clinician}"}).status_code == 403
