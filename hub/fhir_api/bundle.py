"""Assembling Bundles (searchset, history, transaction-response) from stored JSON bytes without parsing
each resource, and the resource subsets of ``_summary`` and ``_elements`` (which do parse)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

from hub.fhir_api.search import HistoryEntry, Row

FHIR_JSON = "application/fhir+json"
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}

# R4 elements flagged isSummary, per resource type (top level); resourceType, id and meta always stay.
SUMMARY_ELEMENTS: dict[str, frozenset[str]] = {
    "Patient": frozenset(
        [
            "identifier",
            "active",
            "name",
            "telecom",
            "gender",
            "birthDate",
            "deceased",
            "address",
            "managingOrganization",
            "link",
        ]
    ),
    "Encounter": frozenset(
        [
            "identifier",
            "status",
            "class",
            "type",
            "serviceType",
            "priority",
            "subject",
            "episodeOfCare",
            "basedOn",
            "participant",
            "appointment",
            "period",
            "length",
            "reasonCode",
            "reasonReference",
            "diagnosis",
            "account",
            "location",
            "serviceProvider",
            "partOf",
        ]
    ),
    "Observation": frozenset(
        [
            "identifier",
            "basedOn",
            "partOf",
            "status",
            "category",
            "code",
            "subject",
            "focus",
            "encounter",
            "effective",
            "issued",
            "performer",
            "value",
            "dataAbsentReason",
            "interpretation",
            "hasMember",
            "derivedFrom",
            "component",
        ]
    ),
    "Condition": frozenset(
        [
            "identifier",
            "clinicalStatus",
            "verificationStatus",
            "category",
            "severity",
            "code",
            "bodySite",
            "subject",
            "encounter",
            "onset",
            "abatement",
            "recordedDate",
        ]
    ),
    "AllergyIntolerance": frozenset(
        [
            "identifier",
            "clinicalStatus",
            "verificationStatus",
            "type",
            "category",
            "criticality",
            "code",
            "patient",
            "encounter",
            "onset",
            "recordedDate",
            "lastOccurrence",
        ]
    ),
    "Immunization": frozenset(
        [
            "identifier",
            "status",
            "vaccineCode",
            "patient",
            "occurrence",
            "primarySource",
            "lotNumber",
            "performer",
            "protocolApplied",
        ]
    ),
    "MedicationRequest": frozenset(
        [
            "identifier",
            "status",
            "intent",
            "category",
            "priority",
            "doNotPerform",
            "medication",
            "subject",
            "encounter",
            "authoredOn",
            "requester",
            "performer",
            "reasonCode",
            "reasonReference",
            "basedOn",
        ]
    ),
    "MedicationDispense": frozenset(
        [
            "identifier",
            "status",
            "medication",
            "subject",
            "context",
            "performer",
            "authorizingPrescription",
            "type",
            "quantity",
            "whenPrepared",
            "whenHandedOver",
        ]
    ),
    "DiagnosticReport": frozenset(
        [
            "identifier",
            "basedOn",
            "status",
            "category",
            "code",
            "subject",
            "encounter",
            "effective",
            "issued",
            "performer",
            "resultsInterpreter",
            "specimen",
            "result",
            "media",
            "presentedForm",
        ]
    ),
    "Procedure": frozenset(
        [
            "identifier",
            "basedOn",
            "partOf",
            "status",
            "category",
            "code",
            "subject",
            "encounter",
            "performed",
            "recorder",
            "asserter",
            "performer",
            "location",
            "reasonCode",
            "reasonReference",
            "bodySite",
            "outcome",
        ]
    ),
    "DocumentReference": frozenset(
        [
            "masterIdentifier",
            "identifier",
            "status",
            "docStatus",
            "type",
            "category",
            "subject",
            "date",
            "author",
            "authenticator",
            "custodian",
            "relatesTo",
            "description",
            "securityLabel",
            "content",
            "context",
        ]
    ),
    "ServiceRequest": frozenset(
        [
            "identifier",
            "basedOn",
            "replaces",
            "requisition",
            "status",
            "intent",
            "category",
            "priority",
            "doNotPerform",
            "code",
            "subject",
            "encounter",
            "occurrence",
            "authoredOn",
            "requester",
            "performerType",
            "performer",
            "reasonCode",
        ]
    ),
    "Specimen": frozenset(
        ["identifier", "accessionIdentifier", "status", "type", "subject", "receivedTime", "parent"]
    ),
    "Appointment": frozenset(
        [
            "identifier",
            "status",
            "cancelationReason",
            "serviceCategory",
            "serviceType",
            "specialty",
            "appointmentType",
            "priority",
            "description",
            "start",
            "end",
            "minutesDuration",
            "slot",
            "created",
            "participant",
        ]
    ),
    "Coverage": frozenset(
        [
            "identifier",
            "status",
            "type",
            "policyHolder",
            "subscriber",
            "subscriberId",
            "beneficiary",
            "dependent",
            "relationship",
            "period",
            "payor",
            "class",
            "order",
            "network",
            "subrogation",
            "contract",
        ]
    ),
    "RelatedPerson": frozenset(
        [
            "identifier",
            "active",
            "patient",
            "relationship",
            "name",
            "telecom",
            "gender",
            "birthDate",
            "address",
        ]
    ),
    "Practitioner": frozenset(["identifier", "active", "name", "telecom", "address", "gender", "birthDate"]),
    "Organization": frozenset(["identifier", "active", "type", "name"]),
    "Location": frozenset(
        [
            "identifier",
            "status",
            "operationalStatus",
            "name",
            "alias",
            "mode",
            "type",
            "physicalType",
            "managingOrganization",
        ]
    ),
    "Provenance": frozenset(["target", "occurred", "recorded", "agent"]),
    "AuditEvent": frozenset(
        ["type", "subtype", "action", "period", "recorded", "outcome", "agent", "source", "entity"]
    ),
}


def fhir_instant(dt: datetime) -> str:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _keep(resource: dict[str, Any], names: frozenset[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in resource.items():
        if key in ("resourceType", "id", "meta"):
            out[key] = value
            continue
        bare = key.lstrip("_")
        if bare in names or any(bare.startswith(n) and bare[len(n) : len(n) + 1].isupper() for n in names):
            out[key] = value
    meta = dict(out.get("meta") or {})
    meta["tag"] = [*(meta.get("tag") or []), SUBSETTED]
    out["meta"] = meta
    return out


def subset(content: bytes, summary: str | None, elements: list[str]) -> bytes:
    """Apply ``_summary`` (true, text, data) and ``_elements`` to stored bytes."""
    if not summary and not elements:
        return content
    resource = orjson.loads(content)
    if summary == "data":
        resource.pop("text", None)
        meta = dict(resource.get("meta") or {})
        meta["tag"] = [*(meta.get("tag") or []), SUBSETTED]
        resource["meta"] = meta
        return orjson.dumps(resource)
    if summary == "text":
        names = frozenset({"text"})
    elif summary == "true":
        names = SUMMARY_ELEMENTS.get(resource.get("resourceType", ""), frozenset())
    else:
        names = frozenset(elements)
    return orjson.dumps(_keep(resource, names))


def _link(relation: str, url: str) -> bytes:
    return orjson.dumps({"relation": relation, "url": url})


def searchset(
    base: str,
    matches: Iterable[Row],
    included: Iterable[Row],
    *,
    total: int | None,
    self_url: str,
    next_url: str | None,
    outcome: bytes | None = None,
    summary: str | None = None,
    elements: list[str] | None = None,
) -> bytes:
    """A searchset Bundle spliced together from the stored bytes of each resource."""
    parts = [
        b'{"resourceType":"Bundle","type":"searchset","timestamp":"',
        fhir_instant(datetime.now(UTC)).encode(),
    ]
    parts.append(b'"')
    if total is not None:
        parts.append(b',"total":' + str(total).encode())
    links = [_link("self", self_url)]
    if next_url is not None:
        links.append(_link("next", next_url))
    parts.append(b',"link":[' + b",".join(links) + b"]")
    entries: list[bytes] = []
    for row in matches:
        entries.append(_entry(base, row, summary, elements or []))
    for row in included:
        entries.append(_entry(base, row, None, []))
    if outcome is not None:
        entries.append(b'{"resource":' + outcome + b',"search":{"mode":"outcome"}}')
    if entries:
        parts.append(b',"entry":[' + b",".join(entries) + b"]")
    parts.append(b"}")
    return b"".join(parts)


def _entry(base: str, row: Row, summary: str | None, elements: list[str]) -> bytes:
    content = subset(row.content, summary, elements) if row.mode == "match" else row.content
    return b"".join(
        (
            b'{"fullUrl":"',
            f"{base}/{row.resource_type}/{row.id}".encode(),
            b'","resource":',
            content,
            b',"search":{"mode":"',
            row.mode.encode(),
            b'"}}',
        )
    )


def history_bundle(base: str, entries: list[HistoryEntry], *, self_url: str, next_url: str | None) -> bytes:
    parts = [
        b'{"resourceType":"Bundle","type":"history","timestamp":"',
        fhir_instant(datetime.now(UTC)).encode(),
    ]
    parts.append(b'"')
    links = [_link("self", self_url)]
    if next_url is not None:
        links.append(_link("next", next_url))
    parts.append(b',"link":[' + b",".join(links) + b"]")
    items: list[bytes] = []
    for e in entries:
        url = f"{e.resource_type}/{e.id}"
        if e.deleted:
            request = {"method": "DELETE", "url": url}
            response: dict[str, Any] = {"status": "204 No Content"}
        elif e.version_id == 1:
            request = {"method": "POST", "url": e.resource_type}
            response = {"status": "201 Created"}
        else:
            request = {"method": "PUT", "url": url}
            response = {"status": "200 OK"}
        response["etag"] = f'W/"{e.version_id}"'
        response["lastModified"] = fhir_instant(e.last_updated)
        body = b'{"fullUrl":"' + f"{base}/{url}".encode() + b'"'
        if not e.deleted:
            body += b',"resource":' + e.content
        body += b',"request":' + orjson.dumps(request) + b',"response":' + orjson.dumps(response) + b"}"
        items.append(body)
    if items:
        parts.append(b',"entry":[' + b",".join(items) + b"]")
    parts.append(b"}")
    return b"".join(parts)
