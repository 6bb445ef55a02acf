"""DG1[Condition] and PR1[Procedure] rows of the V2-to-FHIR IG: DG1-21 delete → entered-in-error,
DG1-22 parent diagnosis → condition-dueTo; PR1-4 text, PR1-6 category, PR1-5 + PR1-7 minutes as a
period, PR1-8/-11/-12 performers with the IG's functions, PR1-15 reason, PR1-23 location, PR1-25 partOf."""

from __future__ import annotations

from typing import Any

from hub.fhir.validate import validate_resource
from tests.mapping._support import by_type, map_text

PID = "PID|1||MRN0001^^^RSUD_SEHAT^MR||Santoso^Budi||19800101|M"
PV1 = "PV1|1|I|W1^01^A||||||||||||||||V0001^^^RSUD_SEHAT^VN"


def _seg(name: str, **fields: str) -> str:
    values = [""] * 27
    values[0], values[1] = name, "1"
    for key, value in fields.items():
        values[int(key[1:])] = value
    return "|".join(values).rstrip("|")


def _message(*segments: str) -> str:
    head = "MSH|^~\\&|SIMRS|RSUD_SEHAT|HUB|KEMKES|20261101083000+0700||ADT^A08^ADT_A01|DGPR|P|2.5.1"
    return "\r".join([head, "EVN||20261101083000+0700", PID, PV1, *segments]) + "\r"


def _by_id(result: Any, kind: str) -> dict[str, dict[str, Any]]:
    return {f"{kind}/{r['id']}": r for r in by_type(result, kind)}


def test_dg1_parent_diagnosis_and_delete() -> None:
    parent = _seg("DG1", f3="E11.9^Diabetes melitus tipe 2^I10", f20="DX-1^SIMRS")
    child = _seg("DG1", f1="2", f3="E11.2^Nefropati diabetik^I10", f20="DX-2^SIMRS", f22="DX-1^SIMRS")
    deleted = _seg("DG1", f1="3", f3="J18.9^Pneumonia^I10", f20="DX-3^SIMRS", f21="D")
    result = map_text(_message(parent, child, deleted))
    by_code = {c["code"]["coding"][0]["code"]: c for c in by_type(result, "Condition")}
    assert by_code["E11.2"]["extension"] == [
        {
            "url": "http://hl7.org/fhir/StructureDefinition/condition-dueTo",
            "valueReference": {"reference": f"Condition/{by_code['E11.9']['id']}"},
        }
    ]
    assert by_code["J18.9"]["verificationStatus"]["coding"][0]["code"] == "entered-in-error"
    assert "verificationStatus" not in by_code["E11.9"]
    assert "extension" not in by_code["E11.9"]


def test_dg1_action_add_or_update_keeps_the_condition_as_it_is() -> None:
    result = map_text(_message(_seg("DG1", f3="E11.9^Diabetes^I10", f21="A")))
    assert "verificationStatus" not in by_type(result, "Condition")[0]


def test_pr1_period_performers_reason_location_and_part_of() -> None:
    main = _seg(
        "PR1",
        f3="47.01^Laparoscopic appendectomy^I9CP",
        f6="P^Procedure for treatment^HL70230",
        f5="20261101100000",
        f7="45",
        f8="111^Anestesi^Ani^^^dr.",
        f11="222^Bedah^Bima^^^dr.",
        f12="333^Praktik^Putri^^^dr.",
        f15="K35.8^Apendisitis akut^I10",
        f19="PRC-1^SIMRS",
        f23="OK1^01^A^RSUD_SEHAT",
    )
    part = _seg(
        "PR1", f1="2", f3="99.04^Transfusion^I9CP", f5="20261101101500", f19="PRC-2^SIMRS", f25="PRC-1^SIMRS"
    )
    result = map_text(_message(main, part))
    procs = {p["identifier"][0]["value"]: p for p in by_type(result, "Procedure")}
    surgery = procs["PRC-1"]
    assert surgery["performedPeriod"] == {
        "start": "2026-11-01T10:00:00+07:00",
        "end": "2026-11-01T10:45:00+07:00",
    }
    assert surgery["category"]["coding"][0]["code"] == "P"
    functions = [(p.get("function") or {}).get("coding", [{}])[0].get("code") for p in surgery["performer"]]
    assert sorted(functions, key=str) == sorted(["88189002", "304292004", None], key=str)
    assert surgery["reasonCode"][0]["coding"][0]["code"] == "K35.8"
    assert surgery["location"]["reference"] in _by_id(result, "Location")
    assert procs["PRC-2"]["partOf"] == [{"reference": f"Procedure/{surgery['id']}"}]
    assert procs["PRC-2"]["performedDateTime"] == "2026-11-01T10:15:00+07:00"


def test_pr1_text_when_the_code_has_no_original_text() -> None:
    result = map_text(_message(_seg("PR1", f3="47.01^^I9CP", f4="Apendektomi", f5="20261101")))
    (proc,) = by_type(result, "Procedure")
    assert proc["code"]["text"] == "Apendektomi"
    assert proc["performedDateTime"] == "2026-11-01"  # a date only: no period from PR1-7


def test_every_resource_is_valid_fhir_r4() -> None:
    msg = _message(
        _seg("DG1", f3="E11.9^Diabetes^I10", f20="DX-1^SIMRS", f21="D"),
        _seg("DG1", f1="2", f3="E11.2^Nefropati^I10", f22="DX-1^SIMRS"),
        _seg("PR1", f3="47.01^Apendektomi^I9CP", f5="20261101100000", f7="30", f8="111^Ani", f23="OK1^01"),
    )
    result = map_text(msg)
    assert [p for r in result.resources for p in validate_resource(r)] == []
