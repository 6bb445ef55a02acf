"""``GET /metrics``: Prometheus text with the intake, the queue, processing errors and API latency."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from hub import pipeline
from hub.app import create_app
from hub.auth import issue_token
from hub.config import Settings
from hub.db import session_scope
from hub.ingest.service import Intake
from tests.builders import adt
from tests.mpi.builders import ingest, patient


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


def _process(engine: Engine, raw: bytes) -> None:
    accepted = Intake(engine, Settings()).accept(raw)
    assert accepted.code == "AA", accepted.ack
    with session_scope(engine) as s:
        (outcome,) = pipeline.process_batch(s, [accepted.message_id])  # type: ignore[list-item]
    assert outcome.state == "processed", outcome


def test_metrics_count_messages_processed_with_a_warning(client: TestClient, engine: Engine) -> None:
    """hub_messages_with_warning: processed messages whose unmapped report carries invalid-encoding
    (Latin-1 bytes, no MSH-18, no sender charset) or control-characters (a NUL removed)."""
    zero = _samples(client.get("/metrics").text)
    for warning in ("invalid-encoding", "control-characters"):
        assert zero[("hub_messages_with_warning", (("warning", warning),))] == 0
    latin1 = adt("W1", family="MUELLER", given="JOERG").encode().replace(b"MUELLER", b"M\xfcller")
    _process(engine, latin1)
    _process(engine, adt("W2", mrn="MRN0002", family="Wibowo").encode().replace(b"Wibowo", b"Wib\x00owo"))
    _process(engine, adt("W3", mrn="MRN0003").encode())  # clean: counted in neither
    after = _samples(client.get("/metrics").text)
    assert after[("hub_messages", (("state", "processed"),))] == 3
    assert after[("hub_messages_with_warning", (("warning", "invalid-encoding"),))] == 1
    assert after[("hub_messages_with_warning", (("warning", "control-characters"),))] == 1


def test_metrics_count_mpi_outcomes(client: TestClient, engine: Engine) -> None:
    """hub_mpi_sources by outcome (new, matched by the national id or by the probabilistic score) and
    hub_mpi_reviews (a possible match queued for a steward)."""
    nik = "3171015505900003"
    sari_a = patient("RSUD-A", "A-1", "Sari Dewi", "1990-05-15", "female", nik=nik, phone="081234567890")
    sari_b = patient("RS-B", "B-2", "Sari Dewi Lestari", "1990-05-15", "female", nik=nik)
    rizki_a = patient(
        "RSUD-A",
        "A-3",
        "Muhammad Rizki Ramadhan",
        "1990-03-12",
        "male",
        phone="+62 812 3456 7890",
        district="337401",
    )
    rizki_b = patient(
        "RS-B", "B-4", "Moh. Rizky Ramadan", "1990-12-03", "male", phone="0812-3456-7890", district="337401"
    )
    dewi_a = patient("RSUD-A", "A-5", "Dewi Lestari", "1992-08-17", "female")
    dewi_b = patient("RS-B", "B-6", "Dewi Lestary", "1992-08-17", "female")
    with Session(engine) as s, s.begin():
        for facility, res in (
            ("RSUD-A", sari_a),
            ("RS-B", sari_b),
            ("RSUD-A", rizki_a),
            ("RS-B", rizki_b),
            ("RSUD-A", dewi_a),
            ("RS-B", dewi_b),
        ):
            ingest(s, facility, res)
    got = _samples(client.get("/metrics").text)
    outcomes = {labels[0][1]: value for (name, labels), value in got.items() if name == "hub_mpi_sources"}
    assert outcomes == {"new": 4, "national-id": 1, "probabilistic": 1, "manual": 0, "merged": 0}
    assert got[("hub_mpi_reviews", (("status", "open"),))] == 1
