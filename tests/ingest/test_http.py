"""HL7 v2 over HTTP and the operator's message API, through the ASGI app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from hub.app import create_app
from hub.auth import issue_token
from hub.auth_secrets import hash_secret
from hub.config import Settings
from hub.hl7 import parse
from hub.store.models import Sender
from tests.builders import adt


@pytest.fixture
def client(engine: Engine, database_url: str, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(database_url=database_url, mllp_enabled=False, worker_enabled=False, var_dir=tmp_path)
    with TestClient(create_app(settings)) as c:
        c.headers["Authorization"] = "Bearer " + issue_token(settings, "admin")
        yield c


def _as_sender(client: TestClient, facility: str = "RSUD_SEHAT") -> dict[str, str]:
    settings = client.app.state.settings  # type: ignore[attr-defined]
    return {"Authorization": "Bearer " + issue_token(settings, "sender", facilities=[facility])}


def test_post_hl7_returns_ack(client: TestClient) -> None:
    r = client.post("/hl7/v2", content=adt("H1").encode(), headers=_as_sender(client))
    assert r.status_code == 200
    assert parse(r.text).get("MSA-1") == "AA" and parse(r.text).get("MSA-2") == "H1"
    r = client.post("/hl7/v2", content=b"garbage", headers=_as_sender(client))
    assert r.status_code == 400 and parse(r.text).get("MSA-1") == "AR"


def test_operator_lists_and_inspects(client: TestClient) -> None:
    client.post("/hl7/v2", content=adt("H2").encode(), headers=_as_sender(client))
    client.post("/hl7/v2", content=b"MSH|bad", headers=_as_sender(client))
    listing = client.get("/hl7/messages", params={"state": "rejected"}).json()["messages"]
    assert len(listing) == 1 and listing[0]["state"] == "rejected"
    listing = client.get("/hl7/messages", params={"sender": "RSUD_SEHAT", "type": "ADT^A01"}).json()[
        "messages"
    ]
    assert [m["control_id"] for m in listing] == ["H2"]
    detail = client.get(f"/hl7/messages/{listing[0]['id']}").json()
    assert detail["raw"].startswith("MSH|") and "MSA|AA|H2" in detail["ack"]
    assert detail["state"] == "received" and detail["resources"] == []
    assert client.get("/hl7/messages/999999").status_code == 404
    clinician = issue_token(client.app.state.settings, "clinician")  # type: ignore[attr-defined]
    assert client.get("/hl7/messages", headers={"Authorization": f"Bearer {clinician}"}).status_code == 403
    assert client.get("/hl7/messages", headers={"Authorization": ""}).status_code == 401
    bad = client.get("/hl7/messages", params={"state": "nonsense"})
    assert bad.status_code == 400 and bad.json()["status"] == 400  # RFC 9457 problem details


def test_sender_with_password_must_authenticate(client: TestClient, engine: Engine) -> None:
    with Session(engine) as s, s.begin():
        s.add(
            Sender(
                facility="RS_PRIVATE",
                name="x",
                time_zone="Asia/Jakarta",
                http_secret_hash=hash_secret("s3cret"),
            )
        )
    body = adt("P1", facility="RS_PRIVATE").encode()
    assert client.post("/hl7/v2", content=body, headers={"Authorization": ""}).status_code == 401
    assert client.post("/hl7/v2", content=body, auth=("RS_PRIVATE", "wrong")).status_code == 401
    ok = client.post("/hl7/v2", content=body, auth=("RS_PRIVATE", "s3cret"))
    assert ok.status_code == 200 and parse(ok.text).get("MSA-1") == "AA"


def test_message_stats_count_by_state_sender_and_type(client: TestClient) -> None:
    empty = client.get("/hl7/messages/stats").json()
    assert empty["total"] == 0 and empty["oldest_received_age_s"] is None
    settings = client.app.state.settings  # type: ignore[attr-defined]
    sender = {
        "Authorization": "Bearer " + issue_token(settings, "sender", facilities=["RSUD_SEHAT", "RS_LAIN"])
    }
    client.post("/hl7/v2", content=adt("ST1").encode(), headers=sender)
    client.post("/hl7/v2", content=adt("ST2", mrn="M2").encode(), headers=sender)
    client.post("/hl7/v2", content=adt("ST3", facility="RS_LAIN").encode(), headers=sender)
    client.post("/hl7/v2", content=b"MSH|bad", headers=sender)
    stats = client.get("/hl7/messages/stats").json()
    assert stats["total"] == 4
    assert stats["by_state"]["received"] == 3 and stats["by_state"]["rejected"] == 1
    assert {"state": "received", "facility": "RSUD_SEHAT", "message_type": "ADT^A01", "count": 2} in stats[
        "groups"
    ]
    assert stats["oldest_received_age_s"] >= 0 and stats["oldest_received_at"]
    clinician = issue_token(client.app.state.settings, "clinician")  # type: ignore[attr-defined]
    assert (
        client.get("/hl7/messages/stats", headers={"Authorization": f"Bearer {clinician}"}).status_code == 403
    )
