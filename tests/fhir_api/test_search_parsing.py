"""Pure parts of search: value splitting and escapes, prefixes, cursors, subsets of resources."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from hub.errors import BadRequest
from hub.fhir_api.bundle import subset
from hub.fhir_api.search import _prefix, decode_cursor, encode_cursor, split_values
from hub.store.search_params import REGISTRY, SEARCHABLE_TYPES, parse_reference


def test_split_values_and_escapes() -> None:
    assert split_values("a,b") == ["a", "b"]
    assert split_values(r"a\,b,c") == ["a,b", "c"]
    assert split_values(r"x\|y") == ["x|y"]


def test_prefixes() -> None:
    assert _prefix("ge2024") == ("ge", "2024")
    assert _prefix("2024") == ("eq", "2024")
    assert _prefix("ap5.4") == ("ap", "5.4")
    assert _prefix("eq") == ("eq", "eq")  # a bare prefix is a value
    assert _prefix("lteral") == ("eq", "lteral")


def test_cursor_round_trip() -> None:
    when = datetime(2024, 3, 5, 10, tzinfo=UTC)
    token = encode_cursor([when, "obs-1", 3])
    assert "=" not in token
    assert decode_cursor(token) == [when.isoformat(), "obs-1", 3]
    with pytest.raises(BadRequest):
        decode_cursor("%%%")
    with pytest.raises(BadRequest):
        decode_cursor(encode_cursor([1])[:-2] + "AA")


def test_references() -> None:
    assert parse_reference("Patient/123") == ("Patient", "123")
    assert parse_reference("https://other.example/fhir/Patient/9/_history/2") == ("Patient", "9")
    assert parse_reference("urn:uuid:0f1e", "Patient") == ("Patient", "urn:uuid:0f1e")


def test_issue_types_are_searchable() -> None:
    for rtype in [
        "Patient",
        "Encounter",
        "Observation",
        "Condition",
        "AllergyIntolerance",
        "Immunization",
        "MedicationRequest",
        "MedicationDispense",
        "DiagnosticReport",
        "Procedure",
        "DocumentReference",
        "ServiceRequest",
        "Specimen",
        "Appointment",
        "Coverage",
        "RelatedPerson",
        "Practitioner",
        "Organization",
        "Location",
        "Provenance",
        "AuditEvent",
    ]:
        assert rtype in SEARCHABLE_TYPES
        params = REGISTRY[rtype].params
        assert {"_id", "_lastUpdated"} <= set(params)
        if rtype not in ("Provenance", "AuditEvent"):
            assert "identifier" in params, rtype


def test_subsets() -> None:
    content = orjson.dumps(
        {
            "resourceType": "Observation",
            "id": "o1",
            "meta": {"versionId": "1"},
            "text": {"status": "generated", "div": "<div/>"},
            "status": "final",
            "valueQuantity": {"value": 1},
            "note": [{"text": "n"}],
        }
    )
    assert set(orjson.loads(subset(content, "text", []))) == {"resourceType", "id", "meta", "text"}
    data = orjson.loads(subset(content, "data", []))
    assert "text" not in data and "note" in data
    summary = orjson.loads(subset(content, "true", []))
    assert "valueQuantity" in summary and "note" not in summary and "text" not in summary
    assert subset(content, None, []) is content
