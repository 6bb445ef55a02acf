"""Every route of the OpenAPI document (the FHIR, HL7, operator, MPI, audit and auth routes), called
with no token, an expired one, a forged one, a token of the trusted OpenID provider meant for another
audience, one of another issuer, and each role's token: no route answers 2xx to a caller it should
refuse, none answers 5xx; the ministry reads no identified resource; a sender reads and deletes nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from jwt.algorithms import RSAAlgorithm
from sqlalchemy import Engine

from hub.app import create_app
from hub.auth import issue_token
from hub.db import session_scope
from hub.store import resources
from tests.auth.conftest import FACILITY, make_settings
from tests.builders import adt
from tests.fhir_api import builders as b

IDP = "https://idp.test/realms/hub"
AUDIENCE = "https://hub.test/fhir"
PUBLIC = {
    "/fhir/metadata",
    "/.well-known/smart-configuration",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
}
ROLES = ("sender", "clinician", "ministry", "steward", "admin")

# What each role may be answered 2xx on (method, path template, resource type substituted); anything
# else must be refused. Admins may do everything.
SENDER_WRITES = {
    ("POST", "/hl7/v2"),
    ("POST", "/fhir/{resource_type}"),
    ("PUT", "/fhir/{resource_type}"),
    ("PUT", "/fhir/{resource_type}/{rid}"),
    ("POST", "/fhir"),
}
CLINICAL_READS = {
    ("GET", p)
    for p in (
        "/fhir/{resource_type}",
        "/fhir/{resource_type}/{rid}",
        "/fhir/{resource_type}/_history",
        "/fhir/{resource_type}/{rid}/_history",
        "/fhir/{resource_type}/{rid}/_history/{version_id}",
        "/fhir/Patient/{patient_id}/$everything",
        "/fhir/Patient/{patient_id}/{resource_type}",
        "/fhir/_history",
        "/fhir/Patient/$ihe-pix",
    )
} | {("POST", "/fhir/{resource_type}/_search"), ("POST", "/fhir/Patient/$match"), ("POST", "/fhir")}
MPI_REVIEW = {
    (m, p)
    for m, p in (
        ("GET", "/mpi/review"),
        ("GET", "/mpi/review/decisions"),
        ("GET", "/mpi/review/{review_id}"),
        ("GET", "/mpi/review/suspect-niks"),
    )
} | {
    ("POST", p)
    for p in (
        "/mpi/review/{review_id}/link",
        "/mpi/review/{review_id}/not-duplicate",
        "/mpi/review/link",
        "/mpi/review/unlink",
        "/mpi/review/decisions/{decision_id}/undo",
    )
}
NON_IDENTIFYING_READS = {
    ("GET", "/fhir/{resource_type}"),
    ("GET", "/fhir/{resource_type}/{rid}"),
    ("GET", "/fhir/{resource_type}/_history"),
    ("GET", "/fhir/{resource_type}/{rid}/_history"),
    ("GET", "/fhir/{resource_type}/{rid}/_history/{version_id}"),
    ("POST", "/fhir/{resource_type}/_search"),
    ("POST", "/fhir"),
}


def may(role: str, method: str, path: str, rtype: str) -> bool:
    key = (method, path)
    if role == "admin":
        return key != ("POST", "/hl7/v2")  # intake is a sender's
    if path.startswith(("/stats", "/export", "/fhir/Measure")):  # aggregates: the stats permission
        return role in ("ministry",)
    if path.endswith("/$export") or "/$export-" in path:  # bulk export: de-identified for the ministry
        return role == "ministry"
    if role == "sender":
        return key in SENDER_WRITES
    if role == "clinician":
        return key in CLINICAL_READS or key == ("POST", "/auth/break-glass")
    if role == "steward":
        return (
            key in CLINICAL_READS
            or key in MPI_REVIEW
            or (key == ("PUT", "/fhir/{resource_type}/{rid}") and rtype == "Patient")
        )
    if role == "ministry":
        return key in NON_IDENTIFYING_READS and rtype == "Organization"
    return False


def _rsa_jwk(kid: str) -> tuple[Any, dict[str, Any]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key, {
        **json.loads(RSAAlgorithm.to_jwk(key.public_key())),
        "kid": kid,
        "use": "sig",
        "alg": "RS256",
    }


@pytest.fixture
def setup(database_url: str, tmp_path: Path, engine: Engine) -> dict[str, Any]:
    trusted, jwk = _rsa_jwk("trusted")
    stranger, _ = _rsa_jwk("stranger")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [jwk]}))
    settings = make_settings(
        database_url, tmp_path / "var", oidc_issuer=IDP, oidc_audience=AUDIENCE, oidc_jwks_url=jwks.as_uri()
    )
    now = int(time.time())

    def idp_token(key: Any, kid: str, **claims: Any) -> str:
        body = {"iss": IDP, "aud": AUDIENCE, "sub": "svc", "roles": ["admin"], "scope": "system/*.cruds"}
        body |= {"iat": now, "exp": now + 300, **claims}
        return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid})

    callers: dict[str, dict[str, str]] = {
        "none": {},
        "expired": {"Authorization": "Bearer " + issue_token(settings, "admin", ttl_s=-120)},
        "forged": {
            "Authorization": "Bearer "
            + jwt.encode({"iss": "hub", "sub": "x", "role": "admin", "iat": now, "exp": now + 60}, "k" * 32)
        },
        "wrong-audience": {
            "Authorization": "Bearer " + idp_token(trusted, "trusted", aud="https://other.test")
        },
        "other-issuer": {
            "Authorization": "Bearer " + idp_token(stranger, "trusted", iss="https://evil.test")
        },
        "expired-idp": {"Authorization": "Bearer " + idp_token(trusted, "trusted", exp=now - 600)},
    }
    # The trusted provider's own token works (so the refusals above are about audience, issuer, expiry).
    callers["idp-clinician"] = {
        "Authorization": "Bearer " + idp_token(trusted, "trusted", roles=["clinician"], scope="user/*.rs")
    }
    # The sender's facility made the record's Patient and Organization (a sender changes only those).
    with session_scope(engine) as session:
        resources.upsert(
            session,
            {
                "resourceType": "Provenance",
                "id": "prov-route",
                "target": [{"reference": "Patient/p1"}, {"reference": "Organization/org1"}],
                "recorded": "2024-01-01T00:00:00Z",
                "agent": [{"who": {"identifier": {"system": "urn:hub:sender", "value": FACILITY}}}],
            },
        )
    for role in ROLES:  # admin last: its deletes come after every other caller's reads
        facilities = [FACILITY] if role == "sender" else None
        callers[role] = {"Authorization": "Bearer " + issue_token(settings, role, facilities=facilities)}
    return {"settings": settings, "callers": callers}


def _requests(spec: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(method, template, URL, resource type) for every operation, FHIR types as Patient and Organization."""
    out = []
    values = {
        "rid": None,
        "patient_id": "p1",
        "version_id": "1",
        "review_id": "1",
        "decision_id": "1",
        "message_id": "1",
        "event_id": "1",
    }
    for template, ops in spec["paths"].items():
        for method in ops:
            typed = "{resource_type}" in template or template == "/fhir"  # a batch reads one of the two
            for rtype in ("Patient", "Organization") if typed else ("",):
                url = template.replace("{resource_type}", rtype)
                for name, value in values.items():
                    url = url.replace(
                        "{" + name + "}", value or ("org1" if rtype == "Organization" else "p1")
                    )
                out.append((method.upper(), template, url, rtype))
    return out


def _body(method: str, template: str, rtype: str) -> dict[str, Any]:
    if template == "/hl7/v2":
        return {"content": adt(f"R{time.monotonic_ns()}", facility=FACILITY).encode()}
    if template == "/fhir":
        return {
            "json": {
                "resourceType": "Bundle",
                "type": "batch",
                "entry": [
                    {"request": {"method": "GET", "url": f"{rtype}/{'p1' if rtype == 'Patient' else 'org1'}"}}
                ],
            }
        }
    if template.endswith("/_search"):
        return {"content": b"", "headers": {"Content-Type": "application/x-www-form-urlencoded"}}
    if method in ("POST", "PUT") and template.startswith("/fhir/{resource_type}"):
        res = (
            b.patient("p1")
            if rtype == "Patient"
            else {"resourceType": "Organization", "id": "org1", "name": "RSUD Auth"}
        )
        if template == "/fhir/{resource_type}" and method == "POST":
            res = {k: v for k, v in res.items() if k != "id"}
        return {"json": res}
    if template == "/fhir/Patient/$match":
        return {
            "json": {
                "resourceType": "Parameters",
                "parameter": [{"name": "resource", "resource": b.patient("q")}],
            }
        }
    if template.startswith("/mpi/"):
        return {"json": {"source": "p1", "target": "p2", "reason": "route test"}}
    if template == "/auth/break-glass":
        return {"json": {"patient": "p2", "reason": "the route test's emergency"}}
    return {}


def test_no_route_answers_2xx_to_a_caller_it_should_refuse(
    setup: dict[str, Any], record: dict[str, str]
) -> None:
    callers = setup["callers"]
    with TestClient(create_app(setup["settings"]), base_url="http://hub.test") as client:
        spec = client.get("/openapi.json").json()
        requests = _requests(spec)
        assert len(requests) > 35
        ok: dict[str, set[tuple[str, str]]] = {}
        for caller, auth in callers.items():
            for method, template, url, rtype in requests:
                kw = _body(method, template, rtype)
                headers = {**auth, **kw.pop("headers", {})}
                if method == "GET" and "$ihe-pix" in url:
                    url += "?sourceIdentifier=urn:mrn|RSA-1"
                r = client.request(method, url, headers=headers, **kw)
                where = f"{caller} {method} {url}: {r.status_code} {r.text[:200]}"
                assert r.status_code < 500, where
                granted = 200 <= r.status_code < 300
                if granted and template == "/fhir":  # a batch answers 200; each entry has its own status
                    granted = any(e["response"]["status"].startswith("2") for e in r.json()["entry"])
                if template in PUBLIC or not granted:
                    if r.status_code in (401, 403) and r.headers.get("content-type", "").startswith(
                        "application/fhir+json"
                    ):
                        assert r.json()["resourceType"] == "OperationOutcome", where
                    continue
                ok.setdefault(caller, set()).add((method, template))
                role = caller.removeprefix("idp-")
                assert role in ROLES, where  # no bad token is let through anywhere
                assert may(role, method, template, rtype), where
    # The test would pass vacuously if everything were refused: each role reached what it should.
    assert ("GET", "/fhir/AuditEvent") in ok["admin"] and ("DELETE", "/fhir/{resource_type}/{rid}") in ok[
        "admin"
    ]
    assert ("GET", "/fhir/{resource_type}/{rid}") in ok["clinician"] and (
        "GET",
        "/fhir/{resource_type}/{rid}",
    ) in ok["idp-clinician"]
    assert ("POST", "/hl7/v2") in ok["sender"] and ("PUT", "/fhir/{resource_type}/{rid}") in ok["sender"]
    assert ("GET", "/mpi/review") in ok["steward"]
    assert ("GET", "/fhir/{resource_type}/{rid}") in ok["ministry"]  # Organization only (may() checks)
    for bad in ("none", "expired", "forged", "wrong-audience", "other-issuer", "expired-idp"):
        assert bad not in ok


def test_public_routes_need_no_token(client: TestClient) -> None:
    conf = client.get("/.well-known/smart-configuration")
    assert conf.status_code == 200
    body = conf.json()
    assert body["token_endpoint"] == "http://hub.test/auth/token"
    assert "client_credentials" in body["grant_types_supported"] and "permission-v2" in body["capabilities"]
    assert client.get("/fhir/metadata").status_code == 200
