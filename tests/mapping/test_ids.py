"""Resource ids are uuid5 of the resource type and key parts: computed without uuid.UUID objects, they
must stay equal to what the standard library gives, or every stored resource would be re-keyed."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from hub.mapping import patient_id, resource_id
from hub.mapping._ids import NAMESPACE


@given(st.text(max_size=20), st.lists(st.text(max_size=30), max_size=6))
def test_resource_id_is_the_standard_uuid5(resource_type: str, parts: list[str]) -> None:
    expected = uuid.uuid5(NAMESPACE, "\x1f".join((resource_type, *parts)))
    assert resource_id(resource_type, *parts) == str(expected)
    assert uuid.UUID(resource_id(resource_type, *parts)).version == 5


def test_a_known_patient_id_does_not_change() -> None:
    assert patient_id("RSUD_SEHAT", "RM001234", "RSUD_SEHAT") == str(
        uuid.uuid5(NAMESPACE, "Patient\x1fRSUD_SEHAT\x1fRSUD_SEHAT\x1fRM001234")
    )
