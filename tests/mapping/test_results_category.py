"""Observation.category and DiagnosticReport.category from what the message says: OBX-3's LOINC code
(vital signs, social history, survey, exam, imaging), else OBR-24 (diagnostic service section), else
the message type (a lab result message's results are laboratory). Synthetic messages only."""

from __future__ import annotations

from typing import Any

import pytest

from tests.builders import msh
from tests.mapping._support import by_type, map_text

CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


def _categories(res: dict[str, Any]) -> list[str]:
    return [c["code"] for cat in res.get("category", []) for c in cat["coding"] if c["system"] == CATEGORY]


def _oru(section: str, *obx: str, message: str = "ORU^R01^ORU_R01") -> str:
    fields = {1: "1", 2: "ORD-C1", 3: "FIL-C1", 4: "34565-2^Vital signs panel^LN", 7: "20261101070000+0700"}
    fields.update({24: section, 25: "F"})
    obr = "|".join(["OBR", *(fields.get(n, "") for n in range(1, 26))])
    lines = [
        msh("CAT-1", message, "RSUD_SEHAT"),
        "PID|1||MRN0401^^^RSUD_SEHAT^MR||Putri^Ayu||19950303|F",
        obr,
    ]
    return "\r".join([*lines, *(f"OBX|{n}|{o}" for n, o in enumerate(obx, 1))])


@pytest.mark.parametrize(
    ("code", "category"),
    [
        ("8867-4^Heart rate^LN", "vital-signs"),
        ("8480-6^Systolic blood pressure^LN", "vital-signs"),
        ("8462-4^Diastolic blood pressure^LN", "vital-signs"),
        ("8310-5^Body temperature^LN", "vital-signs"),
        ("8331-1^Oral temperature^LN", "vital-signs"),
        ("29463-7^Body weight^LN", "vital-signs"),
        ("8302-2^Body height^LN", "vital-signs"),
        ("39156-5^BMI^LN", "vital-signs"),
        ("9279-1^Respiratory rate^LN", "vital-signs"),
        ("2708-6^SpO2 arterial^LN", "vital-signs"),
        ("59408-5^SpO2 pulse oximetry^LN", "vital-signs"),
        ("3150-0^Inhaled oxygen concentration^LN", "vital-signs"),
        ("72166-2^Tobacco smoking status^LN", "social-history"),
        ("9269-2^Glasgow coma score total^LN", "survey"),
        ("29545-1^Physical findings^LN", "exam"),
        ("18748-4^Diagnostic imaging study^LN", "imaging"),
        ("2345-7^Glucose^LN", "laboratory"),  # not listed: a result of a lab result message
        ("GLU^Glukosa^L", "laboratory"),  # a local code likewise
        ("LOCAL^Suhu^L^8310-5^Body temperature^LN", "vital-signs"),  # LOINC as the alternate code
    ],
)
def test_category_from_the_loinc_code_else_the_message_type(code: str, category: str) -> None:
    result = map_text(_oru("", f"NM|{code}||1|||||||F"))
    (obs,) = by_type(result, "Observation")
    assert _categories(obs) == [category]


def test_the_diagnostic_service_section_decides_for_codes_not_listed() -> None:
    rad = map_text(
        _oru(
            "RAD",
            "TX|LOCAL-1^Kesan^L||Tidak tampak kelainan||||||F",
            "NM|8867-4^Heart rate^LN||72|/min|||||F",
        )
    )
    cats = {o["code"]["coding"][0]["code"]: _categories(o) for o in by_type(rad, "Observation")}
    assert cats == {"LOCAL-1": ["imaging"], "8867-4": ["vital-signs"]}  # the listed LOINC code still wins
    phy = map_text(_oru("PHY", "TX|LOCAL-2^Pemeriksaan fisik^L||Dalam batas normal||||||F"))
    assert _categories(by_type(phy, "Observation")[0]) == ["exam"]
    icu = map_text(_oru("ICU", "NM|LOCAL-3^Nadi^L||80|/min|||||F"))
    assert _categories(by_type(icu, "Observation")[0]) == ["vital-signs"]
    # a section the table does not place gives no guess from the message type
    other = map_text(_oru("OTH", "NM|LOCAL-4^Lain^L||1|||||||F"))
    assert _categories(by_type(other, "Observation")[0]) == []


def test_report_category_is_the_section_else_lab_for_a_lab_result_message() -> None:
    v2_0074 = "http://terminology.hl7.org/CodeSystem/v2-0074"
    (rad,) = by_type(map_text(_oru("RAD", "NM|2345-7^Glucose^LN||1|||||||F")), "DiagnosticReport")
    assert [c["code"] for cat in rad["category"] for c in cat["coding"] if c["system"] == v2_0074] == ["RAD"]
    (lab,) = by_type(map_text(_oru("", "NM|2345-7^Glucose^LN||1|||||||F")), "DiagnosticReport")
    assert lab["category"] == [{"coding": [{"system": v2_0074, "code": "LAB"}]}]


def test_an_adt_observation_is_categorised_by_its_code_only() -> None:
    adt = "\r".join(
        [
            msh("CAT-2", "ADT^A01^ADT_A01", "RSUD_SEHAT"),
            "PID|1||MRN0402^^^RSUD_SEHAT^MR||Putri^Ayu||19950303|F",
            "PV1|1|I|W1^101^A",
            "OBX|1|NM|29463-7^Body weight^LN||61|kg^^UCUM|||||F",
            "OBX|2|ST|LOCAL-5^Catatan^L||baik||||||F",
        ]
    )
    cats = {o["code"]["coding"][0]["code"]: _categories(o) for o in by_type(map_text(adt), "Observation")}
    assert cats == {"29463-7": ["vital-signs"], "LOCAL-5": []}
