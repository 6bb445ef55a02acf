"""Patient/{id}/$everything: the whole compartment in pages (no cap), _since, _type, start/end, and the
golden Patient covering every linked source Patient."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from hub.db import session_scope
from hub.store import resources
from tests.fhir_api import builders as b
from tests.fhir_api.conftest import included_keys


@pytest.fixture
def golden(put: Callable[..., None]) -> None:
    put(
        b.patient("gold", links=[("seealso", "srcA"), ("seealso", "srcB")]),
        b.patient("srcA", links=[("refer", "gold")]),
        b.patient("srcB", links=[("refer", "gold")]),
        b.patient("stranger"),
        b.practitioner("dr1"),
        b.encounter("encA", "srcA", start="2024-01-10T08:00:00Z", end="2024-01-10T09:00:00Z"),
        b.condition("condB", "srcB", onset="2024-05-01"),
        b.observation("obsS", "stranger"),
    )
    put(
        *(
            b.observation(f"obsA{i:02d}", "srcA", effective=f"2024-02-{i + 1:02d}", performer="dr1")
            for i in range(12)
        )
    )
    put(*(b.observation(f"obsB{i:02d}", "srcB", effective=f"2024-07-{i + 1:02d}") for i in range(9)))


def _all_pages(client: TestClient, auth: dict[str, str], url: str) -> tuple[list[str], list[dict[str, Any]]]:
    keys: list[str] = []
    pages: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url:
        r = client.get(next_url, headers=auth)
        assert r.status_code == 200, r.text
        page = r.json()
        pages.append(page)
        keys += [
            f"{e['resource']['resourceType']}/{e['resource']['id']}"
            for e in page.get("entry", [])
            if e["search"]["mode"] == "match"
        ]
        next_url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    return keys, pages


@pytest.mark.usefixtures("golden")
def test_golden_everything_pages_through_every_source(client: TestClient, auth: dict[str, str]) -> None:
    keys, pages = _all_pages(client, auth, "/fhir/Patient/gold/$everything?_count=5")
    assert len(keys) == len(set(keys)) == 3 + 1 + 1 + 12 + 9
    assert len(pages) == 6
    assert "Patient/stranger" not in keys and "Observation/obsS" not in keys
    assert {"Patient/gold", "Patient/srcA", "Patient/srcB", "Encounter/encA", "Condition/condB"} <= set(keys)
    # Resources the compartment points at come along as includes.
    assert any("Practitioner/dr1" in included_keys(p) for p in pages)
    # A source Patient alone covers only its own records.
    source_keys, _ = _all_pages(client, auth, "/fhir/Patient/srcB/$everything")
    assert set(source_keys) == {
        "Patient/srcB",
        "Condition/condB",
        *(f"Observation/obsB{i:02d}" for i in range(9)),
    }


@pytest.mark.usefixtures("golden")
def test_everything_filters(client: TestClient, auth: dict[str, str], engine: Engine) -> None:
    keys, _ = _all_pages(client, auth, "/fhir/Patient/gold/$everything?_type=Condition,Encounter")
    assert sorted(keys) == ["Condition/condB", "Encounter/encA"]
    keys, _ = _all_pages(
        client,
        auth,
        "/fhir/Patient/gold/$everything?start=2024-07-01&end=2024-07-03&_type=Observation,Condition",
    )
    assert sorted(keys) == ["Observation/obsB00", "Observation/obsB01", "Observation/obsB02"]
    keys, _ = _all_pages(client, auth, "/fhir/Patient/gold/$everything?start=2024-04-01")
    assert "Condition/condB" in keys and "Encounter/encA" not in keys and "Patient/gold" in keys
    with session_scope(engine) as session:
        stamp = resources.read(session, "Observation", "obsB08")["meta"]["lastUpdated"]
        obs = b.observation("obsA00", "srcA", value=99)
        resources.upsert(session, obs)
    keys, _ = _all_pages(client, auth, f"/fhir/Patient/gold/$everything?_since={stamp}")
    assert "Observation/obsA00" in keys and "Observation/obsA05" not in keys


@pytest.mark.usefixtures("golden")
def test_everything_errors(client: TestClient, auth: dict[str, str], engine: Engine) -> None:
    assert client.get("/fhir/Patient/nobody/$everything", headers=auth).status_code == 404
    with session_scope(engine) as session:
        resources.delete(session, "Patient", "stranger")
    assert client.get("/fhir/Patient/stranger/$everything", headers=auth).status_code == 410
    assert client.get("/fhir/Patient/gold/$everything?start=yesterday", headers=auth).status_code == 400


@pytest.mark.usefixtures("golden")
def test_compartment_search(client: TestClient, auth: dict[str, str]) -> None:
    r = client.get("/fhir/Patient/gold/Observation?date=ge2024-07-08&_count=50", headers=auth)
    assert r.status_code == 200
    ids = sorted(e["resource"]["id"] for e in r.json()["entry"])
    assert ids == ["obsB07", "obsB08"]
    r = client.get("/fhir/Patient/gold/Condition", headers=auth)
    assert [e["resource"]["id"] for e in r.json()["entry"]] == ["condB"]
    assert client.get("/fhir/Patient/gold/Practitioner", headers=auth).status_code == 400
    assert client.get("/fhir/Patient/gold/_history", headers=auth).status_code == 200


def test_everything_brings_the_practitioner_of_a_practitioner_role(
    client: TestClient, auth: dict[str, str], put: Callable[..., None]
) -> None:
    """A PRT's or ROL's participant is a PractitionerRole: its Practitioner and Organization come along."""
    patient = b.patient("gpPat")
    patient["generalPractitioner"] = [{"reference": "PractitionerRole/gpRole"}]
    role = {
        "resourceType": "PractitionerRole",
        "id": "gpRole",
        "practitioner": {"reference": "Practitioner/gpDoc"},
        "organization": {"reference": "Organization/gpOrg"},
    }
    put(
        patient,
        role,
        b.practitioner("gpDoc"),
        {"resourceType": "Organization", "id": "gpOrg", "name": "Klinik"},
    )
    keys, pages = _all_pages(client, auth, "/fhir/Patient/gpPat/$everything")
    assert keys == ["Patient/gpPat"]
    assert included_keys(pages[0]) == {"PractitionerRole/gpRole", "Organization/gpOrg", "Practitioner/gpDoc"}
    # Counted against _count like every include: one entry a page, each once.
    keys, pages = _all_pages(client, auth, "/fhir/Patient/gpPat/$everything?_count=1")
    assert keys == ["Patient/gpPat"]
    assert [included_keys(p) for p in pages] == [
        set(),
        {"PractitionerRole/gpRole"},
        {"Organization/gpOrg"},
        {"Practitioner/gpDoc"},
    ]
