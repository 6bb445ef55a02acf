"""Every route of the OpenAPI document, with every role's token and odd values in every path and query
parameter: no 5xx, and the error format of the route's audience (no FastAPI ``{"detail"}``)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from hub.app import create_app
from hub.auth import ROLES
from hub.config import Settings

ODD = ["99999999999999999999", "-1", "abc", "%00", "Foo", "0", "1e309", "%E2%82%AC%FF"]


@pytest.fixture
def running(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    """The app with its lifespan (the intake runs: /hl7/v2 is among the routes)."""
    settings = settings.model_copy(update={"mllp_enabled": False, "worker_enabled": False})
    with TestClient(create_app(settings), base_url="http://hub.test") as c:
        yield c


def test_no_route_answers_5xx_to_odd_input(
    running: TestClient, token: Callable[[str], dict[str, str]]
) -> None:
    client = running
    spec = client.get("/openapi.json").json()
    tried = 0
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            query = [p["name"] for p in op.get("parameters", []) if p.get("in") == "query"]
            for value in ODD:
                url = re.sub(r"\{[^}]+\}", value, path)
                params = "&".join(f"{q}={value}" for q in query)
                for role in (None, *ROLES):
                    headers = token(role) if role else {}
                    r = client.request(
                        method.upper(),
                        url + (f"?{params}" if params else ""),
                        headers={**headers, "Content-Type": "application/json"},
                        content=b'{"resourceType": "Parameters", "x": "\\u0000"}'
                        if method in ("post", "put")
                        else None,
                    )
                    tried += 1
                    assert r.status_code < 500, (method, url, role, r.status_code, r.text[:300])
                    if r.status_code >= 400 and r.headers.get("content-type", "").startswith(
                        "application/json"
                    ):
                        assert "detail" not in r.json() or "status" in r.json(), (method, url, r.text[:200])
    assert tried > 500
