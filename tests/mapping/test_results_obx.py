"""OBX[Observation] fields beyond the value: reference range bounds, nature of abnormal test, analysis
time, producer, performing organization with its address and medical director, equipment, observation
type and sub-type, related specimens (V2-to-FHIR IG OBX[Observation]). Synthetic messages only."""

from __future__ import annotations

from typing import Any

from hub.fhir.validate import validate_resource
from tests.builders import msh
from tests.mapping._support import by_type, map_text

ANALYSIS = "http://hl7.org/fhir/StructureDefinition/observation-analysis-date-time"
NATURE = "http://hl7.org/fhir/StructureDefinition/observation-nature-of-abnormal-test"
SUBTYPE = "http://hl7.org/fhir/StructureDefinition/observation-structure-type"
R5_SPECIMEN = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Observation.specimen"


def _obx(fields: dict[int, str]) -> str:
    return "|".join(["OBX", *(fields.get(n, "") for n in range(1, max(fields) + 1))])


ORG = "Lab Sentral Sehat^^^^^LAB_SEHAT^XX^^^LS-01"
ORU = "\r".join(
    [
        msh("LAB-R1", "ORU^R01^ORU_R01", "LAB_SEHAT", version="2.8.2"),
        "PID|1||MRN0201^^^LAB_SEHAT^MR||Wati^Sri||19900214|F",
        "OBR|1|ORD-R1|FIL-R1|24323-8^Metabolic panel^LN|||20261101070000+0700|||||||||||||||20261101100000+0700||CH|F",
        _obx(
            {
                1: "1",
                2: "NM",
                3: "2345-7^Glucose^LN",
                5: "250",
                6: "mg/dL^^UCUM",
                7: "70-99",
                8: "H",
                10: "A~S",
                11: "F",
                14: "20261101070000+0700",
                15: "LABX^Lab Sentral^CLIA",
                18: "AN-42^ANALYSER^1.2.3^ISO",
                19: "20261101083000+0700",
                23: ORG,
                24: "Jl. Sehat 1^^Bandung^Jawa Barat^40111^ID",
                25: "D77^Pratama^Andi",
                29: "RSLT",
                30: "PANEL",
                33: "SP-1&LAB_SEHAT^FS-1&LAB_SEHAT",
            }
        ),
        _obx(
            {
                1: "2",
                2: "NM",
                3: "2951-2^Sodium^LN",
                5: "140",
                6: "mmol/L",
                7: "<145",
                11: "F",
                23: ORG,
                33: "SP-1&LAB_SEHAT~SP-2&LAB_SEHAT",
            }
        ),
        _obx({1: "3", 2: "ST", 3: "8251-1^Service comment^LN", 5: "lihat catatan", 7: "negatif", 11: "F"}),
    ]
)


def _result() -> tuple[Any, dict[str, dict[str, Any]]]:
    result = map_text(ORU)
    obs = {o["code"]["coding"][0]["code"]: o for o in by_type(result, "Observation")}
    return result, obs


def _get(result: Any, ref: dict[str, Any]) -> dict[str, Any]:
    rtype, rid = ref["reference"].split("/")
    found = [r for r in result.resources if r["resourceType"] == rtype and r["id"] == rid]
    assert len(found) == 1, ref
    return found[0]


def _ext(res: dict[str, Any], url: str) -> list[dict[str, Any]]:
    return [e for e in res.get("extension", []) if e["url"] == url]


def test_reference_range_keeps_the_text_and_states_numeric_bounds_in_the_result_units() -> None:
    _, obs = _result()
    glucose = obs["2345-7"]["referenceRange"]
    assert glucose == [
        {
            "low": {"value": 70, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"},
            "high": {"value": 99, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"},
            "text": "70-99",
        }
    ]
    assert obs["2951-2"]["referenceRange"] == [{"high": {"value": 145, "unit": "mmol/L"}, "text": "<145"}]
    # a text result's range is only text
    assert obs["8251-1"]["referenceRange"] == [{"text": "negatif"}]


def test_analysis_time_is_an_extension_and_issued_is_the_report_release() -> None:
    _, obs = _result()
    glucose = obs["2345-7"]
    assert glucose["effectiveDateTime"] == "2026-11-01T07:00:00+07:00"
    assert _ext(glucose, ANALYSIS) == [{"url": ANALYSIS, "valueDateTime": "2026-11-01T08:30:00+07:00"}]
    assert glucose["issued"] == "2026-11-01T10:00:00+07:00"  # OBR-22


def test_nature_of_abnormal_test_type_and_sub_type() -> None:
    _, obs = _result()
    glucose = obs["2345-7"]
    natures = [e["valueCodeableConcept"]["coding"][0] for e in _ext(glucose, NATURE)]
    assert natures == [
        {"system": "http://terminology.hl7.org/CodeSystem/v2-0080", "code": "A"},
        {"system": "http://terminology.hl7.org/CodeSystem/v2-0080", "code": "S"},
    ]
    assert {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0936", "code": "RSLT"}]
    } in glucose["category"]
    laboratory = glucose["category"][0]["coding"][0]
    assert laboratory["code"] == "laboratory"  # the category from the message stays first
    (sub,) = _ext(glucose, SUBTYPE)
    assert sub["valueCodeableConcept"]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/v2-0937",
        "code": "PANEL",
    }


def test_producer_performing_organization_address_and_medical_director() -> None:
    result, obs = _result()
    glucose = obs["2345-7"]
    producer, role_ref = glucose["performer"]
    lab = _get(result, producer)
    assert lab["resourceType"] == "Organization" and lab["name"] == "Lab Sentral"
    assert lab["identifier"][0]["value"] == "LABX"
    role = _get(result, role_ref)
    assert role["resourceType"] == "PractitionerRole"
    assert role["code"][0]["coding"][0]["code"] == "MDIR"
    assert role["code"][0]["coding"][0]["system"] == "http://terminology.hl7.org/CodeSystem/v2-0912"
    director = _get(result, role["practitioner"])
    assert director["name"][0]["family"] == "Pratama"
    performing = _get(result, role["organization"])
    assert performing["name"] == "Lab Sentral Sehat"
    assert performing["identifier"][0]["value"] == "LS-01"
    assert performing["address"] == [
        {
            "line": ["Jl. Sehat 1"],
            "city": "Bandung",
            "state": "Jawa Barat",
            "postalCode": "40111",
            "country": "ID",
        }
    ]
    # without a director the performer is the organization itself (the same resource)
    assert obs["2951-2"]["performer"] == [role["organization"]]
    assert all(validate_resource(r) == [] for r in result.resources)


def test_equipment_is_a_device_named_by_its_identifier() -> None:
    result, obs = _result()
    device = _get(result, obs["2345-7"]["device"])
    assert device["resourceType"] == "Device"
    assert device["identifier"] == [{"system": "urn:oid:1.2.3", "value": "AN-42"}]
    # one analyser is one Device whichever message names it
    again = map_text(ORU.replace("LAB-R1", "LAB-R2"))
    assert [d["id"] for d in by_type(again, "Device")] == [device["id"]]


def test_related_specimen_one_is_the_specimen_several_are_r5_extensions() -> None:
    result, obs = _result()
    specimen = _get(result, obs["2345-7"]["specimen"])
    assert [i["value"] for i in specimen["identifier"]] == ["SP-1", "FS-1"]
    assert specimen["subject"] == obs["2345-7"]["subject"]
    sodium = obs["2951-2"]
    assert "specimen" not in sodium
    refs = [e["valueReference"] for e in _ext(sodium, R5_SPECIMEN)]
    assert len(refs) == 2 and refs[0] == obs["2345-7"]["specimen"]
    assert _get(result, refs[1])["identifier"][0]["value"] == "SP-2"


def test_a_specimen_observation_has_its_range_method_performer_and_device() -> None:
    oru = "\r".join(
        [
            msh("LAB-R3", "ORU^R01^ORU_R01", "LAB_SEHAT", version="2.5.1"),
            "PID|1||MRN0203^^^LAB_SEHAT^MR||Wati^Sri||19900214|F",
            "OBR|1|ORD-R3|FIL-R3|24323-8^Metabolic panel^LN|||20261101070000+0700",
            "OBX|1|NM|2345-7^Glucose^LN||250|mg/dL|70-99|H|||F",
            "SPM|1|SP-9&LAB_SEHAT||119297000^Blood specimen^SCT",
            _obx(
                {
                    1: "1",
                    2: "NM",
                    3: "20233-3^Specimen volume^LN",
                    5: "5",
                    6: "mL",
                    7: "2-10",
                    11: "F",
                    16: "D88^Putri^Ayu",
                    17: "VOL^Volumetric^L",
                    18: "PIP-1^LAB_SEHAT",
                    19: "20261101080000+0700",
                    23: ORG,
                }
            ),
        ]
    )
    result = map_text(oru)
    volume = next(o for o in by_type(result, "Observation") if o["code"]["coding"][0]["code"] == "20233-3")
    assert volume["referenceRange"][0]["low"]["value"] == 2
    assert volume["method"]["coding"][0]["code"] == "VOL"
    assert _get(result, volume["device"])["identifier"][0]["value"] == "PIP-1"
    assert [_get(result, p)["resourceType"] for p in volume["performer"]] == ["Practitioner", "Organization"]
    assert _ext(volume, ANALYSIS)[0]["valueDateTime"] == "2026-11-01T08:00:00+07:00"
    assert all(validate_resource(r) == [] for r in result.resources)


def test_a_patient_observation_before_any_obr_is_no_result_of_the_later_order() -> None:
    oru = "\r".join(
        [
            msh("PO-1", "ORU^R01^ORU_R01"),
            "PID|1||MRN0801^^^RSUD_SEHAT^MR||Sari^Indah||19920202|F",
            "OBX|1|NM|29463-7^Body weight^LN||61|kg^^UCUM|||||F|||20261101070000+0700",
            "NTE|1||ditimbang tanpa sepatu",
            "PV1|1|O",
            "OBR|1|ORD-P1|FIL-P1|2345-7^Glucose^LN|||20261101070000+0700",
            "OBX|1|NM|2345-7^Glucose^LN||250|mg/dL|||||F",
        ]
    )
    result = map_text(oru)
    assert result.warnings == []
    obs = {o["code"]["coding"][0]["code"]: o for o in by_type(result, "Observation")}
    weight, glucose = obs["29463-7"], obs["2345-7"]
    assert "basedOn" not in weight and "specimen" not in weight
    assert weight["category"][0]["coding"][0]["code"] == "vital-signs"
    assert weight["note"] == [{"text": "ditimbang tanpa sepatu"}]
    assert weight["subject"] == glucose["subject"] and weight["encounter"] == glucose["encounter"]
    assert glucose["basedOn"]
    # the weight is keyed by its code and time: another message with the same weighing updates it
    again = map_text(oru.replace("PO-1", "PO-2").replace("ORD-P1|FIL-P1", "ORD-P2|FIL-P2"))
    assert weight["id"] in {o["id"] for o in by_type(again, "Observation")}


def test_several_values_in_one_obx_are_components_with_its_code() -> None:
    oru = "\r".join(
        [
            msh("CMP-1", "ORU^R01^ORU_R01"),
            "PID|1||MRN0901^^^RSUD_SEHAT^MR||Sari^Indah||19920202|F",
            "OBR|1|ORD-C9|FIL-C9|600-7^Blood culture^LN|||20261101070000+0700",
            "OBX|1|CWE|600-7^Bacteria identified^LN||3092008^Staphylococcus aureus^SCT~112283007^Escherichia coli^SCT||||||F",
            "OBX|2|NM|8867-4^Heart rate^LN||72~75|/min|||||F",
            "OBX|3|TX|8251-1^Service comment^LN||baris satu~baris dua||||||F",
        ]
    )
    result = map_text(oru)
    obs = {o["code"]["coding"][0]["code"]: o for o in by_type(result, "Observation")}
    culture = obs["600-7"]
    assert "valueCodeableConcept" not in culture
    assert [c["valueCodeableConcept"]["coding"][0]["code"] for c in culture["component"]] == [
        "3092008",
        "112283007",
    ]
    assert all(c["code"] == culture["code"] for c in culture["component"])
    assert [c["valueQuantity"]["value"] for c in obs["8867-4"]["component"]] == [72, 75]
    # text repetitions stay lines of one value
    assert obs["8251-1"]["valueString"] == "baris satu\nbaris dua"
    assert "component" not in obs["8251-1"]
    assert all(validate_resource(r) == [] for r in result.resources)
