"""A sender changes only what its own facilities made: resources of another facility's HL7 v2 messages or
FHIR writes, of an admin, of no known author, and golden Patients are 403 (an OperationOutcome) to it, by
PUT, by a create whose identifier names the same resource, by DELETE, and in transaction and batch
entries. Admins keep every right. (The FHIR API has no PATCH.)"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from hub.auth import Principal
from hub.db import session_scope
from hub.errors import Forbidden
from hub.fhir_api import writes
from hub.mpi.service import GOLDEN_TAG
from hub.store import resources
from hub.store.models import InboundMessage
from tests.auth.conftest import FACILITY
from tests.fhir_api import builders as b

Token = Callable[..., dict[str, str]]
OTHER = "RS-LAIN"


def _obs(oid: str, value: float) -> dict[str, Any]:
    res = b.observation(oid, "p1", value=value)
    res["subject"] = {"reference": "Patient/p1"}
    return res


def _forbidden(r: Any) -> None:
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == "forbidden"


def _value(client: TestClient, admin: dict[str, str], oid: str) -> float:
    r = client.get(f"/fhir/Observation/{oid}", headers=admin)
    assert r.status_code == 200, r.text
    return float(r.json()["valueQuantity"]["value"])


@pytest.fixture
def made(engine: Engine, record: dict[str, str]) -> dict[str, str]:
    """o-v2: made by an HL7 v2 message of the other facility; o-bare: stored with no known author; g9: a
    golden Patient."""
    with session_scope(engine) as session:
        message = InboundMessage(facility=OTHER, control_id="OWN-1", content_hash="0" * 64, raw=b"MSH|")
        session.add(message)
        session.flush()
        resources.upsert(session, _obs("o-v2", 1), message_id=message.id)
        resources.upsert(session, _obs("o-bare", 2))
        golden = b.patient("g9")
        golden["meta"] = {"tag": [GOLDEN_TAG]}
        resources.upsert(session, golden)
    return {"v2": "o-v2", "bare": "o-bare"}


def test_a_sender_updates_only_its_facilities_resources(
    client: TestClient, token: Token, made: dict[str, str]
) -> None:
    mine, other = token("sender", subject="his-a"), token("sender", subject="his-b", facilities=[OTHER])
    admin = token("admin", subject="root")
    r = client.post(
        "/fhir/Observation",
        json={**_obs("x", 10), "identifier": [{"system": "urn:t", "value": "1"}]},
        headers=mine,
    )
    assert r.status_code == 201, r.text
    oid = r.json()["id"]
    # Its own: updated (again and again); its Provenance names its facility.
    for value in (11, 12):
        assert client.put(f"/fhir/Observation/{oid}", json=_obs(oid, value), headers=mine).status_code == 200
    prov = client.get(f"/fhir/Provenance?target=Observation/{oid}", headers=admin).json()["entry"]
    whos = [e["resource"]["agent"][0]["who"] for e in prov]
    assert {w["identifier"]["value"] for w in whos} == {FACILITY}
    # Another facility's sender: refused, by PUT and by a create whose identifier names the resource.
    _forbidden(client.put(f"/fhir/Observation/{oid}", json=_obs(oid, 99), headers=other))
    again = {**_obs("y", 98), "identifier": [{"system": "urn:t", "value": "1"}]}
    _forbidden(client.post("/fhir/Observation", json=again, headers=other))
    assert _value(client, admin, oid) == 12
    # A multi-facility sender bound to the writer's facility may.
    both = token("sender", subject="his-ab", facilities=[OTHER, FACILITY])
    assert client.put(f"/fhir/Observation/{oid}", json=_obs(oid, 13), headers=both).status_code == 200

    # The v2 message's resource is the other facility's; a resource of no known author and a golden
    # Patient nobody's but the MPI's.
    _forbidden(client.put("/fhir/Observation/o-v2", json=_obs("o-v2", 50), headers=mine))
    assert client.put("/fhir/Observation/o-v2", json=_obs("o-v2", 51), headers=other).status_code == 200
    _forbidden(client.put("/fhir/Observation/o-bare", json=_obs("o-bare", 52), headers=mine))
    _forbidden(client.put("/fhir/Patient/g9", json=b.patient("g9", family="Lain"), headers=other))
    # A conditional update that matches another facility's resource.
    _forbidden(client.put("/fhir/Observation?_id=o-v2", json=_obs("o-v2", 53), headers=mine))
    # An id not stored yet is a create.
    assert client.put("/fhir/Observation/o-new", json=_obs("o-new", 5), headers=mine).status_code == 201

    # Admins keep every right: update and delete whatever the author.
    assert client.put("/fhir/Observation/o-v2", json=_obs("o-v2", 60), headers=admin).status_code == 200
    assert client.delete("/fhir/Observation/o-bare", headers=admin).status_code == 204
    assert _value(client, admin, "o-v2") == 60
    # A resource an admin wrote is not a sender's.
    _forbidden(client.put("/fhir/Observation/o-v2", json=_obs("o-v2", 61), headers=other))


def test_deletes_and_bundle_entries_are_checked_too(
    client: TestClient, token: Token, made: dict[str, str], engine: Engine
) -> None:
    mine = token("sender", subject="his-a")
    admin = token("admin", subject="root")
    _forbidden(client.delete("/fhir/Observation/o-v2", headers=mine))  # a sender deletes nothing
    # The check itself, for a sender whose scopes would allow a delete.
    sender = Principal("his-a", "sender", ("system/*.cud",), facilities=(FACILITY,))
    with session_scope(engine) as session, pytest.raises(Forbidden):
        writes.delete(session, "Observation", "o-v2", sender)

    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": _obs("t-1", 7), "request": {"method": "PUT", "url": "Observation/t-1"}},
            {"resource": _obs("o-v2", 8), "request": {"method": "PUT", "url": "Observation/o-v2"}},
        ],
    }
    _forbidden(client.post("/fhir", json=transaction, headers=mine))
    assert client.get("/fhir/Observation/t-1", headers=admin).status_code == 404  # all or nothing
    batch = copy.deepcopy(transaction)
    batch["type"] = "batch"
    batch["entry"].append({"request": {"method": "DELETE", "url": "Observation/o-v2"}})
    r = client.post("/fhir", json=batch, headers=mine)
    assert r.status_code == 200, r.text
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    assert statuses[0].startswith("201") and statuses[1].startswith("403") and statuses[2].startswith("403")
    assert _value(client, admin, "o-v2") == 1 and _value(client, admin, "t-1") == 7
