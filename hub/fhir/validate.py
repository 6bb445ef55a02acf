"""Validating mapped resources (plain dicts) against the FHIR R4B models of ``fhir.resources``, plus the
rules the models do not enforce: no empty elements, no nulls, dateTimes with a time carry an offset.

The hot path produces dicts; the tests validate every map with :func:`validate_resource`, and the
pipeline calls :func:`validate_resources` with ``Settings.validate_mode`` (``HUB_VALIDATE=all|sample|off``)
for a sender being onboarded.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from pydantic import ValidationError

from hub.errors import MappingError

SAMPLE_ONE_IN = 20  # HUB_VALIDATE=sample checks about one message in this many

# FHIR dateTime/instant with a time part: the offset is mandatory (R4 datatypes: dateTime, instant).
_DATETIME_WITH_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?$")
_HAS_OFFSET = re.compile(r"(Z|[+-]\d{2}:\d{2})$")


_REQUEST = {"draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown"}
# Elements with a required binding that the fhir.resources models do not check (R4 value sets).
REQUIRED_CODES: dict[tuple[str, str], frozenset[str]] = {
    (rtype, key): frozenset(codes)
    for rtype, key, codes in [
        ("Patient", "gender", {"male", "female", "other", "unknown"}),
        ("RelatedPerson", "gender", {"male", "female", "other", "unknown"}),
        ("Encounter", "status", {"planned", "arrived", "triaged", "in-progress", "onleave", "finished", "cancelled", "entered-in-error", "unknown"}),
        ("Observation", "status", {"registered", "preliminary", "final", "amended", "corrected", "cancelled", "entered-in-error", "unknown"}),
        ("DiagnosticReport", "status", {"registered", "partial", "preliminary", "final", "amended", "corrected", "appended", "cancelled", "entered-in-error", "unknown"}),
        ("ServiceRequest", "status", _REQUEST),
        ("ServiceRequest", "intent", {"proposal", "plan", "directive", "order", "original-order", "reflex-order", "filler-order", "instance-order", "option"}),
        ("ServiceRequest", "priority", {"routine", "urgent", "asap", "stat"}),
        ("MedicationRequest", "status", {"active", "on-hold", "cancelled", "completed", "entered-in-error", "stopped", "draft", "unknown"}),
        ("MedicationRequest", "intent", {"proposal", "plan", "order", "original-order", "reflex-order", "filler-order", "instance-order", "option"}),
        ("MedicationDispense", "status", {"preparation", "in-progress", "cancelled", "on-hold", "completed", "entered-in-error", "stopped", "declined", "unknown"}),
        ("Immunization", "status", {"completed", "entered-in-error", "not-done"}),
        ("AllergyIntolerance", "criticality", {"low", "high", "unable-to-assess"}),
        ("Procedure", "status", {"preparation", "in-progress", "not-done", "on-hold", "stopped", "completed", "entered-in-error", "unknown"}),
        ("Coverage", "status", {"active", "cancelled", "draft", "entered-in-error"}),
        ("Appointment", "status", {"proposed", "pending", "booked", "arrived", "fulfilled", "cancelled", "noshow", "entered-in-error", "checked-in", "waitlist"}),
        ("DocumentReference", "status", {"current", "superseded", "entered-in-error"}),
        ("DocumentReference", "docStatus", {"preliminary", "final", "amended", "entered-in-error"}),
    ]
}  # fmt: skip
REQUIRED_NESTED: dict[tuple[str, str], frozenset[str]] = {
    ("name", "use"): frozenset({"usual", "official", "temp", "nickname", "anonymous", "old", "maiden"}),
    ("address", "use"): frozenset({"home", "work", "temp", "old", "billing"}),
    ("telecom", "system"): frozenset({"phone", "fax", "email", "pager", "url", "sms", "other"}),
    ("telecom", "use"): frozenset({"home", "work", "temp", "old", "mobile"}),
}


def _binding_problems(resource: dict[str, Any], where: str, out: list[str]) -> None:
    rtype = resource["resourceType"]
    for key, value in resource.items():
        allowed = REQUIRED_CODES.get((rtype, key))
        if allowed is not None and value not in allowed:
            out.append(f"{where}: {key}: {value!r} is not in the required value set")
        if isinstance(value, list):
            for item in value:
                if not isinstance(item, dict):
                    continue
                for sub, sub_value in item.items():
                    nested = REQUIRED_NESTED.get((key, sub))
                    if nested is not None and sub_value not in nested:
                        out.append(f"{where}: {key}.{sub}: {sub_value!r} is not in the required value set")


class InvalidResource(MappingError):
    """A mapped resource is not valid FHIR R4: a map is wrong, so the message fails and stays replayable."""

    code = "invalid-resource"


@lru_cache(maxsize=128)
def _model(resource_type: str) -> Any:
    from fhir.resources.R4B import get_fhir_model_class

    return get_fhir_model_class(resource_type)


def _shape_problems(value: Any, path: str, out: list[str]) -> None:
    if value is None:
        out.append(f"{path}: null")
    elif isinstance(value, dict):
        if not value:
            out.append(f"{path}: empty object")
        for key, item in value.items():
            _shape_problems(item, f"{path}.{key}", out)
    elif isinstance(value, list):
        if not value:
            out.append(f"{path}: empty array")
        for i, item in enumerate(value):
            _shape_problems(item, f"{path}[{i}]", out)
    elif isinstance(value, str):
        if not value.strip():
            out.append(f"{path}: empty string")
        elif _DATETIME_WITH_TIME.match(value) and not _HAS_OFFSET.search(value):
            out.append(f"{path}: dateTime {value!r} has a time but no offset")


def validate_resource(resource: dict[str, Any]) -> list[str]:
    """Problems with one resource ([] when it is valid)."""
    problems: list[str] = []
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str):
        return ["resourceType is missing"]
    where = f"{rtype}/{resource.get('id', '?')}"
    _shape_problems(resource, where, problems)
    _binding_problems(resource, where, problems)
    try:
        model = _model(rtype)
    except (KeyError, ValueError, AttributeError, ImportError):
        return [*problems, f"{where}: unknown resource type {rtype!r}"]
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"])
            problems.append(f"{where}: {loc}: {err['msg']}")
    except ValueError as exc:  # fhir.resources raises plain ValueErrors for some invariants
        problems.append(f"{where}: {exc}")
    return problems


def should_validate(mode: str, key: str | int | None = None) -> bool:
    """Whether a message is checked under ``mode`` (``all``, ``sample`` or ``off``); sampling is
    deterministic on ``key`` (the message id) so a replay is checked the same way."""
    mode = (mode or "off").lower()
    if mode == "all":
        return True
    if mode == "sample":
        return zlib.crc32(str(key).encode()) % SAMPLE_ONE_IN == 0
    return False


def validate_resources(
    resources: Iterable[dict[str, Any]], mode: str = "all", key: str | int | None = None
) -> None:
    """Raise :class:`InvalidResource` listing every problem when ``mode`` selects this message."""
    if not should_validate(mode, key):
        return
    problems: list[str] = []
    for resource in resources:
        problems.extend(validate_resource(resource))
    if problems:
        raise InvalidResource("mapped resources are not valid FHIR R4: " + "; ".join(problems[:20]))
