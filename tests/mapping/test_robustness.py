"""Real feeds send anything in any field: a mangled field never crashes the engine. Each message is
either mapped (to resources that are still valid FHIR R4) or refused with a MappingError."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hub.errors import MappingError
from hub.fhir.validate import validate_resource
from tests.mapping._support import HL7_DIR, map_text, read

FIXTURES = {p.stem: read(p) for p in sorted(HL7_DIR.glob("*.hl7"))}
JUNK = st.text(alphabet="AZaz09 .-+:/\\^&~\"'ÄéFSTRE#", max_size=25)


# The same 150 cases on every run (a red CI run is one anyone can reproduce); HUB_FUZZ_EXAMPLES=5000
# with HUB_FUZZ_RANDOM=1 searches further (`make bench` territory).
@settings(
    max_examples=int(os.environ.get("HUB_FUZZ_EXAMPLES", "150")),
    derandomize=not os.environ.get("HUB_FUZZ_RANDOM"),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    name=st.sampled_from(sorted(FIXTURES)),
    segment_pick=st.integers(min_value=1, max_value=40),
    field_pick=st.integers(min_value=1, max_value=45),
    junk=JUNK,
)
@example(name="siu_s12_full", segment_pick=9, field_pick=36, junk="0")  # SCH-9 0 min: not positiveInt
def test_a_mangled_field_is_mapped_validly_or_refused(
    name: str, segment_pick: int, field_pick: int, junk: str
) -> None:
    lines = [line for line in FIXTURES[name].split("\r") if line]
    i = segment_pick % (len(lines) - 1) + 1  # never MSH: the header is intake's to refuse
    fields = lines[i].split("|")
    n = field_pick % (len(fields) + 2) + 1
    fields += [""] * (n + 1 - len(fields))
    fields[n] = junk.replace("|", "")
    lines[i] = "|".join(fields)
    try:
        result = map_text("\r".join(lines) + "\r")
    except MappingError as exc:
        assert exc.message
        return
    problems = [p for resource in result.resources for p in validate_resource(resource)]
    assert problems == [], (lines[i], problems)


def test_an_appointment_duration_beyond_any_date_leaves_the_end_out() -> None:
    """SCH-9 of 3e15 minutes (a cut the fuzz bench made, SCH-10/11 lost) once overflowed ``timedelta``
    in the appointment_end function; the end is left out and the rest maps validly."""
    lines = [line for line in FIXTURES["siu_s12"].split("\r") if line]
    lines[1] = lines[1].replace("|30|MIN|^^30^20261110090000^20261110093000", "|3020261110090000")
    result = map_text("\r".join(lines) + "\r")
    (appointment,) = [r for r in result.resources if r["resourceType"] == "Appointment"]
    assert appointment["start"] and "end" not in appointment
    assert [p for resource in result.resources for p in validate_resource(resource)] == []
