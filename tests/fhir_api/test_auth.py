"""Bearer tokens: every route but /fhir/metadata needs one; signature, issuer and expiry are checked;
roles carry SMART v2 scopes (a clinician reads, a sender writes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jwt
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from hub.auth import Principal, decode_token, issue_token
from hub.cli import app as cli_app
from hub.config import Settings
from tests.fhir_api import builders as b


def test_metadata_is_public_and_everything_else_is_not(client: TestClient, put: Callable[..., None]) -> None:
    put(b.patient("p1"))
    r = client.get("/fhir/metadata")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+json")
    for url in ("/fhir/Patient/p1", "/fhir/Patient", "/fhir/Patient/p1/$everything", "/fhir/_history"):
        r = client.get(url)
        assert r.status_code == 401, url
        body = r.json()
        assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == "login"
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert client.get("/healthz").status_code == 200


def test_bad_tokens_are_refused(client: TestClient, settings: Settings, put: Callable[..., None]) -> None:
    put(b.patient("p1"))
    forged = jwt.encode({"iss": "hub", "sub": "x", "role": "clinician", "iat": 0, "exp": 2**40}, "k" * 32)
    expired = issue_token(settings, "clinician", ttl_s=-10)
    for value in (f"Bearer {forged}", f"Bearer {expired}", "Bearer not-a-jwt", "Basic dXNlcjpwdw=="):
        r = client.get("/fhir/Patient/p1", headers={"Authorization": value})
        assert r.status_code == 401, value
    good = issue_token(settings, "clinician")
    assert client.get("/fhir/Patient/p1", headers={"Authorization": f"Bearer {good}"}).status_code == 200


def test_roles_and_scopes(client: TestClient, token: Callable[[str], dict[str, str]]) -> None:
    body: dict[str, Any] = b.patient("p1")
    r = client.put("/fhir/Patient/p1", json=body, headers=token("clinician"))
    assert r.status_code == 403 and r.json()["issue"][0]["code"] == "forbidden"
    r = client.put("/fhir/Patient/p1", json=body, headers=token("sender"))
    assert r.status_code == 201
    principal = Principal("u", "steward", ("user/Patient.rus",))
    assert principal.allows("Patient", "u") and not principal.allows("Observation", "r")


def test_hub_token_cli(settings: Settings, monkeypatch: Any) -> None:
    monkeypatch.setenv("HUB_VAR_DIR", str(settings.var_dir))
    from hub.config import get_settings

    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli_app, ["token", "--role", "clinician"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    principal = decode_token(settings, result.stdout.strip())
    assert principal.role == "clinician" and "user/*.rs" in principal.scopes
    assert (settings.var_dir / "jwt-signing.key").stat().st_mode & 0o077 == 0
    bad = CliRunner().invoke(cli_app, ["token", "--role", "nobody"])
    assert bad.exit_code != 0


def test_scopes_limit_included_types(
    client: TestClient, settings: Settings, put: Callable[..., None]
) -> None:
    put(b.patient("p1"), b.observation("o1", "p1"), b.practitioner("dr1"))
    narrow = issue_token(settings, "clinician", scopes=["user/Observation.rs", "user/Patient.r"])
    headers = {"Authorization": f"Bearer {narrow}"}
    r = client.get("/fhir/Observation?_id=o1&_include=*", headers=headers)
    kinds = {e["resource"]["resourceType"] for e in r.json()["entry"]}
    assert kinds == {"Observation", "Patient"}  # no Practitioner: the token may not read them
    assert client.get("/fhir/Practitioner/dr1", headers=headers).status_code == 403
    assert client.get("/fhir/Patient?_id=p1", headers=headers).status_code == 403  # read, not search
    everything = client.get("/fhir/Patient/p1/$everything", headers=headers).json()
    assert {e["resource"]["resourceType"] for e in everything["entry"]} == {"Patient", "Observation"}
