"""Intake is authenticated: HTTP needs a sender credential (its bearer token or its HTTP password) and a
message for another facility than the credential's is answered AR, kept and flagged; MLLP senders are
identified by TLS client certificate (its CN is the facility) or by an address allow-list; registered
systems get tokens by the client-credentials grant (client secret or private_key_jwt); rate limits answer
429 with Retry-After (HL7: an AR ACK saying when to send again) and store nothing."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from jwt.algorithms import ECAlgorithm
from sqlalchemy import Engine, func, select

from hub.app import create_app
from hub.auth_secrets import hash_secret
from hub.config import Settings
from hub.db import session_scope
from hub.hl7 import parse
from hub.ingest.listener import MLLPServer, parse_allow_list
from hub.ingest.mllp import FrameDecoder, frame
from hub.ingest.service import Intake
from hub.store.models import ApiClient, InboundMessage, Sender
from tests.auth.conftest import FACILITY, make_settings
from tests.builders import adt
from tests.ingest.test_tls import _cert, _write

Token = Callable[..., dict[str, str]]


def _state(engine: Engine, control_id: str) -> tuple[str, str | None]:
    with engine.connect() as conn:
        row = conn.execute(
            select(InboundMessage.state, InboundMessage.error_code).where(
                InboundMessage.control_id == control_id
            )
        ).one()
    return row[0], row[1]


def test_http_intake_needs_a_sender_credential(client: TestClient, token: Token, engine: Engine) -> None:
    body = adt("C1", facility=FACILITY).encode()
    r = client.post("/hl7/v2", content=body)
    assert r.status_code == 401 and "Bearer" in r.headers["www-authenticate"]
    assert client.post("/hl7/v2", content=body, headers=token("clinician")).status_code == 403
    assert client.post("/hl7/v2", content=body, headers=token("admin")).status_code == 403
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(InboundMessage)).scalar() == 0
    ok = client.post("/hl7/v2", content=body, headers=token("sender"))
    assert ok.status_code == 200 and parse(ok.text).get("MSA-1") == "AA"
    other = client.post("/hl7/v2", content=adt("C2", facility="RS-ELSE").encode(), headers=token("sender"))
    assert other.status_code == 400 and parse(other.text).get("MSA-1") == "AR"
    assert "not authorized" in (parse(other.text).get("ERR-8") or other.text)
    assert _state(engine, "C2") == ("rejected", "sender-not-authorized")
    # The sender's HTTP password authenticates it for its own facility only.
    with session_scope(engine) as s:
        s.add(
            Sender(
                facility="RS-PW", name="x", time_zone="Asia/Jakarta", http_secret_hash=hash_secret("pw-123")
            )
        )
    assert (
        client.post(
            "/hl7/v2", content=adt("C3", facility="RS-PW").encode(), auth=("RS-PW", "nope")
        ).status_code
        == 401
    )
    ok = client.post("/hl7/v2", content=adt("C3", facility="RS-PW").encode(), auth=("RS-PW", "pw-123"))
    assert parse(ok.text).get("MSA-1") == "AA"
    other = client.post("/hl7/v2", content=adt("C4", facility=FACILITY).encode(), auth=("RS-PW", "pw-123"))
    assert parse(other.text).get("MSA-1") == "AR" and _state(engine, "C4") == (
        "rejected",
        "sender-not-authorized",
    )


def test_an_empty_msh4_is_the_credentials_facility(client: TestClient, token: Token, engine: Engine) -> None:
    """A sender whose MSH-4 is empty (and even MSH-3) is known by its credential's one facility: AA,
    stored and processed for that facility, never "sender unknown"."""
    body = adt("E1", facility="").replace("|SIMRS|", "||", 1).encode()
    assert b"MSH|^~\\&|||" in body
    ok = client.post("/hl7/v2", content=body, headers=token("sender"))
    assert ok.status_code == 200 and parse(ok.text).get("MSA-1") == "AA", ok.text
    with engine.connect() as conn:
        row = conn.execute(
            select(InboundMessage.facility, InboundMessage.state).where(InboundMessage.control_id == "E1")
        ).one()
    assert row.facility == FACILITY and row.state in ("received", "processed")


def test_rate_limits(database_url: str, tmp_path: Path, engine: Engine, token: Token) -> None:
    settings = make_settings(
        database_url,
        tmp_path / "var",
        rate_api_per_s=0.01,
        rate_api_burst=2,
        rate_intake_per_s=0.01,
        rate_intake_burst=1,
    )
    from hub.auth import issue_token

    with TestClient(create_app(settings), base_url="http://hub.test") as client:
        clinician = {"Authorization": "Bearer " + issue_token(settings, "clinician", subject="busy")}
        assert [client.get("/fhir/Patient", headers=clinician).status_code for _ in range(3)] == [
            200,
            200,
            429,
        ]
        r = client.get("/fhir/Patient", headers=clinician)
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        assert r.json()["issue"][0]["code"] == "throttled"
        sender = {"Authorization": "Bearer " + issue_token(settings, "sender", facilities=[FACILITY])}
        assert (
            client.post("/hl7/v2", content=adt("L1", facility=FACILITY).encode(), headers=sender).status_code
            == 200
        )
        limited = client.post("/hl7/v2", content=adt("L2", facility=FACILITY).encode(), headers=sender)
        assert limited.status_code == 429 and limited.headers["retry-after"]
        ack = parse(limited.text)
        assert ack.get("MSA-1") == "AR" and ack.get("MSA-2") == "L2"
    with engine.connect() as conn:  # the refused message was not stored (nor acknowledged as accepted)
        ids = set(conn.execute(select(InboundMessage.control_id)).scalars())
    assert ids == {"L1"}


async def _send(port: int, messages: list[bytes], ctx: ssl.SSLContext | None = None) -> list[str]:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="localhost" if ctx else None
    )
    dec = FrameDecoder()
    acks: list[str] = []
    for m in messages:
        writer.write(frame(m))
        await writer.drain()
        got: list[Any] = []
        while not got:
            got = list(dec.feed(await asyncio.wait_for(reader.read(65536), 10)))
        acks += [g.decode() for g in got]
    writer.close()
    return acks


def test_mllp_senders_by_address_allow_list(engine: Engine) -> None:
    assert parse_allow_list("RS-A=127.0.0.1, RS-B=10.0.0.0/8")[1][1] == "RS-B"
    with pytest.raises(ValueError):
        parse_allow_list("no-address")
    settings = Settings(mllp_port=0, mllp_allow="RS-A=127.0.0.0/8,RS-C=10.1.2.3", open_registration=True)
    intake = Intake(engine, settings)

    async def main() -> list[str]:
        intake.start()
        server = MLLPServer(intake, settings)
        await server.start()
        try:
            return await _send(
                server.port, [adt("M1", facility="RS-A").encode(), adt("M2", facility="RS-C").encode()]
            )
        finally:
            await server.stop()
            intake.stop()

    acks = asyncio.run(main())
    assert [parse(a).get("MSA-1") for a in acks] == ["AA", "AR"]
    assert _state(engine, "M2") == ("rejected", "sender-not-authorized")


def test_mllp_senders_by_client_certificate(engine: Engine, tmp_path: Path) -> None:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("hub test CA", ca_key, None, None)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_crt, _ = _write(tmp_path / "ca", ca, ca_key)
    server_crt, server_k = _write(tmp_path / "server", _cert("localhost", server_key, ca, ca_key), server_key)
    client_crt, client_k = _write(tmp_path / "client", _cert("RS-CERT", client_key, ca, ca_key), client_key)
    settings = Settings(
        mllp_port=0,
        mllp_tls_cert=server_crt,
        mllp_tls_key=server_k,
        mllp_tls_client_ca=ca_crt,
        open_registration=True,
    )
    intake = Intake(engine, settings)
    ctx = ssl.create_default_context(cafile=str(ca_crt))
    ctx.load_cert_chain(client_crt, client_k)

    async def main() -> list[str]:
        intake.start()
        server = MLLPServer(intake, settings)
        await server.start()
        try:
            msgs = [adt("T1", facility="RS-CERT").encode(), adt("T2", facility="RS-SPOOF").encode()]
            return await _send(server.port, msgs, ctx)
        finally:
            await server.stop()
            intake.stop()

    acks = asyncio.run(main())
    assert [parse(a).get("MSA-1") for a in acks] == ["AA", "AR"]
    assert _state(engine, "T2") == ("rejected", "sender-not-authorized")


def test_mllp_off_loopback_without_identification_accepts_no_facility(engine: Engine) -> None:
    settings = Settings(mllp_host="0.0.0.0", mllp_port=0, open_registration=True)
    server = MLLPServer(Intake(engine, settings), settings)
    assert not server.trust_msh4
    assert MLLPServer(Intake(engine, Settings(mllp_port=0)), Settings(mllp_port=0)).trust_msh4


def test_client_credentials_grant(client: TestClient, engine: Engine, settings: Settings) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    public = {**json.loads(ECAlgorithm.to_jwk(key.public_key())), "kid": "c1", "alg": "ES384"}
    with session_scope(engine) as s:
        s.add(
            ApiClient(
                client_id="rs-auth-his",
                role="sender",
                scopes="system/*.cu",
                facilities=FACILITY,
                secret_hash=hash_secret("his-secret"),
            )
        )
        s.add(
            ApiClient(
                client_id="kemkes-dwh",
                role="ministry",
                scopes="system/Organization.rs",
                jwks={"keys": [public]},
            )
        )
    form = {"grant_type": "client_credentials", "scope": "system/*.cu"}
    assert client.post("/auth/token", data=form, auth=("rs-auth-his", "wrong")).status_code == 401
    r = client.post("/auth/token", data=form, auth=("rs-auth-his", "his-secret"))
    assert r.status_code == 200 and r.json()["token_type"] == "bearer" and r.json()["scope"] == "system/*.cu"
    sender = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert (
        parse(
            client.post("/hl7/v2", content=adt("CC1", facility=FACILITY).encode(), headers=sender).text
        ).get("MSA-1")
        == "AA"
    )
    assert client.get("/fhir/Patient", headers=sender).status_code == 403
    too_much = client.post(
        "/auth/token", data={**form, "scope": "system/*.cruds"}, auth=("rs-auth-his", "his-secret")
    )
    assert too_much.status_code == 400 and too_much.json()["error"] == "invalid_scope"
    # a narrower scope than the registered one is granted as asked
    narrow = client.post(
        "/auth/token", data={**form, "scope": "system/*.c"}, auth=("rs-auth-his", "his-secret")
    )
    assert narrow.status_code == 200 and narrow.json()["scope"] == "system/*.c"
    for wider in ("user/*.c", "system/*.cd", "system/Patient.cud"):
        refused = client.post(
            "/auth/token", data={**form, "scope": wider}, auth=("rs-auth-his", "his-secret")
        )
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_scope", wider

    def assertion(**over: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": "kemkes-dwh",
            "sub": "kemkes-dwh",
            "aud": "http://hub.test/auth/token",
            "exp": now + 240,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode({**claims, **over}, key, algorithm="ES384", headers={"kid": "c1"})

    signed = assertion()
    jwt_form = {
        "grant_type": "client_credentials",
        "scope": "system/Organization.rs",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": signed,
    }
    r = client.post("/auth/token", data=jwt_form)
    assert r.status_code == 200, r.text
    ministry = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert client.get("/fhir/Patient", headers=ministry).status_code == 403
    assert client.post("/auth/token", data=jwt_form).status_code == 401  # the same jti again: a replay
    wrong_aud = {**jwt_form, "client_assertion": assertion(aud="https://elsewhere.test/token")}
    assert client.post("/auth/token", data=wrong_aud).status_code == 401
    other_key = ec.generate_private_key(ec.SECP384R1())
    forged = jwt.encode(
        {
            "iss": "kemkes-dwh",
            "sub": "kemkes-dwh",
            "aud": "http://hub.test/auth/token",
            "exp": int(time.time()) + 60,
            "jti": "x",
        },
        other_key,
        algorithm="ES384",
        headers={"kid": "c1"},
    )
    assert client.post("/auth/token", data={**jwt_form, "client_assertion": forged}).status_code == 401
    assert (
        client.post("/auth/token", data={"grant_type": "password"}).json()["error"]
        == "unsupported_grant_type"
    )


def test_mllp_rate_limit_answers_ar_and_stores_nothing(engine: Engine) -> None:
    settings = Settings(mllp_port=0, rate_intake_per_s=0.01, rate_intake_burst=1, open_registration=True)
    intake = Intake(engine, settings)

    async def main() -> list[str]:
        intake.start()
        server = MLLPServer(intake, settings)
        await server.start()
        try:
            return await _send(server.port, [adt("R1").encode(), adt("R2").encode()])
        finally:
            await server.stop()
            intake.stop()

    first, second = asyncio.run(main())
    assert parse(first).get("MSA-1") == "AA"
    assert parse(second).get("MSA-1") == "AR" and parse(second).get("MSA-2") == "R2"
    assert "rate limit" in second
    with engine.connect() as conn:
        assert set(conn.execute(select(InboundMessage.control_id)).scalars()) == {"R1"}
