"""schemathesis over the OpenAPI document (with the request bodies of the routes that read their own,
``bench.schemathesis_bench.BODIES``), in process, with no token and every role's token, on SQLite and
PostgreSQL, with a few processed messages stored: no 5xx and no exception out of the app. A short run; ``make bench BENCH_ARGS=schemathesis``
is the long one. Also the inputs it found that once answered 500, pinned as plain tests."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from bench.schemathesis_bench import BODIES, fuzz, role_headers_for, seed_store, with_bodies
from hub.app import create_app
from hub.config import Settings

EXAMPLES = 2  # per operation and generation mode; each case is sent with all six tokens


def test_schemathesis_finds_no_5xx(settings: Settings, engine: Engine) -> None:
    settings = settings.model_copy(update={"mllp_enabled": False, "worker_enabled": False})
    known = seed_store(engine, files=8)  # a few processed messages: reads find rows
    assert {"resource_type", "rid", "patient_id", "message_id", "review_id"} <= set(known)
    tally = fuzz(create_app(settings), role_headers_for(settings, "RS-TEST"), examples=EXAMPLES, known=known)
    found = "\n".join(f"{k} ({n}x): {tally.examples[k]}" for k, n in tally.findings.items())
    assert tally.server_errors == 0, found
    assert tally.operations >= 45  # every operation of the document was tried
    assert tally.cases == 6 * tally.inputs and tally.inputs >= tally.operations
    assert tally.statuses["2xx"] > 0 and tally.statuses["4xx"] > 0


def test_every_declared_body_belongs_to_an_operation_that_declares_none(client: TestClient) -> None:
    """BODIES describes routes that read their own body; should one move or gain a FastAPI body model,
    the table must follow (otherwise schemathesis silently stops sending bodies there)."""
    spec = client.get("/openapi.json").json()
    for method, path in BODIES:
        assert method in spec["paths"].get(path, {}), (method, path)
        assert "requestBody" not in spec["paths"][path][method], (method, path)
        assert "requestBody" in with_bodies(spec)["paths"][path][method]


@pytest.mark.parametrize(
    "entry",
    [
        {"request": 4.5e64, "fullUrl": "urn:uuid:1"},
        {"request": [], "resource": {"resourceType": "Patient"}},
        {"request": {"method": ["POST"], "url": "Patient"}},
        {"request": {"method": "POST", "url": 7}},
        {"request": {"method": "POST", "url": "Patient", "ifNoneExist": {"identifier": "x"}}},
        {"request": {"method": "PUT", "url": "Patient/p1", "ifMatch": 1}, "resource": {}},
        {"request": {"method": "POST", "url": "Patient"}, "resource": {"resourceType": 3}},
        {"request": {"method": "POST", "url": "Patient"}, "resource": "Patient"},
        {"request": {"method": "POST", "url": "Patient"}, "fullUrl": 12, "resource": {}},
        "entry",
        None,
    ],
)
@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_a_bundle_entry_of_the_wrong_shape_is_400(
    client: TestClient, token: Callable[[str], dict[str, str]], entry: Any, kind: str
) -> None:
    bundle = {"resourceType": "Bundle", "type": kind, "entry": [entry]}
    r = client.post("/fhir", json=bundle, headers=token("admin"))
    assert r.status_code == 400, r.text
    assert r.json()["resourceType"] == "OperationOutcome"


def test_bundle_entry_that_is_not_an_array_is_400(
    client: TestClient, token: Callable[[str], dict[str, str]]
) -> None:
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": {"request": {}}}
    r = client.post("/fhir", json=bundle, headers=token("admin"))
    assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"


def test_a_superscript_digit_in_an_id_is_not_a_number(
    client: TestClient, token: Callable[[str], dict[str, str]]
) -> None:
    """'²' passes str.isdigit but not int() (schemathesis found GET /fhir/AuditEvent/² a 500)."""
    admin = token("admin")
    r = client.get("/fhir/AuditEvent/\u00b2", headers=admin)
    assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"
    r = client.get("/fhir/Patient/p1/_history/\u00b2", headers=admin)
    assert r.status_code in (400, 404) and r.json()["resourceType"] == "OperationOutcome"
    r = client.get("/hl7/messages/\u00b2", headers=admin)
    assert r.status_code in (400, 404) and "status" in r.json()


def test_a_content_length_that_is_not_ascii_digits_is_not_trusted() -> None:
    import asyncio

    from starlette.requests import Request

    from hub.limits import read_limited

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"MSH|^~\\&|", "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"content-length", b"\xb2")]}
    assert asyncio.run(read_limited(Request(scope, receive), 1024)) == b"MSH|^~\\&|"
