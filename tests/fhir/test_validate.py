"""hub.fhir.validate: the R4B models plus the shape rules (no empty elements, offsets on times)."""

from __future__ import annotations

import pytest

from hub.fhir.validate import InvalidResource, should_validate, validate_resource, validate_resources

GOOD = {
    "resourceType": "Observation",
    "id": "o1",
    "status": "final",
    "code": {"text": "x"},
    "effectiveDateTime": "2026-11-01T08:00:00+07:00",
}


def test_valid_resource_has_no_problems() -> None:
    assert validate_resource(GOOD) == []


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"status": None}, "null"),
        ({"code": {}}, "empty object"),
        ({"note": []}, "empty array"),
        ({"effectiveDateTime": "2026-11-01T08:00:00"}, "no offset"),
        ({"status": "bogus"}, "status"),
    ],
)
def test_problems_are_reported(change: dict[str, object], needle: str) -> None:
    problems = validate_resource({**GOOD, **change})
    assert any(needle in p for p in problems), problems


def test_missing_required_element_is_reported() -> None:
    body = {k: v for k, v in GOOD.items() if k != "code"}
    assert any("code" in p for p in validate_resource(body))


def test_unknown_resource_type() -> None:
    assert validate_resource({"resourceType": "NotAThing", "id": "x"})


def test_validate_resources_modes() -> None:
    bad = [{**GOOD, "status": "bogus"}]
    validate_resources(bad, "off")
    with pytest.raises(InvalidResource) as err:
        validate_resources(bad, "all")
    assert err.value.code == "invalid-resource"
    sampled = [key for key in range(200) if should_validate("sample", key)]
    assert 0 < len(sampled) < 40
    assert sampled == [key for key in range(200) if should_validate("sample", key)]  # deterministic
