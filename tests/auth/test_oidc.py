"""JWTs of a real OpenID provider (node oidc-provider, a separate process): client-credentials tokens are
verified by issuer, audience, signature (a JWKS key chosen by kid, fetched again when the provider rotates
its keys; RS256 and ES256), expiry with clock skew; roles, scopes and the facility come from claims, and
a role's ceiling holds whatever scopes the provider grants."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from hub.app import create_app
from hub.hl7 import parse
from hub.store.models import InboundMessage
from tests.auth.conftest import make_settings
from tests.auth.oidc import AUDIENCE, Client, Provider, new_key, require_provider
from tests.builders import adt

SENDER = Client("rs-oidc", "system/*.cu", ["sender"], facility="RS-OIDC")
CLINICIAN = Client("clinic-app", "user/*.rs", ["clinician"])
# A provider that grants too much: the ministry role's ceiling still holds.
MINISTRY = Client("ministry-dwh", "system/*.rs", ["ministry"])


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[Provider]:
    p = Provider(require_provider(), tmp_path, [SENDER, CLINICIAN, MINISTRY], [new_key("k1")])
    p.start()
    yield p
    p.stop()


def _app(database_url: str, tmp_path: Path, provider: Provider, **kw: Any) -> TestClient:
    kw.setdefault("oidc_audience", AUDIENCE)
    settings = make_settings(
        database_url, tmp_path / "var", oidc_issuer=provider.issuer, oidc_jwks_min_refresh_s=0, **kw
    )
    return TestClient(create_app(settings), base_url="http://hub.test")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_roles_scopes_and_facility_come_from_the_provider(
    provider: Provider, database_url: str, tmp_path: Path, engine: Engine, record: dict[str, str]
) -> None:
    with _app(database_url, tmp_path, provider) as client:
        clinician = _bearer(provider.token(CLINICIAN))
        assert client.get("/fhir/Patient/p1", headers=clinician).status_code == 200
        assert client.delete("/fhir/Patient/p1", headers=clinician).status_code == 403

        ministry = _bearer(provider.token(MINISTRY))
        r = client.get("/fhir/Patient?_elements=name,identifier", headers=ministry)
        assert r.status_code == 403 and r.json()["resourceType"] == "OperationOutcome"
        assert client.get("/fhir/Patient/p1/$everything", headers=ministry).status_code == 403
        assert client.get("/fhir/Organization/org1", headers=ministry).status_code == 200

        sender = _bearer(provider.token(SENDER))
        assert client.get("/fhir/Patient/p1", headers=sender).status_code == 403
        ok = client.post("/hl7/v2", content=adt("OIDC1", facility="RS-OIDC").encode(), headers=sender)
        assert ok.status_code == 200 and parse(ok.text).get("MSA-1") == "AA"
        other = client.post("/hl7/v2", content=adt("OIDC2", facility="RS-OTHER").encode(), headers=sender)
        assert other.status_code == 400 and parse(other.text).get("MSA-1") == "AR"
    with engine.connect() as conn:
        kept = conn.execute(
            select(InboundMessage.state, InboundMessage.error_code).where(
                InboundMessage.control_id == "OIDC2"
            )
        ).one()
    assert tuple(kept) == ("rejected", "sender-not-authorized")


def test_audience_issuer_and_expiry(
    provider: Provider, database_url: str, tmp_path: Path, engine: Engine
) -> None:
    token = provider.token(CLINICIAN)
    with _app(database_url, tmp_path, provider, oidc_audience="https://other-hub.test/fhir") as client:
        r = client.get("/fhir/Patient", headers=_bearer(token))
        assert r.status_code == 401 and "audience" in r.json()["issue"][0]["diagnostics"]
    # Another provider (its own issuer and keys) is not trusted.
    stranger = Provider(provider.node, tmp_path, [CLINICIAN], [new_key("k1")])
    stranger.start()
    try:
        foreign = stranger.token(CLINICIAN)
    finally:
        stranger.stop()
    with _app(database_url, tmp_path, provider) as client:
        assert client.get("/fhir/Patient", headers=_bearer(token)).status_code == 200
        assert client.get("/fhir/Patient", headers=_bearer(foreign)).status_code == 401
    # Expiry, with and without clock skew allowed.
    provider.ttl = 2
    provider.restart(provider.keys)
    short = provider.token(CLINICIAN)
    time.sleep(3.2)
    with _app(database_url, tmp_path, provider, oidc_leeway_s=0) as client:
        r = client.get("/fhir/Patient", headers=_bearer(short))
        assert r.status_code == 401 and "expired" in r.json()["issue"][0]["diagnostics"]
    with _app(database_url, tmp_path, provider, oidc_leeway_s=30) as client:
        assert client.get("/fhir/Patient", headers=_bearer(short)).status_code == 200


def test_key_rotation_by_kid(provider: Provider, database_url: str, tmp_path: Path, engine: Engine) -> None:
    old = provider.token(CLINICIAN)
    with _app(database_url, tmp_path, provider) as client:
        assert client.get("/fhir/Patient", headers=_bearer(old)).status_code == 200
    provider.restart([new_key("k2")])  # the provider rotated: k1 is no longer published
    new = provider.token(CLINICIAN)
    with _app(database_url, tmp_path, provider) as client:
        assert client.get("/fhir/Patient", headers=_bearer(new)).status_code == 200  # k2 fetched by kid
        r = client.get("/fhir/Patient", headers=_bearer(old))
        assert r.status_code == 401 and "key" in r.json()["issue"][0]["diagnostics"]


def test_es256_tokens(tmp_path: Path, database_url: str, engine: Engine) -> None:
    p = Provider(require_provider(), tmp_path, [CLINICIAN], [new_key("ec1", "ES256")], alg="ES256")
    p.start()
    try:
        token = p.token(CLINICIAN)
        with _app(database_url, tmp_path, p) as client:
            assert client.get("/fhir/Patient", headers=_bearer(token)).status_code == 200
        with _app(database_url, tmp_path, p, oidc_algorithms="RS256") as client:
            assert client.get("/fhir/Patient", headers=_bearer(token)).status_code == 401
    finally:
        p.stop()
