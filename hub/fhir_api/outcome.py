"""OperationOutcome bodies the FHIR API adds to successful responses: the warnings of a search (unknown
parameters ignored) and the per-entry outcomes of a batch. Errors themselves are HubErrors, turned into
an OperationOutcome with their status by the application's exception handler."""

from __future__ import annotations

import orjson

from hub.errors import HubError
from hub.fhir.outcome import operation_outcome


def warnings_outcome(messages: list[str]) -> bytes | None:
    if not messages:
        return None
    issues = [{"severity": "warning", "code": "not-supported", "diagnostics": m} for m in messages]
    return orjson.dumps({"resourceType": "OperationOutcome", "issue": issues})


def error_outcome(exc: HubError) -> bytes:
    return operation_outcome("error", exc.code, exc.message)
