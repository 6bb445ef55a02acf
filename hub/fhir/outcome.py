"""OperationOutcome bodies for errors and warnings (FHIR R4 3.1.0 OperationOutcome)."""

from __future__ import annotations

import orjson


def operation_outcome(
    severity: str, code: str, diagnostics: str, *, expression: list[str] | None = None
) -> bytes:
    """One-issue OperationOutcome as JSON bytes. ``code`` is from the FHIR issue-type value set."""
    issue: dict[str, object] = {"severity": severity, "code": _issue_type(code), "diagnostics": diagnostics}
    if expression:
        issue["expression"] = expression
    return orjson.dumps({"resourceType": "OperationOutcome", "issue": [issue]})


# Hub error codes that are not themselves FHIR issue types, mapped to the nearest one.
_ISSUE_TYPES = {
    "not-found": "not-found",
    "deleted": "deleted",
    "invalid": "invalid",
    "login": "login",
    "forbidden": "forbidden",
    "conflict": "conflict",
    "precondition-failed": "conflict",
    "processing": "processing",
    "not-supported": "not-supported",
    "too-costly": "too-costly",
    "throttled": "throttled",
}


def _issue_type(code: str) -> str:
    return _ISSUE_TYPES.get(code, "exception" if code.endswith("error") else "processing")
