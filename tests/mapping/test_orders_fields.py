"""Orders: NTE notes with author and time (NTE[ServiceRequest]), the technician, transcriptionist and
result interpreter of a report (OBR[DiagnosticReport], NDL), the order's confidentiality code
(ORC-28 → meta.security) and an encoded order's total daily dose (RXE-19)."""

from __future__ import annotations

from typing import Any

from hub.fhir.validate import validate_resource
from tests.mapping._support import map_text
from tests.mapping.test_orders_timing import PID, PV1, seg

MSH = "MSH|^~\\&|SIMRS|RSUD_SEHAT|HUB|KEMKES|20261103080000+0700||{type}|{ctrl}|P|2.5.1"


def mapped(type_: str, *segments: str, ctrl: str = "ORD0101") -> list[dict[str, Any]]:
    text = "\r".join([MSH.format(type=type_, ctrl=ctrl), PID, PV1, *segments]) + "\r"
    result = map_text(text)
    assert result.warnings == [], result.warnings
    for res in result.resources:
        assert validate_resource(res) == [], res
    return result.resources


def one(resources: list[dict[str, Any]], rtype: str) -> dict[str, Any]:
    found = [r for r in resources if r["resourceType"] == rtype]
    assert len(found) == 1, found
    return found[0]


def test_an_order_note_has_its_author_and_time() -> None:
    resources = mapped(
        "ORM^O01^ORM_O01",
        "ORC|NW|PO-8001^SIMRS",
        "OBR|1|PO-8001^SIMRS||2345-7^Glucose^LN",
        seg("NTE", {1: "1", 3: "Pasien puasa~sejak malam", 5: "55501^Lestari^Dewi", 6: "20261103074500"}),
        "NTE|2||Tanpa penulis",
    )
    sr = one(resources, "ServiceRequest")
    first, second = sr["note"]
    assert first["text"] == "Pasien puasa\nsejak malam"
    assert first["time"] == "2026-11-03T07:45:00+07:00"
    author = first["authorReference"]["reference"]
    practitioner = next(r for r in resources if f"{r['resourceType']}/{r['id']}" == author)
    assert practitioner["name"][0]["family"] == "Lestari"
    assert second == {"text": "Tanpa penulis"}


def test_report_interpreter_technician_and_transcriptionist() -> None:
    resources = mapped(
        "ORU^R01^ORU_R01",
        seg(
            "OBR",
            {1: "1", 2: "PO-8101^SIMRS", 3: "LAB-8101^LAB", 4: "2345-7^Glucose^LN", 7: "20261103083000",
             25: "F", 32: "70001&Hakim&Lukman&&&dr.&Sp.PK", 34: "70002&Sari&Wulan", 35: "70003^Putra^Bima"},
        ),
        "OBX|1|NM|2345-7^Glucose^LN||98|mg/dL^mg/dL^UCUM|||||F",
    )  # fmt: skip
    report = one(resources, "DiagnosticReport")
    by_ref = {f"{r['resourceType']}/{r['id']}": r for r in resources}
    interpreter = by_ref[report["resultsInterpreter"][0]["reference"]]
    assert interpreter["name"][0]["family"] == "Hakim"  # CNN subcomponents, not the first only
    assert interpreter["identifier"][0]["value"] == "70001"
    functions = {}
    for performer in report["performer"]:
        ext = performer["extension"][0]
        assert ext["url"] == "http://hl7.org/fhir/StructureDefinition/event-performerFunction"
        code = ext["valueCodeableConcept"]["coding"][0]["code"]
        functions[code] = by_ref[performer["reference"]]["name"][0]["family"]
    # OBR-35 sent XCN-style (components, not subcomponents) is read as an XCN
    assert functions == {"SPRF": "Sari", "TRANS": "Putra"}


def test_orc28_is_the_security_label_of_the_order() -> None:
    resources = mapped(
        "ORM^O01^ORM_O01",
        seg("ORC", {1: "NW", 2: "PO-8201^SIMRS", 28: "HIV^HIV(+) patient^HL70177"}),
        "OBR|1|PO-8201^SIMRS||2345-7^Glucose^LN",
    )
    sr = one(resources, "ServiceRequest")
    assert sr["meta"]["security"] == [
        {
            "system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
            "code": "HIV",
            "display": "HIV related",
        }
    ]


def test_rxe_total_daily_dose_and_orc28() -> None:
    resources = mapped(
        "RDE^O11^RDE_O11",
        seg("ORC", {1: "NW", 2: "RX-8301^SIMRS", 28: "V^Very restricted^HL70177"}),
        seg(
            "RXE",
            {1: "^BID", 2: "93000002^Parasetamol 500 mg tablet^KFA", 3: "500", 5: "mg^milligram^UCUM",
             19: "3000^mg&milligram&UCUM"},
        ),
    )  # fmt: skip
    mr = one(resources, "MedicationRequest")
    assert mr["dosageInstruction"][0]["maxDosePerPeriod"] == {
        "numerator": {
            "value": 3000,
            "unit": "milligram",
            "system": "http://unitsofmeasure.org",
            "code": "mg",
        },
        "denominator": {"value": 1, "unit": "d", "system": "http://unitsofmeasure.org", "code": "d"},
    }
    assert mr["meta"]["security"][0]["code"] == "V"


def test_an_obrs_own_numbers_under_a_shared_orc_and_the_group_number() -> None:
    resources = mapped(
        "ORU^R01^ORU_R01",
        "ORC|RE|FORM-1^SIMRS|FILL-1^LAB|GRP-1^SIMRS",
        "OBR|1|FORM-1^SIMRS|FILL-1^LAB|2345-7^Glucose^LN|||20261103083000|||||||||||||||||F",
        "OBX|1|NM|2345-7^Glucose^LN||98|mg/dL^mg/dL^UCUM|||||F",
        "OBR|2|FORM-2^SIMRS|FILL-2^LAB|718-7^Hemoglobin^LN|||20261103083000|||||||||||||||||F",
        "OBX|1|NM|718-7^Hemoglobin^LN||13|g/dL^g/dL^UCUM|||||F",
        ctrl="ORD0105",
    )

    def numbers(res: dict[str, Any]) -> list[tuple[str, str]]:
        return [(i["type"]["coding"][0]["code"], i["value"]) for i in res["identifier"]]

    srs = sorted(
        (r for r in resources if r["resourceType"] == "ServiceRequest"),
        key=lambda r: r["code"]["coding"][0]["code"],
    )
    reports = sorted(
        (r for r in resources if r["resourceType"] == "DiagnosticReport"),
        key=lambda r: r["code"]["coding"][0]["code"],
    )
    # the same number in ORC and OBR is one identifier
    assert numbers(srs[0]) == [("PLAC", "FORM-1"), ("FILL", "FILL-1"), ("PGN", "GRP-1")]
    # an OBR's own numbers beside the shared ORC's
    assert numbers(srs[1]) == [
        ("PLAC", "FORM-1"),
        ("PLAC", "FORM-2"),
        ("FILL", "FILL-1"),
        ("FILL", "FILL-2"),
        ("PGN", "GRP-1"),
    ]
    assert srs[1]["requisition"]["value"] == "GRP-1"
    assert ("FILL", "FILL-2") in numbers(reports[1]) and ("PLAC", "FORM-2") in numbers(reports[1])
