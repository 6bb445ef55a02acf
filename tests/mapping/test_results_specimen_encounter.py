"""Lab orders and results: the specimen (OBR[Specimen], SPM[Specimen]), the visit an order or result
names (PV1 → Encounter, completing the ADT's), a pharmacy order in ORM (RXO) and the Provenance of a
message that names no sender. Synthetic messages only."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine

from hub import pipeline
from hub.config import Settings
from hub.db import session_scope
from hub.fhir.validate import validate_resource
from hub.ingest.service import Intake
from hub.store import resources as store
from tests.builders import adt, msh
from tests.mapping._support import by_type, map_text


def _one(result: Any, rtype: str) -> dict[str, Any]:
    found = by_type(result, rtype)
    assert len(found) == 1, [r["id"] for r in found]
    return found[0]


def _ref(res: dict[str, Any]) -> str:
    return f"{res['resourceType']}/{res['id']}"


ORU_OBR15 = "\r".join(
    [
        msh("LAB-S1", "ORU^R01^ORU_R01", "LAB_SEHAT"),
        "PID|1||MRN0101^^^LAB_SEHAT^MR||Wati^Sri||19900214|F",
        "OBR|1|ORD-S1|FIL-S1|58410-2^CBC panel^LN|||20261101070000+0700|20261101071500+0700|3^mL"
        "|||||20261101080000+0700|BLD&Whole blood&HL70487^^^LA&Left arm&HL70163",
        "OBX|1|NM|718-7^Hemoglobin^LN||13.2|g/dL|12-16|N|||F",
    ]
)


def test_obr15_makes_the_obr_specimen_referenced_by_report_order_and_result() -> None:
    result = map_text(ORU_OBR15)
    specimen = _one(result, "Specimen")
    assert specimen["type"]["coding"][0]["code"] == "BLD"
    assert specimen["collection"]["bodySite"]["coding"][0]["code"] == "LA"
    # OBR-7 with OBR-8: a collection period; OBR-9 the volume; OBR-14 received.
    assert specimen["collection"]["collectedPeriod"]["start"].startswith("2026-11-01T07:00")
    assert specimen["collection"]["collectedPeriod"]["end"].startswith("2026-11-01T07:15")
    assert specimen["collection"]["quantity"]["value"] == 3
    assert specimen["receivedTime"].startswith("2026-11-01T08:00")
    patient = _one(result, "Patient")
    assert specimen["subject"] == {"reference": _ref(patient)}
    ref = {"reference": _ref(specimen)}
    assert ref in _one(result, "DiagnosticReport")["specimen"]
    assert ref in _one(result, "ServiceRequest")["specimen"]
    assert _one(result, "Observation")["specimen"] == ref
    assert all(validate_resource(r) == [] for r in result.resources)


def test_an_obr_without_specimen_source_makes_no_specimen() -> None:
    result = map_text(ORU_OBR15.replace("|BLD&Whole blood&HL70487^^^LA&Left arm&HL70163", "|"))
    assert by_type(result, "Specimen") == []
    assert "specimen" not in _one(result, "DiagnosticReport")


def _spm(fields: dict[int, str]) -> str:
    return "|".join(["SPM", "1", *(fields.get(n, "") for n in range(2, max(fields) + 1))])


ORU_SPM = "\r".join(
    [
        msh("LAB-S2", "ORU^R01^ORU_R01", "LAB_SEHAT"),
        "PID|1||MRN0102^^^LAB_SEHAT^MR||Wati^Sri||19900214|F",
        "OBR|1|ORD-S2|FIL-S2|94500-6^SARS-CoV-2 RNA^LN|||20261101070000+0700||||||||||||||||||F",
        "OBX|1|CWE|94500-6^SARS-CoV-2 RNA^LN||260385009^Negative^SCT||||||F",
        _spm(
            {
                2: "SP-77&LAB_SEHAT^SF-77&LAB_SEHAT",
                3: "SP-70&LAB_SEHAT",
                4: "258500001^Nasopharyngeal swab^SCT",
                6: "VTM^Viral transport medium^HL70371",
                7: "KOFFP^Plain swab^HL70488",
                8: "71836000^Nasopharyngeal structure^SCT",
                12: "1^mL",
                14: "Swab in VTM",
                17: "20261101065500+0700^20261101070500+0700",
                18: "20261101080000+0700",
                20: "Y",
                21: "QS^Quantity not sufficient^HL70490",
                24: "COLD^Cold^HL70493",
                27: "SWT^Swab tube^HL70785",
                30: "ACC-77^^^LAB_SEHAT",
                31: "OTHER-77^^^LAB_SEHAT",
                32: "SHIP-9^LAB_SEHAT",
            }
        ),
    ]
)


def test_spm_in_full_identifiers_parent_collection_container_condition() -> None:
    result = map_text(ORU_SPM)
    specimens = {s["id"]: s for s in by_type(result, "Specimen")}
    assert len(specimens) == 2  # the specimen and its parent (SPM-3)
    (spm,) = [s for s in specimens.values() if "type" in s]
    kinds = {i["value"]: i.get("type", {}).get("coding", [{}])[0].get("code") for i in spm["identifier"]}
    assert kinds == {"SP-77": "PGN", "SF-77": "FGN", "OTHER-77": None, "SHIP-9": "SHIP"}
    assert spm["accessionIdentifier"]["value"] == "ACC-77"
    assert spm["type"]["coding"][0]["code"] == "258500001"
    assert spm["collection"]["method"]["coding"][0]["code"] == "KOFFP"
    assert spm["collection"]["bodySite"]["coding"][0]["code"] == "71836000"
    assert spm["collection"]["quantity"]["value"] == 1
    assert set(spm["collection"]["collectedPeriod"]) == {"start", "end"}  # SPM-17.2 valued
    assert spm["status"] == "available"
    assert spm["condition"][0]["coding"][0]["code"] == "COLD"  # SPM-24, not the reject reason
    (container,) = spm["container"]  # SPM-27 type and SPM-6 additive: one container
    assert container["type"]["coding"][0]["code"] == "SWT"
    assert container["additiveCodeableConcept"]["coding"][0]["code"] == "VTM"
    assert spm["note"] == [{"text": "Swab in VTM"}]
    (parent_ref,) = spm["parent"]
    parent = specimens[parent_ref["reference"].split("/")[1]]
    assert [i["value"] for i in parent["identifier"]] == ["SP-70"]
    assert parent["subject"] == spm["subject"]
    ref = {"reference": _ref(spm)}
    assert ref in _one(result, "DiagnosticReport")["specimen"]
    assert all(validate_resource(r) == [] for r in result.resources)


def test_a_parent_specimen_is_the_specimen_its_own_spm_makes() -> None:
    child = map_text(ORU_SPM)
    (spm,) = [s for s in by_type(child, "Specimen") if "type" in s]
    own = map_text(
        ORU_SPM.replace("SPM|1|SP-77&LAB_SEHAT^SF-77&LAB_SEHAT|SP-70&LAB_SEHAT|", "SPM|1|SP-70&LAB_SEHAT||")
    )
    assert own.resources != child.resources
    assert spm["parent"][0]["reference"] in {_ref(s) for s in by_type(own, "Specimen")}


ORU_PV1 = "\r".join(
    [
        msh("LAB-E1", "ORU^R01^ORU_R01", "RSUD_SEHAT"),
        "PID|1||MRN0001^^^RSUD_SEHAT^MR||Santoso^Budi||19800101|M",
        "PV1|1|I|||||||||||||||||V0001^^^RSUD_SEHAT^VN",
        "OBR|1|ORD-E1|FIL-E1|2345-7^Glucose^LN|||20261101070000+0700",
        "OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L|||||F",
    ]
)


def test_an_oru_pv1_makes_the_encounter_that_completes_the_stored_one() -> None:
    result = map_text(ORU_PV1)
    encounter = _one(result, "Encounter")
    assert encounter["identifier"][0]["value"] == "V0001"
    assert encounter["class"]["code"] == "IMP"
    assert _one(result, "DiagnosticReport")["encounter"] == {"reference": _ref(encounter)}
    # The same visit in the ADT feed: one Encounter id.
    admit = map_text(adt("ADT-E1", "A01"))
    assert _ref(_one(admit, "Encounter")) == _ref(encounter)


def _merging_store() -> None:
    """The pipeline tests below need the store to merge the contributions of shared resources
    (``hub.store.contributions``: Encounter, ServiceRequest, Specimen): where it does not, they skip."""
    pytest.importorskip("hub.store.contributions")


def test_a_sparse_oru_pv1_never_blanks_or_regresses_the_adt_encounter(engine: Engine) -> None:
    _merging_store()
    intake = Intake(engine, Settings())
    ids = [intake.accept(raw.encode()).message_id for raw in (adt("ADT-E2", "A01"), ORU_PV1 + "\r")]
    with session_scope(engine) as s:
        outcomes = pipeline.process_batch(s, ids)  # type: ignore[arg-type]
    assert {o.state for o in outcomes} == {"processed"}
    admitted = map_text(adt("ADT-E2", "A01"))
    rid = _one(admitted, "Encounter")["id"]
    with session_scope(engine) as s:
        stored = store.read(s, "Encounter", rid)
    assert stored["status"] == "in-progress"  # an ORU's own status would be "unknown"
    assert stored["location"] == _one(admitted, "Encounter")["location"]  # the ORU's PV1 has no PV1-3
    assert stored["meta"]["versionId"] == "1"  # it added nothing the ADT had not said


ORM_RXO = "\r".join(
    [
        msh("ORM-RX1", "ORM^O01^ORM_O01", "RSUD_SEHAT"),
        "PID|1||MRN0001^^^RSUD_SEHAT^MR||Santoso^Budi||19800101|M",
        "ORC|NW|RX-100^SIMRS||||||^^^20261101090000+0700||20261101083000+0700|||D-77^Hakim^Ari",
        "RXO|00378-0208-01^Amoxicillin 500 mg capsule^NDC||500||mg",
        "RXR|PO^Oral^HL70162",
    ]
)


def test_orm_with_rxo_makes_the_medication_request() -> None:
    result = map_text(ORM_RXO)
    request = _one(result, "MedicationRequest")
    assert request["medicationCodeableConcept"]["coding"][0]["code"] == "00378-0208-01"
    assert request["identifier"][0]["value"] == "RX-100"
    assert request["intent"] == "original-order"
    assert by_type(result, "ServiceRequest") == []
    assert all(validate_resource(r) == [] for r in result.resources)


def test_provenance_is_valid_when_msh3_and_msh4_are_empty() -> None:
    text = ORU_OBR15.replace("MSH|^~\\&|SIMRS|LAB_SEHAT|", "MSH|^~\\&|||", 1)
    result = map_text(text, facility="")
    (prov,) = by_type(result, "Provenance")
    assert validate_resource(prov) == []
    assert prov["agent"][0]["who"]["display"]
    named = map_text(text.replace("MSH|^~\\&|||", "MSH|^~\\&|SIMRS||", 1), facility="")
    (prov,) = by_type(named, "Provenance")
    assert prov["agent"][0]["who"]["identifier"]["value"] == "SIMRS"
    assert validate_resource(prov) == []


def test_obx_is_vr_values_instance_identifier_and_a_second_alternate_code() -> None:
    text = "\r".join(
        [
            msh("LAB-V1", "ORU^R01^ORU_R01", "LAB_SEHAT", version="2.7"),
            "PID|1||MRN0103^^^LAB_SEHAT^MR||Wati^Sri||19900214|F",
            "OBR|1|ORD-V1|FIL-V1|68991-9^Epidemiologically important^LN^^^^^^^LOCAL-1^Local panel^L",
            "OBX|1|IS|8675-3^Kind^LN||POS||||||F||||||||||INST-1^LIS",
            "OBX|2|VR|8676-1^Range^LN||10^20||||||F",
        ]
    )
    result = map_text(text)
    first, second = by_type(result, "Observation")
    assert first["valueCodeableConcept"] == {"coding": [{"code": "POS"}]}  # IG: IS[CodeableConcept]
    assert first["identifier"][0]["value"] == "INST-1"
    assert first["identifier"][0]["type"]["coding"][0]["code"] == "FILL"
    assert second["valueString"] == "10-20"  # IG: OBX-5.1 + "-" + OBX-5.2
    codes = [c["code"] for c in _one(result, "DiagnosticReport")["code"]["coding"]]
    assert codes == ["68991-9", "LOCAL-1"]  # CWE-10..12, the second alternate triplet
    assert all(validate_resource(r) == [] for r in result.resources)


def test_vxu_obx_of_the_order_group_is_part_of_the_immunization_a_patient_obx_is_not() -> None:
    text = "\r".join(
        [
            msh("VXU-P1", "VXU^V04^VXU_V04", "RSUD_SEHAT"),
            "PID|1||MRN0001^^^RSUD_SEHAT^MR||Santoso^Budi||19800101|M",
            "OBX|1|NM|29463-7^Body weight^LN||70|kg^^UCUM|||||F|||20261101",
            "ORC|RE||IMM-9001^SIMRS",
            "RXA|0|1|20261101091500||08^Hep B^CVX|0.5|mL^^UCUM",
            "OBX|1|CE|64994-7^Vaccine funding program eligibility category^LN|1|V02^VFC eligible^HL70064||||||F",
        ]
    )
    result = map_text(text)
    immunization = _one(result, "Immunization")
    weight, eligibility = by_type(result, "Observation")
    assert "partOf" not in weight
    assert eligibility["partOf"] == [{"reference": _ref(immunization)}]
    assert all(validate_resource(r) == [] for r in result.resources)


ORM_ORDER = "\r".join(
    [
        msh("ORM-K1", "ORM^O01^ORM_O01", "RSUD_SEHAT"),
        "PID|1||MRN0001^^^RSUD_SEHAT^MR||Santoso^Budi||19800101|M",
        "ORC|NW|PO-K1^SIMRS|||||||20261101080000+0700|||67890^Pratama^Andi^^^dr.",
        "OBR|1|PO-K1^SIMRS||2345-7^Glucose^LN|||20261101070000+0700||||||Puasa 10 jam"
        "||BLD&Whole blood&HL70070^^^LA&Left arm&HL70163" + "|" * 16 + "R73.9^Hyperglycaemia^I10",
    ]
)
ORU_RESULT = "\r".join(
    [
        msh("ORU-K1", "ORU^R01^ORU_R01", "RSUD_SEHAT"),
        "PID|1||MRN0001^^^RSUD_SEHAT^MR||Santoso^Budi||19800101|M",
        "ORC|RE|PO-K1^SIMRS|LAB-K1^LIS||CM",
        "OBR|1|PO-K1^SIMRS|LAB-K1^LIS|2345-7^Glucose^LN|||20261101070000+0700"
        "||||||||BLD&Whole blood&HL70070||||||||||F",
        "OBX|1|NM|2345-7^Glucose^LN||5.4|mmol/L|||||F",
    ]
)


def test_a_result_updates_the_order_without_blanking_what_the_order_said(engine: Engine) -> None:
    _merging_store()
    order, result = map_text(ORM_ORDER), map_text(ORU_RESULT)
    request = _one(order, "ServiceRequest")
    assert _ref(request) == _ref(_one(result, "ServiceRequest"))  # one order, one resource
    assert _ref(_one(order, "Specimen")) == _ref(_one(result, "Specimen"))  # one specimen too
    intake = Intake(engine, Settings())
    ids = [intake.accept((raw + "\r").encode()).message_id for raw in (ORM_ORDER, ORU_RESULT)]
    with session_scope(engine) as s:
        assert {o.state for o in pipeline.process_batch(s, ids)} == {"processed"}  # type: ignore[arg-type]
    with session_scope(engine) as s:
        stored = store.read(s, "ServiceRequest", request["id"])
        specimen = store.read(s, "Specimen", _one(order, "Specimen")["id"])
    assert stored["status"] == "completed"  # the result's ORC-5 CM
    assert [i["value"] for i in stored["identifier"]] == ["PO-K1", "LAB-K1"]  # the filler number added
    assert stored["requester"] == request["requester"]  # kept: the result names no requester
    assert stored["note"] == request["note"] and stored["reasonCode"] == request["reasonCode"]
    assert specimen["collection"]["bodySite"]["coding"][0]["code"] == "LA"  # the order's body site kept
