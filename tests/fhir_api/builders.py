"""Typed builders of synthetic FHIR resources for the store and API tests (no real patient data)."""

from __future__ import annotations

from typing import Any

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
NIK = "https://fhir.kemkes.go.id/id/nik"
MRN = "urn:oid:2.16.840.1.113883.3.9999.1"


def patient(
    pid: str,
    *,
    family: str = "Santoso",
    given: str = "Budi",
    birth_date: str = "1980-05-17",
    gender: str = "male",
    nik: str | None = None,
    mrn: str | None = None,
    links: list[tuple[str, str]] | None = None,
    phone: str | None = None,
    city: str = "Bandung",
) -> dict[str, Any]:
    identifiers = []
    if nik:
        identifiers.append({"system": NIK, "value": nik})
    if mrn:
        identifiers.append({"system": MRN, "value": mrn, "type": {"text": "Medical record number"}})
    res: dict[str, Any] = {
        "resourceType": "Patient",
        "id": pid,
        "identifier": identifiers,
        "active": True,
        "name": [{"family": family, "given": [given]}],
        "gender": gender,
        "birthDate": birth_date,
        "address": [{"city": city, "country": "ID"}],
    }
    if phone:
        res["telecom"] = [{"system": "phone", "value": phone}]
    if links:
        res["link"] = [{"type": t, "other": {"reference": f"Patient/{other}"}} for t, other in links]
    if not identifiers:
        del res["identifier"]
    return res


def observation(
    oid: str,
    patient_id: str,
    *,
    code: str = "8480-6",
    display: str = "Systolic blood pressure",
    system: str = LOINC,
    value: float | None = 120,
    unit: str = "mm[Hg]",
    effective: str = "2024-03-05T10:00:00Z",
    status: str = "final",
    category: str = "vital-signs",
    encounter: str | None = None,
    performer: str | None = None,
) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "Observation",
        "id": oid,
        "status": status,
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": category,
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": system, "code": code, "display": display}], "text": display},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": effective,
    }
    if value is not None:
        res["valueQuantity"] = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    if encounter:
        res["encounter"] = {"reference": f"Encounter/{encounter}"}
    if performer:
        res["performer"] = [{"reference": f"Practitioner/{performer}"}]
    return res


def encounter(
    eid: str,
    patient_id: str,
    *,
    start: str = "2024-03-05T08:00:00Z",
    end: str | None = None,
    status: str = "finished",
    location: str | None = None,
) -> dict[str, Any]:
    period: dict[str, str] = {"start": start}
    if end:
        period["end"] = end
    res: dict[str, Any] = {
        "resourceType": "Encounter",
        "id": eid,
        "status": status,
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "period": period,
    }
    if location:
        res["location"] = [{"location": {"reference": f"Location/{location}"}}]
    return res


def condition(cid: str, patient_id: str, *, code: str = "A90", onset: str = "2024-02-01") -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": cid,
        "clinicalStatus": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
            ]
        },
        "code": {
            "coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": code}],
            "text": "Dengue fever",
        },
        "subject": {"reference": f"Patient/{patient_id}"},
        "onsetDateTime": onset,
    }


def practitioner(prid: str, *, family: str = "Wijaya") -> dict[str, Any]:
    return {"resourceType": "Practitioner", "id": prid, "name": [{"family": family, "given": ["Sari"]}]}


def location(lid: str, *, name: str = "Poli Umum") -> dict[str, Any]:
    return {"resourceType": "Location", "id": lid, "name": name, "status": "active"}


def provenance(pvid: str, target: str, *, recorded: str = "2024-03-05T10:05:00Z") -> dict[str, Any]:
    return {
        "resourceType": "Provenance",
        "id": pvid,
        "target": [{"reference": target}],
        "recorded": recorded,
        "agent": [{"who": {"display": "lab system"}}],
    }
