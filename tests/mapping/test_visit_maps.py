"""The visit maps (V2-to-FHIR IG PV1[Encounter], PV2[Encounter], DG1[Encounter], DG1[EpisodeOfCare],
EVN[Provenance]): the elements each field becomes, on synthetic messages."""

from __future__ import annotations

from typing import Any

from hub.fhir.validate import validate_resource
from hub.mapping.coverage import coverage_report
from tests.mapping._support import HL7_DIR, ROOT, by_type, map_file, map_text

IG = ROOT.parent / "shared" / "v2-to-fhir-maps"
MSH = "MSH|^~\\&|SIMRS|RSUD_SEHAT|HUB|KEMKES|20261104101500+0700||ADT^{t}^{s}|VIS{t}001|P|2.5.1"
PID = "PID|1||RM550001^^^RSUD_SEHAT^MR||Pertiwi^Ayu||19910304|F"


def _seg(name: str, values: dict[int, str]) -> str:
    fields = [""] * (max(values) + 1)
    fields[0] = name
    for n, v in values.items():
        fields[n] = v
    return "|".join(fields)


def _message(trigger: str, structure: str, *segments: str) -> str:
    return (
        "\r".join([MSH.format(t=trigger, s=structure), f"EVN|{trigger}|20261104101500", PID, *segments])
        + "\r"
    )


def _one(result: Any, rtype: str) -> dict[str, Any]:
    (found,) = by_type(result, rtype)
    return found


def _valid(result: Any) -> None:
    assert [p for r in result.resources for p in validate_resource(r)] == []


def test_visit_fixture_pv1_pv2_dg1() -> None:
    result = map_file(HL7_DIR / "adt_a01_visit.hl7")
    _valid(result)
    enc = _one(result, "Encounter")
    hosp = enc["hospitalization"]
    assert hosp["specialArrangement"][0]["coding"][0]["code"] == "A3"  # PV1-15
    assert hosp["specialCourtesy"][0]["coding"][0]["code"] == "VIP"  # PV1-16
    assert hosp["dietPreference"][0]["coding"][0]["system"].endswith("v2-0114")  # PV1-38
    statuses = [loc["status"] for loc in enc["location"]]
    assert statuses == ["active", "reserved", "planned"]  # PV1-3, PV1-42 pending, PV2-1 prior pending
    codes = [p["type"][0]["coding"][0]["code"] for p in enc["participant"]]
    assert codes == ["ATND", "REF", "CON", "ADM", "PART"]  # PV2-13 is the PV1-8 referrer again
    assert enc["reasonCode"][0]["coding"][0]["code"] == "R50.9"  # PV2-3
    assert enc["priority"]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActPriority",
        "code": "UR",
        "display": "urgent",
    }  # PV2-25
    assert enc["length"] == {"value": 5, "unit": "d", "system": "http://unitsofmeasure.org", "code": "d"}
    urls = {e["url"]: e for e in enc["extension"]}
    assert urls["http://hl7.org/fhir/5.0/StructureDefinition/extension-Encounter.plannedStartDate"][
        "valueDateTime"
    ] == ("2026-11-03T10:00:00+07:00")
    assert "http://hl7.org/fhir/5.0/StructureDefinition/extension-Encounter.plannedEndDate" in urls
    arrival = urls["http://hl7.org/fhir/StructureDefinition/encounter-modeOfArrival"]["valueCoding"]
    assert arrival["code"] == "A" and arrival["system"].endswith("v2-0430")  # PV2-38
    assert "&amp;" in enc["text"]["div"] and "&lt;3" in enc["text"]["div"]  # PV2-12, escaped
    conditions = by_type(result, "Condition")
    assert [d["condition"]["reference"] for d in enc["diagnosis"]] == [
        f"Condition/{c['id']}" for c in conditions
    ]
    assert [d["rank"] for d in enc["diagnosis"]] == [1, 2]  # DG1-15
    assert enc["diagnosis"][0]["use"]["coding"][0]["code"] == "AD"  # DG1-6 A → admission diagnosis
    assert enc["diagnosis"][1]["use"]["coding"] == [
        {"system": "http://terminology.hl7.org/CodeSystem/v2-0052", "code": "W"}
    ]
    episode = _one(result, "EpisodeOfCare")
    assert enc["episodeOfCare"] == [{"reference": f"EpisodeOfCare/{episode['id']}"}]
    assert episode["identifier"][0]["value"] == "EP2026-0042"  # PV1-54
    assert episode["extension"][0]["valueString"] == "Episode demam tifoid"  # PV1-53
    assert episode["patient"] == enc["subject"] and episode["status"] == "active"
    assert [d["role"]["coding"][0]["code"] for d in episode["diagnosis"]] == ["AD", "W"]
    provenance = _one(result, "Provenance")
    location = next(
        r for r in by_type(result, "Location") if provenance["location"]["reference"].endswith(r["id"])
    )
    assert location["name"] == "RSUD_SEHAT"  # EVN-7
    assert location["identifier"] == [{"system": "urn:ietf:rfc:3986", "value": "urn:oid:2.16.360.1.1"}]
    assert [u for u in result.unmapped if u["segment"] in ("PV1", "PV2", "DG1", "EVN")] == [
        {"segment": "PV2", "index": 4, "field": 22, "name": "Visit Protection Indicator", "value": "N"}
    ]


def test_discharge_destination_and_preadmit_location() -> None:
    pv1 = _seg(
        "PV1",
        {1: "1", 2: "P", 3: "W2^201^^RSUD_SEHAT", 19: "V5501^^^RSUD_SEHAT", 37: "HOM&Rumah&HL70113^20261110"},
    )
    result = map_text(_message("A05", "ADT_A05", pv1))
    _valid(result)
    enc = _one(result, "Encounter")
    assert enc["location"][0]["status"] == "planned"  # PV1-3 of a pre-admit (class P)
    dest = enc["hospitalization"]["destination"]["reference"]
    (place,) = [r for r in by_type(result, "Location") if dest == f"Location/{r['id']}"]
    assert place["name"] == "Rumah" and place["mode"] == "kind"
    assert place["type"][0]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/v2-0113",
        "code": "HOM",
        "display": "Rumah",
    }


def test_no_episode_without_pv1_54_and_no_diagnosis_without_condition() -> None:
    pv1 = _seg("PV1", {1: "1", 2: "I", 3: "W2^201^^RSUD_SEHAT", 19: "V5502^^^RSUD_SEHAT"})
    dg1_coded = _seg("DG1", {1: "1", 3: "I10^Hipertensi^I10", 6: "F", 15: "0"})
    dg1_empty = _seg("DG1", {1: "2", 6: "A", 15: "2"})  # no code, no description: no Condition
    result = map_text(_message("A08", "ADT_A01", pv1, dg1_coded, dg1_empty))
    _valid(result)
    assert by_type(result, "EpisodeOfCare") == []
    enc = _one(result, "Encounter")
    assert "episodeOfCare" not in enc
    (condition,) = by_type(result, "Condition")
    # Only the coded DG1 is a diagnosis; priority 0 is no rank (a positiveInt).
    assert enc["diagnosis"] == [
        {
            "condition": {"reference": f"Condition/{condition['id']}"},
            "use": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0052", "code": "F"}]},
        }
    ]
    assert not any("merge into" in w for w in result.warnings)


def test_pv2_without_pv1_encounter_adds_nothing() -> None:
    # ADT^A28 (person information): its PV1 only points at an Encounter, so the PV2 has none to go to.
    pv1 = _seg("PV1", {1: "1", 2: "I", 19: "V5503^^^RSUD_SEHAT"})
    pv2 = _seg("PV2", {3: "R51^Nyeri kepala^I10"})
    result = map_text(_message("A28", "ADT_A05", pv1, pv2))
    assert by_type(result, "Encounter") == []


def test_visit_segments_have_no_missing_ig_rows() -> None:
    report = coverage_report(IG, ROOT / "mappings", {"PV1", "PV2", "DG1", "EVN"})
    missing = {
        (m.name, r.field)
        for m in report.maps
        if m.name != "DG1[Condition]"  # the Condition's own rows are the diagnosis maps' (DG1.Condition)
        for r in m.rows
        if r.status == "missing"
    }
    assert missing == set()
    rows = {(m.name, r.field, r.attribute): r.status for m in report.maps for r in m.rows}
    assert rows[("PV2[Encounter]", "PV2-25", "priority")] == "mapped"
    assert rows[("DG1[Encounter]", "DG1-15", "diagnosis.rank")] == "mapped"
    assert rows[("DG1[EpisodeOfCare]", "DG1-6", "diagnosis.role")] == "mapped"
    assert rows[("PV1[Encounter]", "PV1-54", "episodeOfCare(EpisodeOfCare[1].identifier)")] == "mapped"
    assert rows[("EVN[Provenance]", "EVN-7", "location(Location)")] == "mapped"
