"""Every export leaves an AuditEvent (DICOM "Export" event): who ran it, whether it was de-identified,
and how many resources of each type it wrote. No patient data: the export's job id, counts and types."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from hub.store import resources


def record_export(
    session: Session, owner: str, role: str, job_id: str, deidentified: bool, outputs: list[dict[str, Any]]
) -> None:
    counts: dict[str, int] = {}
    for out in outputs:
        counts[out["type"]] = counts.get(out["type"], 0) + int(out["count"])
    event = {
        "resourceType": "AuditEvent",
        "id": str(uuid.uuid4()),
        "type": {
            "system": "http://dicom.nema.org/resources/ontology/DCM",
            "code": "110106",
            "display": "Export",
        },
        "subtype": [
            {"system": "http://hl7.org/fhir/restful-interaction", "code": "operation", "display": "$export"}
        ],
        "action": "R",
        "recorded": datetime.now(UTC).isoformat(),
        "outcome": "0",
        "agent": [{"who": {"display": f"{role}:{owner}"}, "requestor": True}],
        "source": {"observer": {"display": "hub"}},
        "entity": [
            {
                "what": {"identifier": {"system": "urn:hub:export-job", "value": job_id}},
                "detail": [
                    {"type": "deidentified", "valueString": "true" if deidentified else "false"},
                    *({"type": f"count:{t}", "valueString": str(n)} for t, n in sorted(counts.items())),
                ],
            }
        ],
    }
    resources.upsert(session, event)
