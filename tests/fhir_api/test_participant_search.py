"""PractitionerRole and Device searches: the roles a PRT or ROL made (practitioner, organization, role)
and the devices a result names (identifier, udi-di)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from hub import pipeline
from hub.config import Settings
from hub.db import session_scope
from hub.ingest.service import Intake
from tests.fhir_api import builders as b
from tests.fhir_api.conftest import match_ids
from tests.mapping._support import map_file

V2_0912 = "http://terminology.hl7.org/CodeSystem/v2-0912"


def _role(rid: str, practitioner: str, code: str, organization: str | None = None) -> dict[str, object]:
    role: dict[str, object] = {
        "resourceType": "PractitionerRole",
        "id": rid,
        "active": True,
        "practitioner": {"reference": f"Practitioner/{practitioner}"},
        "code": [{"coding": [{"system": V2_0912, "code": code}]}],
    }
    if organization:
        role["organization"] = {"reference": f"Organization/{organization}"}
    return role


def test_practitioner_role_search(client: TestClient, auth: dict[str, str], put: Callable[..., None]) -> None:
    put(
        b.practitioner("drA"),
        b.practitioner("drB"),
        {"resourceType": "Organization", "id": "orgK", "name": "Klinik"},
        _role("roleA1", "drA", "PP", "orgK"),
        _role("roleA2", "drA", "OP"),
        _role("roleB1", "drB", "PP"),
    )

    def ids(query: str) -> list[str]:
        r = client.get(f"/fhir/PractitionerRole?{query}", headers=auth)
        assert r.status_code == 200, r.text
        return sorted(match_ids(r.json()))

    assert ids("practitioner=Practitioner/drA") == ["roleA1", "roleA2"]
    assert ids(f"role={V2_0912}|PP") == ["roleA1", "roleB1"]
    assert ids("organization=Organization/orgK") == ["roleA1"]
    assert ids("practitioner=Practitioner/drB&role=OP") == []


def test_device_search(client: TestClient, auth: dict[str, str], put: Callable[..., None]) -> None:
    put(
        {
            "resourceType": "Device",
            "id": "dev1",
            "identifier": [{"system": "urn:hub:id:RS-TEST", "value": "HA-2201"}],
            "udiCarrier": [{"deviceIdentifier": "UDI-00012345"}],
            "status": "active",
        },
        {"resourceType": "Device", "id": "dev2", "identifier": [{"value": "HA-9999"}], "status": "inactive"},
    )
    r = client.get("/fhir/Device?identifier=HA-2201", headers=auth)
    assert r.status_code == 200 and match_ids(r.json()) == ["dev1"]
    r = client.get("/fhir/Device?udi-di=UDI-0001", headers=auth)
    assert match_ids(r.json()) == ["dev1"]
    r = client.get("/fhir/Device?status=inactive", headers=auth)
    assert match_ids(r.json()) == ["dev2"]


def test_a_feed_with_rol_and_prt_reaches_the_patient_compartment(
    client: TestClient, auth: dict[str, str], engine: Engine
) -> None:
    """Through the pipeline: the ADT's CareTeam is found by CareTeam?patient= and $everything, with the
    PractitionerRoles and their Practitioners included; the next ADT's care team replaces it."""
    fixture = Path(__file__).resolve().parents[2] / "fixtures" / "hl7" / "adt_a01_rol_prt.hl7"
    raw = fixture.read_bytes().decode("utf-8")
    intake = Intake(engine, Settings())
    first = intake.accept(raw.encode()).message_id
    with session_scope(engine) as s:
        (outcome,) = pipeline.process_batch(s, [first])  # type: ignore[list-item]
    assert outcome.state == "processed", outcome
    patients = match_ids(client.get("/fhir/Patient?identifier=RM008822", headers=auth).json())
    (patient_id,) = [r["id"] for r in map_file(fixture).resources if r["resourceType"] == "Patient"]
    assert patient_id in patients  # the source Patient (and its golden record)
    teams = client.get(f"/fhir/CareTeam?patient={patient_id}", headers=auth).json()
    (team_id,) = match_ids(teams)
    everything = client.get(f"/fhir/Patient/{patient_id}/$everything", headers=auth).json()
    kinds = {(e["resource"]["resourceType"], e["search"]["mode"]) for e in everything["entry"]}
    assert {("CareTeam", "match"), ("RelatedPerson", "match"), ("PractitionerRole", "include")} <= kinds
    assert ("Practitioner", "include") in kinds
    # The next ADT lists one consultant only: the care team is what it says.
    later = (
        raw.replace("ADTROL0001", "ADTROL0002")
        .replace("20261106101500", "20261106111500")
        .replace("PRT|1|UC||RP^", "PRT|1|D||RP^")
    )
    second = intake.accept(later.encode()).message_id
    with session_scope(engine) as s:
        (outcome,) = pipeline.process_batch(s, [second])  # type: ignore[list-item]
    assert outcome.state == "processed", outcome
    team = client.get(f"/fhir/CareTeam/{team_id}", headers=auth).json()
    assert len(team["participant"]) == 1
