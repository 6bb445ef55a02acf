"""FHIR-native writes by a sender: create, conditional create, update (If-Match), conditional update,
delete, transaction (all or nothing, urn:uuid references resolved) and batch Bundles, each recorded by a
Provenance and indexed for search in the same transaction."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.fhir_api import builders as b
from tests.fhir_api.conftest import match_ids


@pytest.fixture
def sender(token: Callable[[str], dict[str, str]]) -> dict[str, str]:
    return token("sender")


def _new_patient(mrn: str = "W-1") -> dict[str, Any]:
    body = b.patient("ignored", mrn=mrn)
    del body["id"]
    return body


def test_create_and_conditional_create(
    client: TestClient, sender: dict[str, str], auth: dict[str, str]
) -> None:
    r = client.post("/fhir/Patient", json=_new_patient(), headers=sender)
    assert r.status_code == 201, r.text
    rid = r.json()["id"]
    assert r.headers["location"].endswith(f"/fhir/Patient/{rid}/_history/1") and r.headers["etag"] == 'W/"1"'
    # The id is deterministic on the identifier: the same create again is the same resource, unchanged.
    again = client.post("/fhir/Patient", json=_new_patient(), headers=sender)
    assert again.json()["id"] == rid and again.json()["meta"]["versionId"] == "1"
    # If-None-Exist finds it and writes nothing.
    r = client.post(
        "/fhir/Patient",
        json=_new_patient("W-2"),
        headers={**sender, "If-None-Exist": f"identifier={b.MRN}|W-1"},
    )
    assert r.status_code == 200 and r.json()["id"] == rid
    client.post("/fhir/Patient", json=_new_patient("W-3"), headers=sender)
    r = client.post(
        "/fhir/Patient", json=_new_patient("W-4"), headers={**sender, "If-None-Exist": "family=santoso"}
    )
    assert r.status_code == 412
    # Written resources are searchable at once, and each write left a Provenance naming the sender.
    # (The MPI gave each new source Patient a golden record carrying its identifiers, tagged as golden.)
    found = client.get("/fhir/Patient?identifier=W-3", headers=auth).json()
    assert len(match_ids(found)) == 2
    golden = "https://hub.kemkes.go.id/fhir/CodeSystem/mpi|golden"
    found = client.get(f"/fhir/Patient?identifier=W-3&_tag:not={golden}", headers=auth).json()
    assert len(match_ids(found)) == 1
    prov = client.get(f"/fhir/Provenance?target=Patient/{rid}", headers=auth).json()
    assert len(match_ids(prov)) == 1
    assert prov["entry"][0]["resource"]["agent"][0]["who"]["display"].startswith("sender:")
    minimal = client.post(
        "/fhir/Patient", json=_new_patient("W-5"), headers={**sender, "Prefer": "return=minimal"}
    )
    assert minimal.status_code == 201 and minimal.content == b""


def test_update_delete_and_preconditions(
    client: TestClient, sender: dict[str, str], auth: dict[str, str], token: Callable[[str], dict[str, str]]
) -> None:
    body = b.patient("p1")
    r = client.put("/fhir/Patient/p1", json=body, headers=sender)
    assert r.status_code == 201
    body["gender"] = "other"
    r = client.put("/fhir/Patient/p1", json=body, headers={**sender, "If-Match": 'W/"1"'})
    assert r.status_code == 200 and r.json()["meta"]["versionId"] == "2"
    r = client.put("/fhir/Patient/p1", json=body | {"active": False}, headers={**sender, "If-Match": 'W/"1"'})
    assert r.status_code == 412 and r.json()["resourceType"] == "OperationOutcome"
    assert client.put("/fhir/Patient/p2", json=body, headers=sender).status_code == 400  # id mismatch
    assert client.put("/fhir/Patient/p1", json=b.practitioner("p1"), headers=sender).status_code == 400
    assert client.put("/fhir/Patient/p1", content=b"{not json", headers=sender).status_code == 400
    bad_id = b.patient("bad id!")
    assert client.put("/fhir/Patient/bad id!", json=bad_id, headers=sender).status_code == 422
    assert client.delete("/fhir/Patient/p1", headers=sender).status_code == 403  # a sender deletes nothing
    sender = token("admin")
    assert client.delete("/fhir/Patient/p1", headers=sender).status_code == 204
    assert client.get("/fhir/Patient/p1", headers=auth).status_code == 410
    assert client.delete("/fhir/Patient/zz", headers=sender).status_code == 404
    assert client.get("/fhir/Patient?_id=p1", headers=auth).json().get("total") == 0


def test_conditional_update(client: TestClient, sender: dict[str, str]) -> None:
    body = _new_patient("C-1")
    r = client.put(f"/fhir/Patient?identifier={b.MRN}|C-1", json=body, headers=sender)
    assert r.status_code == 201
    rid = r.json()["id"]
    body["gender"] = "female"
    r = client.put(f"/fhir/Patient?identifier={b.MRN}|C-1", json=body, headers=sender)
    assert r.status_code == 200 and r.json()["id"] == rid and r.json()["gender"] == "female"
    client.put("/fhir/Patient/other", json=b.patient("other", mrn="C-2"), headers=sender)
    r = client.put("/fhir/Patient?family=santoso", json=body, headers=sender)
    assert r.status_code == 412


def _transaction(kind: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def test_transaction_resolves_placeholders(
    client: TestClient, token: Callable[[str], dict[str, str]], auth: dict[str, str]
) -> None:
    sender = token("admin")  # the bundle reads too, which a sender may not
    pat = _new_patient("T-1")
    obs = b.observation("x", "x")
    del obs["id"]
    obs["subject"] = {"reference": "urn:uuid:11111111-1111-4111-8111-111111111111"}
    bundle = _transaction(
        "transaction",
        [
            {
                "fullUrl": "urn:uuid:22222222-2222-4222-8222-222222222222",
                "resource": obs,
                "request": {"method": "POST", "url": "Observation"},
            },
            {
                "fullUrl": "urn:uuid:11111111-1111-4111-8111-111111111111",
                "resource": pat,
                "request": {"method": "POST", "url": "Patient"},
            },
            {"request": {"method": "GET", "url": "Patient?identifier=T-1"}},
        ],
    )
    r = client.post("/fhir", json=bundle, headers=sender)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["type"] == "transaction-response"
    assert [e["response"]["status"] for e in out["entry"][:2]] == ["201 Created", "201 Created"]
    patient_id = out["entry"][1]["resource"]["id"]
    assert out["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{patient_id}"
    # The GET ran after the writes, inside the same transaction (it finds the new source Patient and
    # the golden record the MPI made for it).
    got = out["entry"][2]["resource"]
    assert patient_id in match_ids(got) and len(match_ids(got)) == 2
    found = client.get(f"/fhir/Observation?patient={patient_id}", headers=auth).json()
    assert len(match_ids(found)) == 1


def test_transaction_is_all_or_nothing(
    client: TestClient, sender: dict[str, str], auth: dict[str, str]
) -> None:
    bundle = _transaction(
        "transaction",
        [
            {"resource": b.patient("t1"), "request": {"method": "PUT", "url": "Patient/t1"}},
            {
                "resource": b.patient("t2"),
                "request": {"method": "PUT", "url": "Patient/t2", "ifMatch": 'W/"4"'},
            },
        ],
    )
    r = client.post("/fhir", json=bundle, headers=sender)
    assert r.status_code == 412
    assert client.get("/fhir/Patient/t1", headers=auth).status_code == 404
    batch = _transaction(
        "batch",
        [
            {"resource": b.patient("t1"), "request": {"method": "PUT", "url": "Patient/t1"}},
            {
                "resource": b.patient("t2"),
                "request": {"method": "PUT", "url": "Patient/t2", "ifMatch": 'W/"4"'},
            },
            {"request": {"method": "GET", "url": "Patient/t1"}},
        ],
    )
    r = client.post("/fhir", json=batch, headers=sender)
    assert r.status_code == 200
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    assert statuses[0] == "201 Created" and statuses[1].startswith("412") and statuses[2].startswith("403")
    assert client.get("/fhir/Patient/t1", headers=auth).status_code == 200
    assert (
        client.post(
            "/fhir", json={"resourceType": "Bundle", "type": "collection"}, headers=sender
        ).status_code
        == 400
    )
    assert client.post("/fhir", json=bundle, headers=auth).status_code == 403


def test_patients_written_over_fhir_go_to_the_mpi(
    client: TestClient, sender: dict[str, str], auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every Patient a sender writes passes through hub.mpi.service.resolve_identities before it is
    stored, with the sender's token subject as its facility, like an HL7 v2 source Patient."""
    from hub.mpi import service as mpi

    seen: list[tuple[str, str]] = []

    def fake_resolve(session: Any, result: Any, ctx: Any) -> None:
        for res in result.resources:
            seen.append((res["id"], ctx.facility))
            res["link"] = [{"type": "refer", "other": {"reference": "Patient/golden-1"}}]

    monkeypatch.setattr(mpi, "resolve_identities", fake_resolve)
    client.put("/fhir/Patient/s1", json=b.patient("s1"), headers=sender)
    bundle = _transaction(
        "transaction", [{"resource": b.patient("s2"), "request": {"method": "PUT", "url": "Patient/s2"}}]
    )
    client.post("/fhir", json=bundle, headers=sender)
    client.put("/fhir/Observation/o1", json=b.observation("o1", "s1"), headers=sender)
    created = client.post("/fhir/Patient", json=_new_patient("M-1"), headers=sender).json()
    client.put(f"/fhir/Patient?identifier={b.MRN}|M-2", json=_new_patient("M-2"), headers=sender)
    assert [sid for sid, _ in seen][:3] == ["s1", "s2", created["id"]] and len(seen) == 4
    assert all(facility == "RS-TEST" for _, facility in seen)  # the sender token's facility
    stored = client.get("/fhir/Patient/s2", headers=auth).json()
    assert stored["link"][0]["other"]["reference"] == "Patient/golden-1"


def test_invalid_resources_are_422(
    client: TestClient, sender: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writes run the FHIR validator (hub.fhir.validate) and answer 422 with its problems."""
    import types

    import hub.fhir

    fake = types.ModuleType("hub.fhir.validate")
    fake.validate_resource = lambda r: (
        [] if r.get("gender") in ("male", "female") else ["gender: not in value set"]
    )  # type: ignore[attr-defined]
    monkeypatch.setattr(hub.fhir, "validate", fake, raising=False)
    monkeypatch.setitem(__import__("sys").modules, "hub.fhir.validate", fake)
    assert client.put("/fhir/Patient/v1", json=b.patient("v1"), headers=sender).status_code == 201
    r = client.put("/fhir/Patient/v2", json=b.patient("v2", gender="robot"), headers=sender)
    assert r.status_code == 422 and "gender" in r.json()["issue"][0]["diagnostics"]
