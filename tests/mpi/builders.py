"""Typed builders of synthetic source Patients in the shape the mapping produces (no real people)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from hub.mapping import MappingResult, SenderContext
from hub.mpi.match import NIK_SYSTEM
from hub.mpi.service import resolve_identities
from hub.store import resources as store

BPJS_SYSTEM = "https://fhir.kemkes.go.id/id/bpjs"
_NS = uuid.UUID("6ba7b811-9dad-11d1-80b4-00c04fd430c8")


def patient_id(facility: str, identifier: str, authority: str) -> str:
    """Stand-in for hub.mapping.patient_id until it lands: uuid5 over sender + PID-3 identifier/authority."""
    return str(uuid.uuid5(_NS, f"{facility}|{identifier}|{authority}"))


def patient(
    facility: str,
    mrn: str,
    name: str,
    birth_date: str | None = None,
    gender: str | None = None,
    *,
    nik: str | None = None,
    bpjs: str | None = None,
    phone: str | None = None,
    district: str | None = None,
    line: str | None = None,
    city: str | None = None,
) -> dict[str, Any]:
    identifiers: list[dict[str, Any]] = [
        {
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
            "system": f"urn:oid:2.16.360.{facility}",
            "value": mrn,
        }
    ]
    if nik is not None:
        identifiers.append(
            {
                "type": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NNIDN"}]
                },
                "system": NIK_SYSTEM,
                "value": nik,
            }
        )
    if bpjs is not None:
        identifiers.append(
            {
                "type": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "SN"}]
                },
                "system": BPJS_SYSTEM,
                "value": bpjs,
            }
        )
    tokens = name.split()
    res: dict[str, Any] = {
        "resourceType": "Patient",
        "id": patient_id(facility, mrn, facility),
        "identifier": identifiers,
        "name": [{"use": "official", "text": name, "given": tokens[:-1] or tokens, "family": tokens[-1]}],
    }
    if birth_date:
        res["birthDate"] = birth_date
    if gender:
        res["gender"] = gender
    if phone:
        res["telecom"] = [{"system": "phone", "value": phone, "use": "mobile"}]
    if district or line or city:
        address: dict[str, Any] = {"use": "home"}
        if line:
            address["line"] = [line]
        if city:
            address["city"] = city
        if district:
            address["extension"] = [
                {
                    "url": "https://fhir.kemkes.go.id/r4/StructureDefinition/administrativeCode",
                    "extension": [
                        {"url": "province", "valueCode": district[:2]},
                        {"url": "city", "valueCode": district[:4]},
                        {"url": "district", "valueCode": district},
                    ],
                }
            ]
        res["address"] = [address]
    return res


def observation(rid: str, patient: dict[str, Any]) -> dict[str, Any]:
    """A final Hb Observation of ``patient``: a resource in its compartment."""
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "code": {"text": "Hb"},
        "subject": {"reference": f"Patient/{patient['id']}"},
    }


def ingest(
    session: Session,
    facility: str,
    *resources: dict[str, Any],
    actions: list[dict[str, Any]] | None = None,
) -> MappingResult:
    """What the pipeline does with one mapped message: resolve identities, then store every resource."""
    result = MappingResult(resources=list(resources), actions=list(actions or []))
    resolve_identities(session, result, SenderContext(facility=facility))
    for resource in result.resources:
        store.upsert(session, resource)
    session.flush()
    return result


def refer(resource: dict[str, Any]) -> str:
    """The golden id a source Patient refers to."""
    links = [lk for lk in resource.get("link") or [] if lk["type"] == "refer"]
    assert len(links) == 1, resource.get("link")
    return str(links[0]["other"]["reference"]).removeprefix("Patient/")


@contextmanager
def recorded_statements(engine: Engine) -> Iterator[list[str]]:
    """The SQL statements ``engine`` runs inside the block (without SQLite's write transaction openings)."""
    statements: list[str] = []

    def record(*args: Any) -> None:
        if not str(args[2]).startswith("BEGIN"):
            statements.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)
