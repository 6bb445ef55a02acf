"""Every completed export is recorded in the audit trail (``hub.audit``) beside the requests that started,
polled and downloaded it: who ran it, the job, whether it was de-identified, and how many resources of
each type it wrote (shown in the AuditEvent's ``outcomeDesc``). No patient data: types and counts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from hub.audit import record_now


def record_export(
    engine: Engine, owner: str, role: str, job_id: str, deidentified: bool, outputs: list[dict[str, Any]]
) -> None:
    counts: dict[str, int] = {}
    for out in outputs:
        counts[out["type"]] = counts.get(out["type"], 0) + int(out["count"])
    written = ", ".join(f"{t} {n}" for t, n in sorted(counts.items())) or "nothing"
    kind = "de-identified" if deidentified else "identified"
    record_now(
        engine,
        "export",
        agent=owner,
        role=role,
        action="R",
        reason=f"bulk export {job_id} ({kind}): {written}",
        method="EXPORT",
        path=f"/fhir/$export-status/{job_id}",
    )
