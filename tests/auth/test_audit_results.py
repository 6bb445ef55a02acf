"""A search audits every patient whose data it returned (IHE BALP PatientQuery: one AuditEvent per
patient), whether the patient was named in the query or not, among the matches or the _include and
_revinclude rows, and $everything its patient's sources: "who read my record" finds them all."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from hub.db import session_scope
from hub.fhir.validate import validate_resource
from hub.store import resources
from hub.store.models import MpiSource
from tests.fhir_api import builders as b

Token = Callable[..., dict[str, str]]


def _events(client: TestClient, admin: dict[str, str], query: str) -> list[dict[str, Any]]:
    r = client.get(f"/fhir/AuditEvent?{query}&_count=200", headers=admin)
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]


def _patients(event: dict[str, Any]) -> list[str]:
    return [
        x["what"]["reference"]
        for x in event.get("entity", [])
        if x.get("type", {}).get("code") == "1" and "what" in x
    ]


def _query(event: dict[str, Any]) -> str:
    q = next(x for x in event["entity"] if x["role"]["code"] == "24")
    return base64.b64decode(q.get("query", "")).decode()


def test_a_search_is_audited_for_each_patient_it_returned(
    client: TestClient, token: Token, record: dict[str, str], engine: Engine
) -> None:
    with session_scope(engine) as session:
        resources.upsert(session, {"resourceType": "Practitioner", "id": "pr1", "name": [{"family": "Ani"}]})
        resources.upsert(session, b.observation("o3", "p2", performer="Practitioner/pr1"))
    dr = token("clinician", subject="dr-search")
    assert client.get("/fhir/Observation?code=8480-6", headers=dr).json()["total"] == 3
    assert client.get("/fhir/Patient?family=Wibowo", headers=dr).status_code == 200
    r = client.get("/fhir/Practitioner?_id=pr1&_revinclude=Observation:performer", headers=dr)
    assert [e["resource"]["id"] for e in r.json()["entry"]] == ["pr1", "o3"]
    assert client.get("/fhir/Organization", headers=dr).status_code == 200  # no patient's data

    admin = token("admin", subject="root")
    mine = _events(client, admin, "agent=dr-search")
    by_query: dict[str, list[str]] = {}
    for event in mine:
        assert event["subtype"][0]["code"] == "search-type"
        assert len(_patients(event)) <= 1  # PatientQuery: one patient per event
        by_query.setdefault(_query(event), []).extend(_patients(event))
        assert validate_resource(event) == [], event
    assert {q: sorted(p) for q, p in by_query.items()} == {
        "code=8480-6": ["Patient/p1", "Patient/p2"],  # o1, o2 and o3: two patients, two events
        "family=Wibowo": ["Patient/p2"],  # the Patient found, not named in the query
        "_id=pr1&_revinclude=Observation:performer": ["Patient/p2"],  # an included row's patient
        "": [],  # the Organization search: one event, no patient
    }
    # "Who read my record" finds the searches that returned the patient's data.
    p2 = {_query(e) for e in _events(client, admin, "patient=Patient/p2&agent=dr-search")}
    assert p2 == {"code=8480-6", "family=Wibowo", "_id=pr1&_revinclude=Observation:performer"}
    p1 = {_query(e) for e in _events(client, admin, "patient=Patient/p1&agent=dr-search")}
    assert p1 == {"code=8480-6"}


def test_everything_and_a_transaction_s_searches_are_audited_per_patient(
    client: TestClient, token: Token, record: dict[str, str], engine: Engine
) -> None:
    with session_scope(engine) as session:  # p1 and p3 are one person: golden record g1
        resources.upsert(session, b.patient("p3", family="Santoso"))
        resources.upsert(session, b.observation("o4", "p3"))
        resources.upsert(
            session, b.patient("g1", family="Santoso", links=[("seealso", "p1"), ("seealso", "p3")])
        )
        for sid in ("p1", "p3"):
            session.add(MpiSource(id=sid, golden_id="g1", facility="RS-AUTH", content={}))
    dr = token("clinician", subject="dr-every")
    ids = {
        e["resource"]["id"] for e in client.get("/fhir/Patient/g1/$everything", headers=dr).json()["entry"]
    }
    assert {"g1", "p1", "p3", "o1", "o4"} <= ids
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": "Observation?code=8480-6&patient=p2"}}],
    }
    admin = token("admin", subject="root")
    everything = _events(client, admin, "agent=dr-every")
    # One event for the person (its sources' rows are the golden record's compartment) ...
    assert [_patients(e) for e in everything] == [["Patient/g1"]]
    # ... which each source's access history finds.
    for source in ("p1", "p3"):
        found = _events(client, admin, f"patient=Patient/{source}&agent=dr-every")
        assert [e["subtype"][0]["code"] for e in found] == ["operation"]

    # A batch's searches are the batch request's: a sender may not search, an admin's batch is audited.
    r = client.post("/fhir", json=batch, headers=token("admin", subject="root-batch"))
    assert r.status_code == 200, r.text
    batch_events = _events(client, admin, "agent=root-batch")
    assert [_patients(e) for e in batch_events] == [["Patient/p2"]]
