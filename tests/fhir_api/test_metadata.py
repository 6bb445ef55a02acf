"""The CapabilityStatement is valid R4 and lists exactly what the server does: every search parameter
it names is accepted by the server in strict mode, and responses validate against the FHIR models."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.operationoutcome import OperationOutcome

from tests.fhir_api import builders as b


def test_capability_statement_is_valid_and_exact(client: TestClient, auth: dict[str, str]) -> None:
    r = client.get("/fhir/metadata")
    statement = CapabilityStatement.model_validate(r.json())
    assert statement.fhirVersion == "4.0.1"
    rest = r.json()["rest"][0]
    types = {res["type"] for res in rest["resource"]}
    for wanted in (
        "Patient",
        "Observation",
        "Encounter",
        "Condition",
        "AuditEvent",
        "Provenance",
        "Coverage",
    ):
        assert wanted in types
    strict = {**auth, "Prefer": "handling=strict"}
    for res in rest["resource"]:
        if res["type"] == "AuditEvent":  # the audit trail: admins only, its own parameters (tests/auth)
            continue
        for param in res["searchParam"]:
            query = "x$2024" if param["type"] == "composite" else ":missing=true"
            sep = "=" if param["type"] == "composite" else ""
            url = f"/fhir/{res['type']}?{param['name']}{sep}{query}&_count=1"
            assert client.get(url, headers=strict).status_code == 200, url
        assert {"code": "search-type"} in res["interaction"] and {"code": "vread"} in res["interaction"]
    patient = next(res for res in rest["resource"] if res["type"] == "Patient")
    assert patient["operation"][0]["name"] == "everything"
    assert (
        "Observation:patient"
        in next(res for res in rest["resource"] if res["type"] == "Patient")["searchRevInclude"]
    )


def test_responses_validate(client: TestClient, auth: dict[str, str], put: Callable[..., None]) -> None:
    put(b.patient("p1"), b.observation("o1", "p1"), b.practitioner("dr1"))
    r = client.get("/fhir/Observation?patient=p1&_include=Observation:patient&unknown=1", headers=auth)
    Bundle.model_validate(r.json())
    r = client.get("/fhir/Patient/p1/_history", headers=auth)
    Bundle.model_validate(r.json())
    r = client.get("/fhir/Patient/p1/$everything", headers=auth)
    Bundle.model_validate(r.json())
    OperationOutcome.model_validate(client.get("/fhir/Patient/none", headers=auth).json())
