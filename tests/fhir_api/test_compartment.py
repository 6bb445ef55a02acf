"""FHIR R4's Patient CompartmentDefinition: every type the hub keeps reaches Patient/{id}/$everything and
``patient=`` through the definition's own parameters; $everything's _count bounds every page's entries
(the Practitioners, Organizations, Locations it includes counted) and its next links reach everything."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hub.store.search_params import PATIENT_COMPARTMENT, params_of
from tests.fhir_api import builders as b

P = {"reference": "Patient/p1"}
DR = {"reference": "Practitioner/dr1"}
ORG = {"reference": "Organization/org1"}
LOC = {"reference": "Location/loc1"}
CODE = {"coding": [{"system": "http://loinc.org", "code": "1-8"}]}


def _of(rtype: str, rid: str, **body: Any) -> dict[str, Any]:
    return {"resourceType": rtype, "id": rid, **body}


# One resource of each compartment type, each reaching Patient/p1 by the definition's parameter.
MEMBERS: list[dict[str, Any]] = [
    _of("Account", "acc1", status="active", subject=[P], owner=ORG),
    _of("AllergyIntolerance", "al1", patient=P, code=CODE),
    _of(
        "Appointment",
        "ap1",
        status="booked",
        participant=[{"actor": LOC, "status": "accepted"}, {"actor": P, "status": "accepted"}],
    ),
    _of("CareTeam", "ct1", subject=P, participant=[{"member": DR}]),
    _of("ChargeItem", "ci1", status="billable", code=CODE, subject=P, enteredDate="2024-01-02"),
    _of("Condition", "co1", subject=P, code=CODE),
    _of("Coverage", "cov1", status="active", beneficiary=P, payor=[ORG]),
    _of(
        "Coverage",
        "cov2",
        status="active",
        subscriber=P,
        beneficiary={"reference": "Patient/p2"},
        payor=[ORG],
    ),
    _of("DiagnosticReport", "dr1", status="final", code=CODE, subject=P, performer=[ORG]),
    _of(
        "DocumentReference",
        "doc1",
        status="current",
        subject=P,
        content=[{"attachment": {"contentType": "text/plain"}}],
    ),
    _of("Encounter", "enc1", status="finished", subject=P, location=[{"location": LOC}]),
    _of("EpisodeOfCare", "eoc1", status="active", patient=P, managingOrganization=ORG),
    _of(
        "Immunization",
        "imm1",
        status="completed",
        patient=P,
        vaccineCode=CODE,
        occurrenceDateTime="2024-01-01",
    ),
    _of(
        "MedicationAdministration",
        "ma1",
        status="completed",
        subject=P,
        medicationCodeableConcept=CODE,
        effectiveDateTime="2024-01-01",
    ),
    _of(
        "MedicationRequest",
        "mr1",
        status="active",
        intent="order",
        subject=P,
        medicationCodeableConcept=CODE,
        requester=DR,
    ),
    _of("Observation", "obs1", status="final", code=CODE, subject=P, performer=[DR]),
    _of("Procedure", "pr1", status="completed", subject=P, performer=[{"actor": DR}]),
    _of("RelatedPerson", "rp1", patient=P),
    _of("ServiceRequest", "sr1", status="active", intent="order", subject=P, requester=DR),
    _of("Specimen", "sp1", subject=P),
]
TYPES = sorted({m["resourceType"] for m in MEMBERS})


@pytest.fixture
def compartment(put: Callable[..., None]) -> None:
    put(
        b.patient("p1"),
        b.patient("p2"),
        b.practitioner("dr1"),
        b.location("loc1"),
        {"resourceType": "Organization", "id": "org1", "name": "RSUD Sehat"},
        *MEMBERS,
        _of("Observation", "other", status="final", code=CODE, subject={"reference": "Patient/p2"}),
    )


def _pages(client: TestClient, auth: dict[str, str], url: str) -> list[dict[str, Any]]:
    pages: list[dict[str, Any]] = []
    next_url: str | None = url
    while next_url:
        r = client.get(next_url, headers=auth)
        assert r.status_code == 200, r.text
        pages.append(r.json())
        next_url = next((link["url"] for link in r.json()["link"] if link["relation"] == "next"), None)
        assert len(pages) < 100
    return pages


def _keys(pages: list[dict[str, Any]], mode: str) -> list[str]:
    return [
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for p in pages
        for e in p.get("entry", [])
        if e["search"]["mode"] == mode
    ]


def test_every_compartment_type_is_registered_with_the_definitions_parameters() -> None:
    for rtype in TYPES:
        params = params_of(rtype)
        assert "patient" in params and params["patient"].type == "reference", rtype
        assert rtype in PATIENT_COMPARTMENT, rtype
        for name in PATIENT_COMPARTMENT[rtype]:
            if name in params:
                assert params[name].type == "reference", (rtype, name)
    assert params_of("Appointment")["actor"].paths == ["participant.actor"]
    assert set(params_of("Coverage")["patient"].paths) == {"beneficiary", "subscriber", "policyHolder"}
    assert params_of("Account")["patient"].paths == ["subject"]


@pytest.mark.usefixtures("compartment")
def test_everything_reaches_every_compartment_type(client: TestClient, auth: dict[str, str]) -> None:
    pages = _pages(client, auth, "/fhir/Patient/p1/$everything")
    matches = _keys(pages, "match")
    expected = {f"{m['resourceType']}/{m['id']}" for m in MEMBERS} | {"Patient/p1"}
    assert set(matches) == expected
    assert "Observation/other" not in matches and "Patient/p2" not in matches
    assert set(_keys(pages, "include")) == {"Practitioner/dr1", "Location/loc1", "Organization/org1"}
    assert pages[0]["total"] == len(expected)


@pytest.mark.usefixtures("compartment")
@pytest.mark.parametrize("rtype", TYPES)
def test_patient_search_on_each_compartment_type(
    client: TestClient, auth: dict[str, str], rtype: str
) -> None:
    want = sorted(m["id"] for m in MEMBERS if m["resourceType"] == rtype)
    for url in (
        f"/fhir/{rtype}?patient=Patient/p1",
        f"/fhir/{rtype}?patient=p1",
        f"/fhir/Patient/p1/{rtype}",
    ):
        r = client.get(url, headers=auth)
        assert r.status_code == 200, r.text
        got = sorted(e["resource"]["id"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match")
        assert got == want, url


@pytest.mark.usefixtures("compartment")
def test_definition_parameters_search(client: TestClient, auth: dict[str, str]) -> None:
    def ids(url: str) -> list[str]:
        r = client.get(url, headers=auth)
        assert r.status_code == 200, r.text
        return sorted(e["resource"]["id"] for e in r.json().get("entry", []))

    assert ids("/fhir/Appointment?actor=Patient/p1") == ["ap1"]
    assert ids("/fhir/Coverage?subscriber=Patient/p1") == ["cov2"]
    assert ids("/fhir/Coverage?beneficiary=Patient/p1") == ["cov1"]
    assert ids("/fhir/Coverage?patient=Patient/p2") == ["cov2"]
    assert ids("/fhir/Account?subject=Patient/p1") == ["acc1"]
    assert ids("/fhir/EpisodeOfCare?patient=p1") == ["eoc1"]


@pytest.mark.usefixtures("compartment")
@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_everything_count_bounds_every_page_and_next_links_reach_all(
    client: TestClient, auth: dict[str, str], count: int
) -> None:
    whole = _pages(client, auth, "/fhir/Patient/p1/$everything")
    pages = _pages(client, auth, f"/fhir/Patient/p1/$everything?_count={count}")
    assert all(0 < len(p.get("entry", [])) <= count for p in pages)
    assert len(pages) > 1
    assert sorted(_keys(pages, "match")) == sorted(_keys(whole, "match"))  # each match once
    assert set(_keys(pages, "include")) == set(_keys(whole, "include"))


@pytest.mark.usefixtures("compartment")
def test_capability_statement_lists_every_compartment_type(client: TestClient, auth: dict[str, str]) -> None:
    r = client.get("/fhir/metadata", headers=auth)
    assert r.status_code == 200
    rest = r.json()["rest"][0]["resource"]
    by_type = {res["type"]: {p["name"] for p in res.get("searchParam", [])} for res in rest}
    for rtype in TYPES:
        assert "patient" in by_type.get(rtype, set()), rtype
    assert {"actor"} <= by_type["Appointment"]
    assert {"beneficiary", "subscriber", "policy-holder"} <= by_type["Coverage"]
    assert "subject" in by_type["Account"]
