"""Datatype functions: TS/DTM/DT at every precision with any offset form, escapes round-tripping through
the tokenizer and the text datatypes, CX systems, SN/NR/CQ, ED/RP attachments."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hub.hl7 import escape
from hub.mapping._time import _TS, TimeFormatError, _check_ts, split_ts, to_date, to_datetime, to_instant
from tests.mapping._support import by_type, map_text

MSH = "MSH|^~\\&|LAB|RSUD_SEHAT|HUB|KEMKES|20261101083000+0700||ORU^R01^ORU_R01|C1|P|2.5.1\r"
PID = "PID|1||RM1^^^RSUD_SEHAT^MR\r"
OBR = "OBR|1||F1^LIS|X^Panel^L\r"


def obx(vtype: str, value: str, units: str = "") -> dict[str, object]:
    text = MSH + PID + OBR + f"OBX|1|{vtype}|C1^Code^L||{value}|{units}|||||F\r"
    (observation,) = by_type(map_text(text), "Observation")
    return observation


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026", "2026"),
        ("202611", "2026-11"),
        ("20261101", "2026-11-01"),
        ("2026110108", "2026-11-01T08:00:00+07:00"),
        ("202611010830", "2026-11-01T08:30:00+07:00"),
        ("20261101083015", "2026-11-01T08:30:15+07:00"),
        ("20261101083015.1234", "2026-11-01T08:30:15.1234+07:00"),
        ("20261101083015-0500", "2026-11-01T08:30:15-05:00"),
        ("20261101083015+0215", "2026-11-01T08:30:15+02:15"),
        ("20261101083015+00", "2026-11-01T08:30:15+00:00"),
        ("202611010830+0530", "2026-11-01T08:30:00+05:30"),
        ("20261101-0500", "2026-11-01"),  # a date carries no offset in FHIR
        ("2026-11-01T08:30:15Z", "2026-11-01T08:30:15Z"),
    ],
)
def test_ts_precisions_and_offsets(value: str, expected: str) -> None:
    assert to_datetime(value, "Asia/Jakarta") == expected


def test_sender_zone_with_daylight_saving() -> None:
    assert to_datetime("20260715120000", "America/New_York") == "2026-07-15T12:00:00-04:00"
    assert to_datetime("20260115120000", "America/New_York") == "2026-01-15T12:00:00-05:00"


@pytest.mark.parametrize(
    "bad", ["", "20261301", "20260230", "2026110125", "abc", "2026110108301", "20261101083015+2500"]
)
def test_invalid_ts_is_rejected(bad: str) -> None:
    with pytest.raises(TimeFormatError):
        to_datetime(bad, "Asia/Jakarta")


def test_date_and_instant() -> None:
    assert to_date("20261101083015+0700") == "2026-11-01"
    assert to_instant("20261101", "Asia/Jakarta") == "2026-11-01T00:00:00+07:00"


@settings(deadline=None)
@given(
    moment=st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 12, 31)),
    precision=st.sampled_from([4, 6, 8, 10, 12, 14, 16]),
    offset_minutes=st.one_of(st.none(), st.integers(min_value=-12 * 60, max_value=14 * 60)),
    short_offset=st.booleans(),
)
def test_ts_round_trip_property(
    moment: datetime, precision: int, offset_minutes: int | None, short_offset: bool
) -> None:
    """Any precision and offset form maps to a FHIR value that denotes the same instant/date."""
    digits = moment.strftime("%Y%m%d%H%M%S")
    value = digits[: min(precision, 14)] + (f".{moment.microsecond // 100:04d}" if precision == 16 else "")
    if offset_minutes is not None and precision >= 10:
        sign = "+" if offset_minutes >= 0 else "-"
        hh, mm = divmod(abs(offset_minutes), 60)
        value += f"{sign}{hh:02d}" if short_offset and mm == 0 else f"{sign}{hh:02d}{mm:02d}"
    out = to_datetime(value, "Asia/Jakarta")
    if precision <= 8:
        assert (
            out
            == "-".join(p for p in (digits[:4], digits[4:6], digits[6:8]) if p)[
                : {4: 4, 6: 7, 8: 10}[precision]
            ]
        )
        return
    parsed = datetime.fromisoformat(out)
    assert parsed.tzinfo is not None
    truncated = moment.replace(
        minute=moment.minute if precision >= 12 else 0,
        second=moment.second if precision >= 14 else 0,
        microsecond=(moment.microsecond // 100) * 100 if precision == 16 else 0,
    )
    # No offset sent: the sender's zone at that moment (Jakarta was +07:30 in the 1960s, for instance).
    local = ZoneInfo("Asia/Jakarta").utcoffset(
        truncated.replace(minute=0 if precision < 12 else truncated.minute)
    )
    expected_offset = timedelta(minutes=offset_minutes) if offset_minutes is not None else local
    assert parsed.utcoffset() == expected_offset
    assert parsed.replace(tzinfo=None) == truncated
    assert parsed.astimezone(UTC) == truncated.replace(tzinfo=timezone(expected_offset)).astimezone(UTC)


@settings(deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=60))
def test_escaped_text_round_trips_through_an_st_value(text: str) -> None:
    """Delimiters and escape characters escaped by a sender come back as the original text."""
    if not text.strip():
        return
    observation = obx("ST", escape(text))
    assert observation["valueString"] == text.rstrip()


@settings(deadline=None)
@given(st.lists(st.text(alphabet="abc xyz|^&~\\", min_size=1, max_size=10), min_size=1, max_size=4))
def test_ft_lines_and_line_breaks(lines: list[str]) -> None:
    """FT: ``\\.br\\`` and repetitions are line breaks, applied after splitting."""
    if not "".join(lines).strip():
        return  # nothing but spaces: no value at all
    value = "\\.br\\".join(escape(line) for line in lines)
    observation = obx("FT", value)
    assert observation["valueString"] == "\n".join(line.rstrip() for line in lines).strip("\n")


def test_sn_nm_and_units() -> None:
    assert obx("SN", ">=^5", "mmol/L^^UCUM")["valueQuantity"] == {
        "value": 5,
        "comparator": ">=",
        "unit": "mmol/L",
        "system": "http://unitsofmeasure.org",
        "code": "mmol/L",
    }
    assert obx("SN", "^2^+^")["valueRange"] == {"low": {"value": 2}}
    assert obx("NM", "-.5", "x^local unit^L")["valueQuantity"] == {"value": -0.5, "unit": "local unit"}
    assert obx("NM", "abc")["valueString"] == "abc"  # not a number: kept as text, never dropped
    assert obx("NR", "3.5^7")["valueRange"] == {"low": {"value": 3.5}, "high": {"value": 7}}
    # Components beyond SN's four are ignored (they used to fail the whole message).
    assert obx("SN", "<^5^^^junk")["valueQuantity"] == {"value": 5, "comparator": "<"}
    # Numbers in every shape NM allows, and what is not one stays text.
    assert [obx("NM", v)["valueQuantity"]["value"] for v in ("7", "+7", "007", "7.", "7.50", ".5")] == [
        7, 7, 7, 7.0, 7.5, 0.5,
    ]  # fmt: skip
    assert [obx("NM", v).get("valueString") for v in ("7.5.1", "1e3", "٣")] == ["7.5.1", "1e3", None]


def test_ed_and_rp_attachments() -> None:
    payload = base64.b64encode(b"%PDF-1.4 synthetic").decode()
    att = obx("ED", f"^AP^PDF^Base64^{payload}")["valueAttachment"] if False else None
    assert att is None  # R4 Observation has no valueAttachment: ED goes to DocumentReference (MDM)
    text = (
        MSH.replace("ORU^R01^ORU_R01", "MDM^T02^MDM_T02")
        + PID
        + "TXA|1|DS|TX|20261101||||||||DOC1^SIMRS||||||AU\r"
        + f"OBX|1|ED|PDF^pdf||^AP^PDF^Base64^{payload}||||||F\r"
        + "OBX|2|RP|IMG^image||img/123.jpg^&https://pacs.example.id/wado^IM^JPEG||||||F\r"
        + "OBX|3|ED|HEX^hex||^TEXT^^Hex^48656C6C6F||||||F\r"
    )
    (doc,) = by_type(map_text(text), "DocumentReference")
    attachments = [c["attachment"] for c in doc["content"]]
    assert attachments[0] == {"contentType": "application/pdf", "data": payload}
    assert attachments[1] == {"contentType": "image/jpeg", "url": "https://pacs.example.id/wado/img/123.jpg"}
    assert base64.b64decode(attachments[2]["data"]) == b"Hello"


def test_cx_system_by_authority_type_and_oid() -> None:
    text = (
        MSH.replace("ORU^R01^ORU_R01", "ADT^A28^ADT_A05")
        + "PID|1||A1^^^&2.16.840.1.113883.19.5&ISO^MR~9999^^^BPJS~3171000000000009^^^DISDUKCAPIL^NNIDN~L1^^^^PI\r"
    )
    (patient,) = by_type(map_text(text), "Patient")
    systems = [i["system"] for i in patient["identifier"]]
    assert systems == [
        "urn:oid:2.16.840.1.113883.19.5",
        "https://fhir.kemkes.go.id/id/bpjs",
        "https://fhir.kemkes.go.id/id/nik",
        "urn:hub:id:RSUD_SEHAT",
    ]


def test_xpn_xad_xtn() -> None:
    text = (
        MSH.replace("ORU^R01^ORU_R01", "ADT^A28^ADT_A05")
        + "PID|1||A1^^^RS^MR||Putri^Ayu^Kartika^^dr.^Sp.A^L~Ayu^^^^^^N||20000101|F|||"
        + "Jl. Anggrek 3^Blok C^Surabaya^Jawa Timur^60111^ID^O^^Kota Surabaya||"
        + "^PRN^PH^^^31^7654321^12~^NET^Internet^ayu@example.id\r"
    )
    (patient,) = by_type(map_text(text), "Patient")
    assert patient["name"] == [
        {
            "family": "Putri",
            "given": ["Ayu", "Kartika"],
            "prefix": ["dr."],
            "suffix": ["Sp.A"],
            "use": "official",
        },
        {"family": "Ayu", "use": "nickname"},
    ]
    assert patient["address"] == [
        {
            "line": ["Jl. Anggrek 3", "Blok C"],
            "city": "Surabaya",
            "state": "Jawa Timur",
            "postalCode": "60111",
            "country": "ID",
            "use": "work",
            "district": "Kota Surabaya",
        }
    ]
    assert patient["telecom"] == [
        {"system": "phone", "value": "(31) 7654321 ext. 12", "use": "home"},
        {"system": "email", "value": "ayu@example.id", "use": "home"},
    ]


def test_oru_ed_result_becomes_a_document_the_observation_derives_from() -> None:
    payload = base64.b64encode(b"%PDF-1.4 synthetic report").decode()
    text = MSH + PID + OBR + f"OBX|1|ED|11502-2^Laboratory report^LN||^AP^PDF^Base64^{payload}||||||F\r"
    result = map_text(text)
    (observation,) = by_type(result, "Observation")
    (document,) = by_type(result, "DocumentReference")
    assert "valueAttachment" not in observation  # not an R4 element
    assert observation["derivedFrom"] == [{"reference": f"DocumentReference/{document['id']}"}]
    assert document["content"] == [{"attachment": {"contentType": "application/pdf", "data": payload}}]
    assert document["subject"] == observation["subject"]
    again = by_type(map_text(text.replace("|C1|", "|C2|")), "DocumentReference")[0]
    assert again["id"] == document["id"]  # keyed like its Observation, not by the message


def _split_by_pattern(value: str) -> tuple[str, ...]:
    """split_ts without its fast path: the regular expression alone."""
    m = _TS.match(value)
    if m is None:
        raise TimeFormatError(value)
    parts: tuple[str, ...] = m.groups("")
    _check_ts(value, parts)
    return parts


@settings(max_examples=400)
@given(
    st.text(alphabet="0123456789", min_size=0, max_size=16),
    st.sampled_from(["", "+0700", "-0500", "+07", "+07:00", "Z", "+9999", "-00ab", "+0٣00", " "]),
)
def test_the_plain_ts_fast_path_agrees_with_the_pattern(digits: str, offset: str) -> None:
    value = digits + offset
    try:
        expected: tuple[str, ...] | str = _split_by_pattern(value)
    except TimeFormatError:
        expected = "error"
    try:
        actual: tuple[str, ...] | str = split_ts(value)
    except TimeFormatError:
        actual = "error"
    assert actual == expected


@pytest.mark.parametrize(
    ("sex", "gender"),
    [
        ("M", "male"),
        ("F", "female"),
        ("L", "male"),
        ("P", "female"),
        ("1", "male"),
        ("2", "female"),
        ("0", "unknown"),
        ("U", "unknown"),
        ("X", "unknown"),
    ],
)
def test_administrative_sex_codes_real_feeds_send(sex: str, gender: str) -> None:
    text = (
        MSH.replace("ORU^R01^ORU_R01", "ADT^A28^ADT_A05") + f"PID|1||A1^^^RS^MR||Putri^Ayu||20000101|{sex}\r"
    )
    (patient,) = by_type(map_text(text), "Patient")
    assert patient["gender"] == gender
