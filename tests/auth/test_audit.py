"""The audit trail: every access (reads, searches, $everything, refusals, emergency access) becomes an
AuditEvent that admins search at /fhir/AuditEvent, by patient across every id of the person; the hash
chain shows an edited or a deleted row, and `hub audit verify` names it."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from hub.audit import verify
from hub.cli import app as cli_app
from hub.config import Settings, get_settings
from hub.db import session_scope
from hub.fhir.validate import validate_resource
from hub.store import resources
from hub.store.models import MpiSource
from tests.fhir_api import builders as b

Token = Callable[..., dict[str, str]]


def _events(client: TestClient, admin: dict[str, str], query: str) -> list[dict[str, Any]]:
    r = client.get(f"/fhir/AuditEvent?{query}", headers=admin)
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]


def _kind(event: dict[str, Any]) -> str:
    return str(event["subtype"][0]["code"])


def test_every_access_is_audited_and_searchable(
    client: TestClient, token: Token, record: dict[str, str], engine: Engine
) -> None:
    with session_scope(engine) as session:  # p1 and p3 are one person: golden record g1
        resources.upsert(session, b.patient("p3", family="Santoso"))
        resources.upsert(session, b.patient("g1", family="Santoso"))
        for sid in ("p1", "p3"):
            session.add(MpiSource(id=sid, golden_id="g1", facility="RS-AUTH", content={}))
    clinician = token("clinician", subject="dr-ani")
    assert client.get("/fhir/Patient/p1", headers=clinician).status_code == 200
    assert client.get("/fhir/Observation/o1", headers=clinician).status_code == 200
    assert client.get("/fhir/Observation?patient=Patient/p1", headers=clinician).status_code == 200
    assert client.get("/fhir/Patient/p3/$everything", headers=clinician).status_code == 200
    assert client.get("/fhir/Patient/p2", headers=token("ministry", subject="kemkes-dwh")).status_code == 403
    assert client.get("/fhir/Patient/p1", headers={"Authorization": "Bearer nonsense"}).status_code == 401
    assert client.get("/fhir/AuditEvent", headers=clinician).status_code == 403

    admin = token("admin", subject="root")
    # "Who read my record": one query by the golden record covers every source of the person.
    mine = _events(client, admin, "patient=Patient/g1")
    assert {(_kind(e), e["agent"][0]["who"]["display"], e["outcome"]) for e in mine} == {
        ("read", "clinician:dr-ani", "0"),  # Patient/p1, and Observation/o1 through its compartment
        ("search-type", "clinician:dr-ani", "0"),
        ("operation", "clinician:dr-ani", "0"),  # $everything
        ("read", "anonymous", "4"),  # the attempt with a bad token
    }
    assert len(mine) == 5
    read_obs = next(
        e for e in mine if any(x.get("what", {}).get("reference") == "Observation/o1" for x in e["entity"])
    )
    assert read_obs["action"] == "R" and read_obs["outcome"] == "0"
    assert {x["what"]["reference"] for x in read_obs["entity"] if "what" in x} == {
        "Patient/p1",
        "Observation/o1",
    }
    search = next(e for e in mine if _kind(e) == "search-type")
    query = next(x for x in search["entity"] if x["role"]["code"] == "24")
    assert base64.b64decode(query["query"]).decode() == "patient=Patient/p1"

    refused = _events(client, admin, "agent=kemkes-dwh")
    assert len(refused) == 1 and refused[0]["outcome"] == "4" and refused[0]["outcomeDesc"] == "HTTP 403"
    assert refused[0]["agent"][0]["role"] == [{"text": "ministry"}]
    failed = _events(client, admin, "outcome=4&entity=Patient/p1")
    assert [e["agent"][0]["who"]["display"] for e in failed] == ["anonymous"]  # the bad token's 401
    assert _events(client, admin, "type=read&agent=dr-ani&date=ge2020-01-01&date=le2999-12-31")
    assert not _events(client, admin, "type=read&date=lt2020-01-01")
    everything = _events(client, admin, "_count=2")
    assert len(everything) == 2
    for event in _events(client, admin, "_count=100"):
        assert validate_resource(event) == [], event
    one = everything[0]
    assert client.get(f"/fhir/AuditEvent/{one['id']}", headers=admin).json()["id"] == one["id"]
    assert client.get("/fhir/AuditEvent?nonsense=1", headers=admin).status_code == 400


def test_patient_context_and_break_the_glass(
    client: TestClient, token: Token, record: dict[str, str]
) -> None:
    own = token("clinician", subject="dr-budi", scopes=["patient/*.rs"], patient="p1")
    assert client.get("/fhir/Patient/p1", headers=own).status_code == 200
    assert client.get("/fhir/Observation/o1", headers=own).status_code == 200
    assert client.get("/fhir/Observation/o2", headers=own).status_code == 403  # p2's
    assert client.get("/fhir/Patient/p2", headers=own).status_code == 403
    assert client.get("/fhir/Patient/p2/$everything", headers=own).status_code == 403
    found = client.get("/fhir/Observation", headers=own).json()
    assert [e["resource"]["id"] for e in found["entry"]] == ["o1"]
    found = client.get("/fhir/Patient", headers=own).json()
    assert [e["resource"]["id"] for e in found["entry"]] == ["p1"]
    # A patient/ scope without a patient claim grants nothing.
    bare = token("clinician", scopes=["patient/*.rs"])
    assert client.get("/fhir/Patient/p1", headers=bare).status_code == 403

    # Break the glass: an emergency reason opens p2's record for a while, and is audited as such.
    r = client.post(
        "/auth/break-glass", json={"patient": "p2", "reason": "unconscious in the ER"}, headers=own
    )
    assert r.status_code == 200, r.text
    emergency = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert client.get("/fhir/Patient/p2", headers=emergency).status_code == 200
    assert client.get("/fhir/Patient/p1", headers=emergency).status_code == 403  # that one patient only
    assert (
        client.post("/auth/break-glass", json={"patient": "p2", "reason": "x"}, headers=own).status_code
        == 400
    )
    ministry = token("ministry")
    assert (
        client.post(
            "/auth/break-glass", json={"patient": "p2", "reason": "a long reason"}, headers=ministry
        ).status_code
        == 403
    )
    btg = _events(client, token("admin"), "purpose=BTG")
    assert {(_kind(e), e["entity"][0]["what"]["reference"]) for e in btg} == {
        ("break-glass", "Patient/p2"),
        ("read", "Patient/p2"),
        ("read", "Patient/p1"),  # the refused attempt is listed too
    }
    assert all(e["purposeOfEvent"][0]["coding"][0]["code"] == "BTG" for e in btg)
    assert any("unconscious in the ER" in e["outcomeDesc"] for e in btg)


def test_the_chain_shows_an_edited_and_a_deleted_row(
    client: TestClient,
    token: Token,
    record: dict[str, str],
    engine: Engine,
    settings: Settings,
    monkeypatch: Any,
) -> None:
    clinician = token("clinician")
    for _ in range(5):
        assert client.get("/fhir/Patient/p1", headers=clinician).status_code == 200
    client.app.state.audit.flush()  # type: ignore[attr-defined]
    checked, broken = verify(engine)
    assert broken is None and checked >= 5

    monkeypatch.setenv("HUB_DATABASE_URL", settings.sqlalchemy_url)
    get_settings.cache_clear()
    try:
        ok = CliRunner().invoke(cli_app, ["audit", "verify"])
        assert ok.exit_code == 0 and "intact" in ok.output
        with engine.begin() as conn:
            first, second = [
                r[0] for r in conn.execute(text("SELECT id FROM audit_event ORDER BY id LIMIT 2"))
            ]
            conn.execute(text("UPDATE audit_event SET agent = 'someone-else' WHERE id = :i"), {"i": second})
        bad = CliRunner().invoke(cli_app, ["audit", "verify"])
        assert bad.exit_code == 1 and f"row {second}" in bad.output and "changed" in bad.output
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_event WHERE id = :i"), {"i": second})
        _, broken = verify(engine)
        assert broken is not None and broken.row_id == second and "missing" in broken.problem
        with engine.begin() as conn:  # removing the newest row shows against the chain's head
            conn.execute(text("DELETE FROM audit_event WHERE id > :i"), {"i": first})
        _, broken = verify(engine)
        assert broken is not None and broken.row_id == first + 1
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize("role", ["clinician", "steward", "ministry", "sender"])
def test_only_admins_read_the_trail(
    client: TestClient, token: Token, role: str, record: dict[str, str]
) -> None:
    r = client.get("/fhir/AuditEvent", headers=token(role))
    assert r.status_code == 403 and r.json()["resourceType"] == "OperationOutcome"
