"""SIU: each participant's period (start, else the appointment start plus the offset; end, the start
plus the duration) and the order the appointment is for (SCH-26/SCH-27 → basedOn by identifier)
(V2-to-FHIR IG SCH/AIG/AIL/AIP[Appointment]). Synthetic messages only."""

from __future__ import annotations

from typing import Any

from hub.fhir.validate import validate_resource
from tests.builders import msh
from tests.mapping._support import by_type, map_text


def _seg(name: str, fields: dict[int, str]) -> str:
    return "|".join([name, *(fields.get(n, "") for n in range(1, max(fields) + 1))])


SIU = "\r".join(
    [
        msh("SIU-P1", "SIU^S12^SIU_S12"),
        _seg(
            "SCH",
            {
                1: "APT-P1^SIMRS",
                2: "APT-P1-F^SIMRS",
                7: "KONTROL^Kontrol^L",
                9: "60",
                10: "MIN",
                11: "^^60^20261115100000+0700^20261115110000+0700",
                16: "55501^Lestari^Dewi",
                25: "Booked",
                26: "ORD-77^SIMRS",
                27: "LAB-77^LIS",
            },
        ),
        "PID|1||MRN0601^^^RSUD_SEHAT^MR||Sari^Indah||19920202|F",
        "RGS|1",
        _seg(
            "AIG",
            {
                1: "1",
                3: "USG-01^Mesin USG 1^L",
                4: "EQP^Equipment^L",
                8: "20261115101500+0700",
                11: "30",
                12: "MIN",
            },
        ),
        _seg(
            "AIL",
            {1: "1", 3: "POLI-ANAK^R2^^RSUD_SEHAT", 4: "CLINIC^Clinic^L", 7: "10", 8: "MIN", 9: "1", 10: "H"},
        ),
        _seg(
            "AIP",
            {
                1: "1",
                3: "12345^Wijaya^Siti",
                4: "AT^Attending^HL70443",
                6: "20261115100000+0700",
                9: "45",
                12: "Booked",
            },
        ),
    ]
)


def _participants(appt: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for p in appt["participant"]:
        key = p.get("type", [{}])[0].get("coding", [{}])[0].get("code", "patient")
        out[key] = p
    return out


def test_participant_periods_from_start_offset_and_duration() -> None:
    result = map_text(SIU)
    (appt,) = by_type(result, "Appointment")
    parts = _participants(appt)
    # AIG: its own start plus 30 minutes
    assert parts["EQP"]["period"] == {
        "start": "2026-11-15T10:15:00+07:00",
        "end": "2026-11-15T10:45:00+07:00",
    }
    # AIL: no start: the appointment start plus the 10-minute offset; the end one hour later
    assert parts["CLINIC"]["period"] == {
        "start": "2026-11-15T10:10:00+07:00",
        "end": "2026-11-15T11:10:00+07:00",
    }
    # AIP: duration without units is minutes
    assert parts["AT"]["period"] == {"start": "2026-11-15T10:00:00+07:00", "end": "2026-11-15T10:45:00+07:00"}
    assert all(validate_resource(r) == [] for r in result.resources)


def test_no_start_and_no_offset_gives_no_period() -> None:
    result = map_text(SIU.replace("|10|MIN|1|H", "|||1|H"))
    (appt,) = by_type(result, "Appointment")
    assert "period" not in _participants(appt)["CLINIC"]


def test_placer_and_filler_order_numbers_are_based_on_references_by_identifier() -> None:
    (appt,) = by_type(map_text(SIU), "Appointment")
    based = appt["basedOn"]
    assert [b["type"] for b in based] == ["ServiceRequest", "ServiceRequest"]
    assert [b["identifier"]["value"] for b in based] == ["ORD-77", "LAB-77"]
    assert [b["identifier"]["type"]["coding"][0]["code"] for b in based] == ["PLAC", "FILL"]
