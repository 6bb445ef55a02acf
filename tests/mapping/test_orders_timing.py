"""Orders: TQ1 timing of a ServiceRequest (TQ1[ServiceRequest]) and of a MedicationRequest's Dosage
(TQ1[MedicationRequest]), found in the order's own group, never another order's; the OBR/ORC fields of
OBR[ServiceRequest] and ORC[ServiceRequest] (priority, requested time, intent, callback phone, parent,
filler group number)."""

from __future__ import annotations

from typing import Any

import pytest

from hub.fhir.validate import validate_resource
from hub.mapping._schema import FieldMap
from hub.mapping.coverage import coverage_report
from tests.mapping._support import ROOT, by_type, map_text

IG = ROOT.parent / "shared" / "v2-to-fhir-maps"
MSH = "MSH|^~\\&|SIMRS|RSUD_SEHAT|HUB|KEMKES|20261103080000+0700||{type}|{ctrl}|P|2.5.1"
PID = "PID|1||RM009001^^^RSUD_SEHAT^MR||Wibowo^Sari||19900202|F"
PV1 = "PV1|1|O|||||||||||||||||V0901^^^RSUD_SEHAT^VN"


def seg(name: str, values: dict[int, str]) -> str:
    """A segment from {field number: value}."""
    fields = [""] * (max(values) + 1)
    for n, v in values.items():
        fields[n] = v
    return "|".join([name, *fields[1:]])


def message(type_: str, *segments: str, ctrl: str = "ORD0001") -> str:
    return "\r".join([MSH.format(type=type_, ctrl=ctrl), PID, PV1, *segments]) + "\r"


def requests(text: str) -> dict[str, dict[str, Any]]:
    result = map_text(text)
    found = {}
    for res in by_type(result, "ServiceRequest"):
        assert validate_resource(res) == [], res
        placer = next(i["value"] for i in res["identifier"] if i["type"]["coding"][0]["code"] == "PLAC")
        found[placer] = res
    return found


ORM_TQ1 = message(
    "ORM^O01^ORM_O01",
    seg(
        "ORC",
        {
            1: "NW",
            2: "PO-7001^SIMRS",
            9: "20261103080000",
            12: "67890^Pratama^Andi^^^dr.",
            14: "^WPN^PH^^62^21^5550001",
            38: "FG-01^LAB",
        },
    ),
    "TQ1|1|2^{spec}&specimen&UCUM|Q8H^Every 8 hours|0800~1600||2^d|20261103090000||S^Stat^HL70485||"
    "Puasa dulu||30^min|6",
    seg(
        "OBR",
        {
            1: "1",
            2: "PO-7001^SIMRS",
            4: "2345-7^Glucose^LN",
            5: "R",
            6: "20261103083000",
            11: "G",
            29: "PARENT-1&SIMRS^FILL-1&LAB",
        },
    ),
    "ORC|NW|PO-7002^SIMRS",
    seg(
        "OBR",
        {
            1: "2",
            2: "PO-7002^SIMRS",
            4: "718-7^Hemoglobin^LN",
            5: "A",
            6: "20261103083000",
            17: "^WPN^PH^^62^21^5550002",
        },
    ),
)


def test_an_orders_tq1_after_its_orc_is_its_occurrence_timing() -> None:
    sr = requests(ORM_TQ1)["PO-7001"]
    timing = sr["occurrenceTiming"]
    assert timing["code"]["coding"][0]["code"] == "Q8H"  # TQ1-3
    repeat = timing["repeat"]
    assert (repeat["frequency"], repeat["period"], repeat["periodUnit"]) == (1, 8, "h")
    assert repeat["timeOfDay"] == ["08:00:00", "16:00:00"]  # TQ1-4 (TM)
    # TQ1-7 start; no TQ1-8, so the end is the start plus TQ1-6 (2 days)
    assert repeat["boundsPeriod"] == {
        "start": "2026-11-03T09:00:00+07:00",
        "end": "2026-11-05T09:00:00+07:00",
    }
    assert (repeat["duration"], repeat["durationUnit"]) == (30, "min")  # TQ1-13
    assert repeat["countMax"] == 6  # TQ1-14
    assert "occurrenceDateTime" not in sr  # one choice: the TQ1 timing replaces OBR-6
    assert sr["quantityQuantity"] == {
        "value": 2,
        "unit": "specimen",
        "system": "http://unitsofmeasure.org",
        "code": "{spec}",
    }  # TQ1-2
    assert sr["note"] == [{"text": "Puasa dulu"}]  # TQ1-11
    assert sr["priority"] == "stat"  # TQ1-9 over OBR-5 (R)


def test_an_order_without_tq1_never_takes_another_orders() -> None:
    sr = requests(ORM_TQ1)["PO-7002"]
    assert "occurrenceTiming" not in sr and "quantityQuantity" not in sr and "note" not in sr
    assert sr["occurrenceDateTime"] == "2026-11-03T08:30:00+07:00"  # OBR-6
    assert sr["priority"] == "asap"  # OBR-5 A


def test_obr_intent_callback_parent_and_filler_group() -> None:
    found = requests(ORM_TQ1)
    first, second = found["PO-7001"], found["PO-7002"]
    assert first["intent"] == "reflex-order"  # OBR-11 G
    assert second["intent"] == "order"
    url = "http://hl7.org/fhir/StructureDefinition/servicerequest-order-callback-phone-number"
    # ORC-14 when OBR-17 is empty; OBR-17 when sent
    assert first["extension"] == [
        {"url": url, "valueContactPoint": {"system": "phone", "value": "+62 (21) 5550001", "use": "work"}}
    ]
    assert second["extension"][0]["valueContactPoint"]["value"] == "+62 (21) 5550002"
    parents = [
        (b["type"], b["identifier"]["value"], b["identifier"]["type"]["coding"][0]["code"])
        for b in first["basedOn"]
    ]
    assert parents == [("ServiceRequest", "PARENT-1", "PLAC"), ("ServiceRequest", "FILL-1", "FILL")]  # OBR-29
    fgn = [i for i in first["identifier"] if i["type"]["coding"][0]["code"] == "FGN"]
    assert [i["value"] for i in fgn] == ["FG-01"]  # ORC-38


def test_an_obrs_tq1_right_after_it_in_an_oru() -> None:
    text = message(
        "ORU^R01^ORU_R01",
        "OBR|1|PO-7101^SIMRS|LAB-7101^LAB|2345-7^Glucose^LN|||20261103083000|||||||||||||||||F",
        "TQ1|1||BID^Twice a day|||||20261104090000|R",
        "OBX|1|NM|2345-7^Glucose^LN||98|mg/dL^mg/dL^UCUM|||||F",
        "OBR|2|PO-7102^SIMRS|LAB-7102^LAB|718-7^Hemoglobin^LN|||20261103083000|||||||||||||||||F",
        "OBX|1|NM|718-7^Hemoglobin^LN||13|g/dL^g/dL^UCUM|||||F",
        ctrl="ORU7101",
    )
    result = map_text(text)
    srs = {r["identifier"][0]["value"]: r for r in by_type(result, "ServiceRequest")}
    if not srs:
        pytest.skip("ORU makes no ServiceRequest in these maps")
    first = srs["PO-7101"]
    assert first["occurrenceTiming"]["repeat"]["boundsPeriod"] == {"end": "2026-11-04T09:00:00+07:00"}
    assert first["priority"] == "routine"
    assert "occurrenceTiming" not in srs["PO-7102"]


def test_v23_orc7_timing_when_there_is_no_tq1() -> None:
    text = message(
        "ORM^O01^ORM_O01",
        "ORC|NW|PO-7201^SIMRS|||||1^QD^^20261105080000^20261107080000^R",
        "OBR|1|PO-7201^SIMRS||2345-7^Glucose^LN",
    )
    sr = requests(text)["PO-7201"]
    repeat = sr["occurrenceTiming"]["repeat"]
    assert (repeat["frequency"], repeat["periodUnit"]) == (1, "d")
    assert repeat["boundsPeriod"]["end"] == "2026-11-07T08:00:00+07:00"
    assert sr["priority"] == "routine"


def test_a_medication_orders_tq1_times_of_day_duration_and_dose() -> None:
    text = message(
        "OMP^O09^OMP_O09",
        "ORC|NW|RX-7301^SIMRS|||||||20261103080000",
        "TQ1|1|1^{tbl}&tablet&UCUM|TID^Tiga kali sehari|0700~1300~1900||5^d|20261103070000",
        "RXO|93000002^Parasetamol 500 mg tablet^KFA",
        "RXR|PO^Oral^HL70162|||SWALLOW^Swallow^L|WF^With food^L",
    )
    result = map_text(text)
    (mr,) = by_type(result, "MedicationRequest")
    assert validate_resource(mr) == []
    dosage = mr["dosageInstruction"][0]
    assert dosage["doseAndRate"] == [
        {
            "doseQuantity": {
                "value": 1,
                "unit": "tablet",
                "system": "http://unitsofmeasure.org",
                "code": "{tbl}",
            }
        }
    ]  # TQ1-2 when RXO gives no amount
    repeat = dosage["timing"]["repeat"]
    assert repeat["timeOfDay"] == ["07:00:00", "13:00:00", "19:00:00"]
    assert repeat["boundsPeriod"] == {
        "start": "2026-11-03T07:00:00+07:00",
        "end": "2026-11-08T07:00:00+07:00",
    }
    assert dosage["route"]["coding"][0]["code"] == "PO"  # RXR-1
    assert dosage["method"]["coding"][0]["code"] == "SWALLOW"  # RXR-4
    assert dosage["additionalInstruction"][0]["coding"][0]["code"] == "WF"  # RXR-5


def test_a_service_duration_without_start_is_the_bounds_duration() -> None:
    text = message(
        "ORM^O01^ORM_O01",
        "ORC|NW|PO-7401^SIMRS",
        seg("TQ1", {1: "1", 3: "QD", 6: "3^wk"}),
        "OBR|1|PO-7401^SIMRS||2345-7^Glucose^LN",
    )
    sr = requests(text)["PO-7401"]
    assert sr["occurrenceTiming"]["repeat"]["boundsDuration"] == {
        "value": 3,
        "unit": "wk",
        "system": "http://unitsofmeasure.org",
        "code": "wk",
    }


def test_reads_needs_a_function() -> None:
    with pytest.raises(ValueError, match="reads needs a function"):
        FieldMap(target="note[]", path="TQ1-11", reads=["TQ1-11"])


def test_coverage_counts_the_fields_a_function_reads() -> None:
    if not (IG / "segments").is_dir():
        pytest.skip("the IG tables are not here")
    report = coverage_report(IG, ROOT / "mappings", {"TQ1", "RXR"})
    rows = {(m.name, r.field): r for m in report.maps for r in m.rows if r.field}
    assert rows[("TQ1[ServiceRequest]", "TQ1-3")].status == "mapped"
    assert rows[("TQ1[MedicationRequest]", "TQ1-7")].status == "mapped"
    assert rows[("RXR[MedicationRequest]", "RXR-5")].status == "mapped"
    assert rows[("TQ1[ServiceRequest]", "TQ1-5")].status == "not-mapped"
