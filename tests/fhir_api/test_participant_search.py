"""PractitionerRole and Device searches: the roles a PRT or ROL made (practitioner, organization, role)
and the devices a result names (identifier, udi-di)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from tests.fhir_api import builders as b
from tests.fhir_api.conftest import match_ids

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
