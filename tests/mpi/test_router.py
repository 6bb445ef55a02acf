"""The MPI's HTTP API through an ASGI client: $match, PIXm and the review queue."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from hub.app import create_app
from hub.auth import issue_token
from hub.config import Settings
from hub.db import session_scope
from hub.mpi.match import NIK_SYSTEM
from hub.mpi.router import MATCH_GRADE, get_session
from tests.mpi.builders import ingest, patient, refer

NIK = "3171015505900003"


class AsgiClient:
    """A synchronous face on httpx's ASGI transport (starlette's AsgiClient warns about its httpx)."""

    def __init__(self, app: Any, headers: dict[str, str] | None = None) -> None:
        self.app = app
        self.headers = headers or {}

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        kw["headers"] = {**self.headers, **kw.get("headers", {})}

        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as c:
                return await c.request(method, url, **kw)

        return asyncio.run(call())

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("POST", url, **kw)


@pytest.fixture
def client(engine: Engine, tmp_path: Path) -> Iterator[AsgiClient]:
    settings = Settings(var_dir=tmp_path)
    app = create_app(settings)  # mounts the MPI router behind the hub's auth

    def session_dependency() -> Iterator[Session]:
        with session_scope(engine) as session:
            yield session

    app.dependency_overrides[get_session] = session_dependency
    token = issue_token(settings, "steward", subject="steward:ani")
    yield AsgiClient(app, {"Authorization": f"Bearer {token}"})


def load(engine: Engine, facility: str, *resources: dict[str, Any]) -> None:
    with session_scope(engine) as session:
        ingest(session, facility, *resources)


def test_match_returns_scored_golden_records(engine: Engine, client: AsgiClient) -> None:
    a = patient("RSUD-A", "1", "Sari Dewi", "1990-05-15", "female", nik=NIK, district="317101")
    other = patient("RS-B", "9", "Sari Dewi", "1990-05-16", "female", district="317101")
    load(engine, "RSUD-A", a)
    load(engine, "RS-B", other)
    query = patient("X", "?", "Sary Dewi", "1990-05-15", "female", nik=NIK)
    body = {"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": query}]}
    resp = client.post("/fhir/Patient/$match", json=body)
    assert resp.status_code == 200, resp.text
    bundle = resp.json()
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "searchset"
    first = bundle["entry"][0]
    assert first["resource"]["id"] == refer(a)
    assert first["search"]["mode"] == "match" and first["search"]["score"] == 1.0
    assert first["search"]["extension"] == [{"url": MATCH_GRADE, "valueCode": "certain"}]
    assert all(0 <= e["search"]["score"] <= 1 for e in bundle["entry"])

    only = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": query},
            {"name": "onlyCertainMatches", "valueBoolean": True},
        ],
    }
    assert client.post("/fhir/Patient/$match", json=only).json()["total"] == 1
    bad = client.post("/fhir/Patient/$match", json={"resourceType": "Observation"})
    assert bad.status_code == 400 and bad.json()["resourceType"] == "OperationOutcome"


def test_pixm_cross_references_identifiers(engine: Engine, client: AsgiClient) -> None:
    a = patient("RSUD-A", "A-1", "Sari Dewi", "1990-05-15", "female", nik=NIK)
    b = patient("RS-B", "B-2", "Sari Dewi", "1990-05-15", "female", nik=NIK, bpjs="0001112223334")
    load(engine, "RSUD-A", a)
    load(engine, "RS-B", b)
    resp = client.get("/fhir/Patient/$ihe-pix", params={"sourceIdentifier": "urn:oid:2.16.360.RSUD-A|A-1"})
    assert resp.status_code == 200, resp.text
    params = resp.json()["parameter"]
    idents = {
        (p["valueIdentifier"]["system"], p["valueIdentifier"]["value"])
        for p in params
        if p["name"] == "targetIdentifier"
    }
    assert ("urn:oid:2.16.360.RS-B", "B-2") in idents and (NIK_SYSTEM, NIK) in idents
    targets = {p["valueReference"]["reference"].rsplit("/", 1)[-1] for p in params if p["name"] == "targetId"}
    assert targets == {refer(a), a["id"], b["id"]}

    only_b = client.get(
        "/fhir/Patient/$ihe-pix",
        params=[("sourceIdentifier", f"{NIK_SYSTEM}|{NIK}"), ("targetSystem", "urn:oid:2.16.360.RS-B")],
    ).json()["parameter"]
    assert only_b == [
        {"name": "targetIdentifier", "valueIdentifier": {"system": "urn:oid:2.16.360.RS-B", "value": "B-2"}}
    ]
    missing = client.get("/fhir/Patient/$ihe-pix", params={"sourceIdentifier": "urn:x|nope"})
    assert missing.status_code == 404


def test_review_queue_link_undo_and_not_duplicate(engine: Engine, client: AsgiClient) -> None:
    a = patient("RSUD-A", "1", "Dewi Lestari", "1992-08-17", "female")
    b = patient("RS-B", "2", "Dewi Lestary", "1992-08-17", "female")
    load(engine, "RSUD-A", a)
    load(engine, "RS-B", b)
    items = client.get("/mpi/review").json()["items"]
    assert len(items) == 1
    item = items[0]
    assert item["source"]["id"] == b["id"] and item["candidate"]["id"] == a["id"]
    assert "birthDate" in item["agree"] and item["weight"] > 0

    # Decisions need a steward's (or admin's) token; the token's subject is recorded as who decided.
    url = f"/mpi/review/{item['id']}/link"
    assert client.post(url, json={"why": "x"}, headers={"Authorization": ""}).status_code == 401
    clinician = issue_token(client.app.state.settings, "clinician")
    assert (
        client.post(url, json={"why": "x"}, headers={"Authorization": f"Bearer {clinician}"}).status_code
        == 403
    )
    linked = client.post(f"/mpi/review/{item['id']}/link", json={"who": "steward:ani", "why": "same KTP"})
    assert linked.status_code == 200, linked.text
    decision = linked.json()
    assert (
        decision["who"] == "steward:ani" and decision["action"] == "link" and decision["golden"] == refer(a)
    )
    assert client.get("/mpi/review").json()["items"] == []
    again = client.post(f"/mpi/review/{item['id']}/link", json={"who": "steward:ani"})
    assert again.status_code == 409

    undone = client.post(
        f"/mpi/review/decisions/{decision['id']}/undo", json={"who": "steward:budi", "why": "oops"}
    )
    assert undone.status_code == 200 and undone.json()["action"] == "undo"
    assert client.get(f"/mpi/review/{item['id']}").json()["status"] == "open"

    nd = client.post(f"/mpi/review/{item['id']}/not-duplicate", json={"who": "steward:ani", "why": "twins"})
    assert nd.status_code == 200
    history = client.get("/mpi/review/decisions", params={"source": b["id"]}).json()["items"]
    assert [d["action"] for d in history] == ["not-duplicate", "undo", "link"]
    assert history[2]["undoneBy"] == history[1]["id"]


def test_manual_link_and_unlink_endpoints(engine: Engine, client: AsgiClient) -> None:
    a = patient("RSUD-A", "1", "Budi Santoso", "1985-12-03", "male")
    b = patient("RS-B", "2", "Agus Salim", "1970-01-01", "male")
    load(engine, "RSUD-A", a)
    load(engine, "RS-B", b)
    resp = client.post("/mpi/review/link", json={"source": b["id"], "target": a["id"], "who": "steward:ani"})
    assert resp.status_code == 200 and resp.json()["golden"] == refer(a)
    resp = client.post("/mpi/review/unlink", json={"source": b["id"], "who": "steward:ani", "why": "mistake"})
    assert resp.status_code == 200 and resp.json()["golden"] != refer(a)
    gone = client.post("/mpi/review/link", json={"source": "nope", "target": a["id"], "who": "steward:ani"})
    assert gone.status_code == 404


def test_review_page_is_a_shell_without_patient_data(engine: Engine, client: AsgiClient) -> None:
    """A browser opens the page by navigation, which sends no bearer token: the page holds no patient
    data, and the queue it loads stays behind the token (tests/mpi/test_review_page.py drives it)."""
    a = patient("RSUD-A", "1", "Dewi Lestari", "1992-08-17", "female")
    b = patient("RS-B", "2", "Dewi Lestary", "1992-08-17", "female")
    load(engine, "RSUD-A", a)
    load(engine, "RS-B", b)
    anonymous = AsgiClient(client.app)
    resp = anonymous.get("/mpi/review/page")
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
    assert "Possible matches" in resp.text and "Dewi" not in resp.text
    assert anonymous.get("/mpi/review").status_code == 401
    assert [i["source"]["name"] for i in client.get("/mpi/review").json()["items"]] == ["Dewi Lestary"]


def test_review_list_has_the_total_paging_levels_and_suspect_niks(engine: Engine, client: AsgiClient) -> None:
    nik = "3273011505620004"
    load(engine, "RSUD-A", patient("RSUD-A", "1", "Dewi Lestari", "1992-08-17", "female"))
    load(engine, "RS-B", patient("RS-B", "2", "Dewi Lestary", "1992-08-17", "female"))
    load(engine, "RSUD-A", patient("RSUD-A", "3", "Budi Santoso", "1962-05-15", "male", nik=nik))
    load(engine, "RS-B", patient("RS-B", "4", "Agus Santoso", "1969-08-02", "male", nik=nik))
    body = client.get("/mpi/review", params={"limit": 1}).json()
    assert body["total"] == 2 and body["limit"] == 1 and len(body["items"]) == 1
    second = client.get("/mpi/review", params={"limit": 1, "offset": 1}).json()["items"]
    assert len(second) == 1 and second[0]["id"] != body["items"][0]["id"]
    items = {i["reason"]: i for i in client.get("/mpi/review").json()["items"]}
    grades = {c["field"]: c["grade"] for c in items["score"]["comparisons"]}
    assert grades["name"] == "partial" and grades["birthDate"] == "exact"
    conflict = items["NIK conflict"]
    assert {i["label"] for i in conflict["candidate"]["identifiers"]} == {"MRN", "NIK"}
    suspects = client.get("/mpi/review/suspect-niks").json()
    assert suspects["total"] == 1 and suspects["items"][0]["nik"] == nik
