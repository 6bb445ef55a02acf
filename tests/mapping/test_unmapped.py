"""The unmapped report counts, outside the header, the non-empty fields of a segment against the fields
the maps marked used; that is exact only while the engine marks non-empty fields alone. These tests hold
it to that, on every fixture and on mangled ones, and check the report against a plain recomputation."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub import hl7
from hub.errors import MappingError
from hub.mapping import SenderContext, mappings_dir
from hub.mapping._engine import Runtime, run, unmapped_report
from hub.mapping._loader import load_maps
from tests.mapping._support import FACILITY, HL7_DIR, read

FIXTURES = {p.stem: read(p) for p in sorted(HL7_DIR.glob("*.hl7"))}
HEADERS = ("MSH", "FHS", "BHS")


def _runtime(text: str) -> Runtime | None:
    try:
        rt, _ = run(hl7.parse(text), SenderContext(facility=FACILITY), load_maps(mappings_dir()))
    except MappingError:
        return None
    return rt


def _left_by_recount(rt: Runtime) -> list[tuple[int, int]]:
    """(segment index, field) of every non-empty field no map used, set ids aside, and (index, 0) for a
    segment with no data at all: the report's content, computed the slow way."""
    out = []
    for i, seg in enumerate(rt.segments):
        start = 3 if seg.name in HEADERS else 1
        left = [
            (i, n)
            for n in range(start, len(seg.fields))
            if seg.fields[n] and n not in rt.used[i] and not (n == 1 and seg.fields[n].isdigit())
        ]
        if not left and not rt.used[i] and not any(seg.fields[start:]):
            left = [(i, 0)]
        out += left
    return out


def _check(rt: Runtime) -> None:
    for i, seg in enumerate(rt.segments):
        if seg.name not in HEADERS:
            marked_empty = [n for n in rt.used[i] if not 0 < n < len(seg.fields) or not seg.fields[n]]
            assert marked_empty == [], (seg.name, i)
    assert [(u["index"], u["field"]) for u in unmapped_report(rt)] == _left_by_recount(rt)


def test_only_non_empty_fields_are_marked_used_in_every_fixture() -> None:
    for name, text in FIXTURES.items():
        rt = _runtime(text)
        assert rt is not None, name
        _check(rt)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(FIXTURES)),
    segment_pick=st.integers(min_value=1, max_value=40),
    field_pick=st.integers(min_value=1, max_value=45),
    junk=st.sampled_from(["", '""', "1", "x", "a^b~c", "Z^^^^5", "&&", "~"]),
)
def test_the_report_stays_exact_when_fields_are_emptied_or_filled(
    name: str, segment_pick: int, field_pick: int, junk: str
) -> None:
    lines = [line for line in FIXTURES[name].split("\r") if line]
    i = segment_pick % (len(lines) - 1) + 1
    fields = lines[i].split("|")
    n = field_pick % (len(fields) + 2) + 1
    fields += [""] * (n + 1 - len(fields))
    fields[n] = junk
    lines[i] = "|".join(fields)
    rt = _runtime("\r".join(lines) + "\r")
    if rt is not None:
        _check(rt)


def test_a_bare_segment_and_a_set_id_alone() -> None:
    text = FIXTURES["oru_r01"].replace("\rPV1|", "\rZXX\rNTE|1\rPV1|", 1)
    rt = _runtime(text)
    assert rt is not None
    report = unmapped_report(rt)
    zxx = [u for u in report if u["segment"] == "ZXX"]
    assert zxx == [{"segment": "ZXX", "index": zxx[0]["index"], "field": 0, "name": "", "value": ""}]
    assert not [u for u in report if u["segment"] == "NTE" and u["index"] == zxx[0]["index"] + 1]
