"""ADT pending/cancel/move triggers and BAR billing messages: mapped by their own message maps."""

from __future__ import annotations

import pytest

from tests.mapping._support import HL7_DIR, by_type, map_text, read


def _as(trigger: str) -> str:
    return read(HL7_DIR / "adt_a01.hl7").replace("ADT^A01", trigger, 1)


@pytest.mark.parametrize(
    ("trigger", "status"),
    [
        ("ADT^A25", "in-progress"),
        ("ADT^A26", "in-progress"),
        ("ADT^A27", "cancelled"),
        ("ADT^A45", "in-progress"),
    ],
)
def test_pending_cancel_and_move_triggers_set_the_encounter_status(trigger: str, status: str) -> None:
    (encounter,) = by_type(map_text(_as(trigger)), "Encounter")
    assert encounter["status"] == status


def test_a27_acts_on_the_encounter_the_a01_made() -> None:
    (admit,) = by_type(map_text(_as("ADT^A01")), "Encounter")
    (cancel,) = by_type(map_text(_as("ADT^A27")), "Encounter")
    assert cancel["id"] == admit["id"]


@pytest.mark.parametrize("trigger", ["BAR^P01", "BAR^P02", "BAR^P05", "BAR^P06", "BAR^P10", "BAR^P12"])
def test_billing_messages_are_mapped_and_leave_the_encounter_status_alone(trigger: str) -> None:
    result = map_text(_as(trigger))
    assert by_type(result, "Patient")
    assert by_type(result, "Encounter") == []
