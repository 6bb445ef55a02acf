"""Careless and hostile input at the intake: size limits (HTTP and MLLP), two messages in one body or
frame, character sets, control characters, error texts without values, and errors as ACKs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from starlette.requests import Request

from hub import hl7, pipeline
from hub.app import create_app
from hub.auth import issue_token
from hub.auth_secrets import hash_secret
from hub.config import Settings
from hub.db import session_scope
from hub.ingest.service import Intake
from hub.limits import TooLarge, read_limited
from hub.store.models import InboundMessage, Resource, Sender
from tests.builders import adt

LIMIT = 64 * 1024


@pytest.fixture
def client(engine: Engine, database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        database_url=database_url,
        mllp_enabled=False,
        worker_enabled=False,
        var_dir=tmp_path,
        mllp_max_frame_bytes=LIMIT,
    )
    with TestClient(create_app(settings)) as c:
        c.headers["Authorization"] = "Bearer " + issue_token(settings, "admin")
        yield c


def _sender(client: TestClient) -> dict[str, str]:
    """A sender's token for the builders' facility (HL7 over HTTP needs a sender credential)."""
    settings = client.app.state.settings  # type: ignore[attr-defined]
    return {"Authorization": "Bearer " + issue_token(settings, "sender", facilities=["RSUD_SEHAT"])}


def _rows(engine: Engine) -> list[InboundMessage]:
    with Session(engine) as s:
        return list(s.scalars(select(InboundMessage).order_by(InboundMessage.id)))


def _big(control: str = "BIG1", size: int = LIMIT + 1000) -> bytes:
    head = adt(control).encode()
    return head + b"NTE|1||" + b"x" * size + b"\r"


def test_http_body_over_the_limit_is_413_with_an_ar_ack(client: TestClient, engine: Engine) -> None:
    r = client.post("/hl7/v2", content=_big())
    assert r.status_code == 413
    ack = hl7.parse(r.text)
    assert ack.get("MSA-1") == "AR" and ack.get("MSA-2") == "BIG1" and ack.get("ERR-3") == "207"
    (row,) = _rows(engine)
    assert row.state == "rejected" and len(row.raw) <= 4096  # only its head is kept, not the body


def test_streamed_body_over_the_limit_is_read_no_further() -> None:
    asked = 0

    async def receive() -> dict[str, object]:
        nonlocal asked
        asked += 1
        return {"type": "http.request", "body": b"x" * 65536, "more_body": asked < 1000}

    request = Request({"type": "http", "method": "POST", "headers": []}, receive)  # chunked: no length
    with pytest.raises(TooLarge) as err:
        asyncio.run(read_limited(request, LIMIT))
    assert asked == LIMIT // 65536 + 1 and err.value.size > LIMIT and len(err.value.head) == 4096

    declared = Request(
        {"type": "http", "method": "POST", "headers": [(b"content-length", b"999999999")]}, receive
    )
    asked = 0
    with pytest.raises(TooLarge):
        asyncio.run(read_limited(declared, LIMIT))
    assert asked == 1  # a declared length over the limit: only the head is read


def test_http_body_within_the_limit_is_accepted(client: TestClient) -> None:
    r = client.post("/hl7/v2", content=_big(size=LIMIT - 2000), headers=_sender(client))
    assert r.status_code == 200 and hl7.parse(r.text).get("MSA-1") == "AA"


def test_two_messages_in_one_body_are_refused_naming_the_second(client: TestClient, engine: Engine) -> None:
    body = (adt("TWO1") + adt("TWO2", trigger="A03")).encode()
    r = client.post("/hl7/v2", content=body, headers=_sender(client))
    assert r.status_code == 400
    ack = hl7.parse(r.text)
    assert ack.get("MSA-1") == "AR" and ack.get("MSA-2") == "TWO1"
    err = ack.first("ERR")
    assert "second message" in r.text and err is not None and err.raw(2) == "MSH^2"
    (row,) = _rows(engine)
    assert row.state == "rejected" and row.raw == body  # both kept as received, nothing lost silently


def test_two_messages_in_one_mllp_frame_are_refused(engine: Engine) -> None:
    intake = Intake(engine, Settings())
    body = (adt("F1") + "\n" + adt("F2")).encode()
    accepted = intake.accept(body, "mllp")
    assert accepted.code == "AR" and "second message" in (accepted.ack or "")
    assert intake.accept(adt("F3").encode(), "mllp").code == "AA"


def test_segment_and_field_limits(engine: Engine) -> None:
    intake = Intake(engine, Settings(hl7_max_segments=20, hl7_max_delimiters=500))
    many_segments = adt("S1") + "NTE|1\r" * 30
    assert intake.accept(many_segments.encode()).code == "AR"
    many_fields = adt("S2") + "NTE" + "|" * 600 + "\r"
    refused = intake.accept(many_fields.encode())
    assert refused.code == "AR" and "limit" in (refused.ack or "")
    assert intake.accept(adt("S3").encode()).code == "AA"


def test_unauthenticated_http_sender_gets_an_ack(client: TestClient, engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        s.add(
            Sender(
                facility="RS_LOCKED", name="x", time_zone="Asia/Jakarta", http_secret_hash=hash_secret("pw")
            )
        )
    r = client.post(
        "/hl7/v2", content=adt("L1", facility="RS_LOCKED").encode(), headers={"Authorization": ""}
    )
    assert r.status_code == 401 and r.headers["content-type"].startswith("x-application/hl7-v2+er7")
    ack = hl7.parse(r.text)
    assert ack.get("MSA-1") == "AR" and ack.get("MSA-2") == "L1"


def _process(engine: Engine, raw: bytes) -> InboundMessage:
    accepted = Intake(engine, Settings()).accept(raw)
    assert accepted.code == "AA", accepted.ack
    with session_scope(engine) as s:
        pipeline.process_batch(s, [accepted.message_id])  # type: ignore[list-item]
    with Session(engine) as s:
        row = s.get(InboundMessage, accepted.message_id)
        assert row is not None
        s.expunge(row)
        return row


def _patient_names(engine: Engine) -> list[str]:
    with Session(engine) as s:
        return [
            r.content.decode("utf-8")
            for r in s.scalars(select(Resource).where(Resource.resource_type == "Patient"))
        ]


LATIN1 = adt("LAT1", family="MUELLER", given="JOERG").encode().replace(b"MUELLER^JOERG", b"M\xfcller^J\xf6rg")


def test_latin1_without_msh18_is_decoded_with_the_senders_charset(engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        s.add(Sender(facility="RSUD_SEHAT", name="x", time_zone="Asia/Jakarta", charset="8859/1"))
    row = _process(engine, LATIN1)
    assert row.state == "processed", row.error_text
    assert bytes(row.raw) == LATIN1  # the raw bytes stay as received
    assert any("Müller" in c and "Jörg" in c for c in _patient_names(engine))
    assert not any(u.get("warning") for u in row.unmapped or [])


def test_latin1_without_a_charset_is_processed_with_a_warning(engine: Engine) -> None:
    row = _process(engine, LATIN1)
    assert row.state == "processed", row.error_text
    warnings = [u for u in row.unmapped or [] if u.get("warning")]
    assert [w["warning"] for w in warnings] == ["invalid-encoding"]
    assert "ller" not in warnings[0]["note"]  # names the charset and the offset, not the text


def test_nul_bytes_are_removed_with_a_warning_on_every_database(engine: Engine) -> None:
    raw = adt("NUL1").encode().replace(b"Santoso^Budi", b"San\x00toso^Bu\x01di")
    row = _process(engine, raw)
    assert row.state == "processed", (row.error_code, row.error_text)
    assert [u["warning"] for u in row.unmapped or [] if u.get("warning")] == ["control-characters"]
    assert any("Santoso" in c for c in _patient_names(engine))


def test_nul_in_msh_is_rejected_not_an_internal_error(engine: Engine) -> None:
    raw = adt("NU\x00L2").encode()
    accepted = Intake(engine, Settings()).accept(raw)
    assert accepted.code == "AR" and "\x00" not in (accepted.ack or "")
    (row,) = _rows(engine)
    assert row.state == "rejected" and bytes(row.raw) == raw


def test_internal_errors_keep_no_values_in_error_text_or_log(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    sql = "INSERT INTO resource VALUES ('" + "Sant" + "oso Budi')"  # what a database error carries

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError(sql)

    monkeypatch.setattr(pipeline.store, "upsert_many", explode)
    with caplog.at_level(logging.INFO, logger="hub.pipeline"):
        row = _process(engine, adt("ERR1").encode())
    assert row.state == "failed" and row.error_code == "internal-error"
    assert "Santoso" not in (row.error_text or "") and "INSERT" not in (row.error_text or "")
    assert "Santoso" not in caplog.text and "INSERT INTO" not in caplog.text
    assert f"message {row.id} from RSUD_SEHAT (ADT^A01) failed: internal-error" in caplog.text


def test_no_map_failures_are_logged(engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    msh = adt("NM1").replace("ADT^A01^ADT_A01", "ZZZ^Z99").split("\r", 1)[0]
    with caplog.at_level(logging.INFO, logger="hub.pipeline"):
        accepted = Intake(engine, Settings()).accept((msh + "\rZZ1|1|X1\r").encode())
        with session_scope(engine) as s:
            pipeline.process_batch(s, [accepted.message_id])  # type: ignore[list-item]
    assert f"message {accepted.message_id} from RSUD_SEHAT (ZZZ^Z99) failed: no-map" in caplog.text


def test_the_operator_sees_a_latin1_message_decoded_with_the_senders_charset(
    client: TestClient, engine: Engine
) -> None:
    with Session(engine) as s, s.begin():
        s.add(Sender(facility="RSUD_SEHAT", name="x", time_zone="Asia/Jakarta", charset="8859/1"))
    assert client.post("/hl7/v2", content=LATIN1, headers=_sender(client)).status_code == 200
    (row,) = _rows(engine)
    detail = client.get(f"/hl7/messages/{row.id}").json()
    assert "Müller^Jörg" in detail["raw"] and detail["raw_encoding"] == "latin-1"
