"""Groups of the IG's message maps the hub also maps: SIU's patient OBX and DG1 and a service's NTE,
VXU's observation notes, MDM's common order (ORC + OBR → ServiceRequest, the document's
context.related). Synthetic messages only."""

from __future__ import annotations

from hub.fhir.validate import validate_resource
from tests.builders import msh
from tests.mapping._support import by_type, map_text

PID = "PID|1||MRN1001^^^RSUD_SEHAT^MR||Wulan^Sari||19900909|F"
R5_NOTE = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.note"


def test_siu_patient_observation_diagnosis_and_service_note() -> None:
    siu = "\r".join(
        [
            msh("SIU-G1", "SIU^S12^SIU_S12"),
            "SCH|APT-G1^SIMRS|APT-G1-F^SIMRS|||||KONTROL^Kontrol^L|ROUTINE^Routine^HL70276|20|MIN"
            "|^^20^20261115100000+0700^20261115102000+0700|||||55501^Lestari^Dewi||||55501^Lestari^Dewi|||||Booked",
            PID,
            "OBX|1|NM|29463-7^Body weight^LN||58|kg^^UCUM|||||F|||20261110080000+0700",
            "NTE|1||ditimbang di poli",
            "DG1|1||O24.4^Diabetes gestasional^I10",
            "RGS|1",
            "AIS|1||USG^USG kehamilan^L|20261115100000+0700",
            "NTE|1||Kandung kemih penuh",
        ]
    )
    result = map_text(siu)
    assert result.warnings == []
    (weight,) = by_type(result, "Observation")
    assert weight["valueQuantity"]["value"] == 58 and weight["note"] == [{"text": "ditimbang di poli"}]
    (condition,) = by_type(result, "Condition")
    assert condition["code"]["coding"][0]["code"] == "O24.4"
    (appt,) = by_type(result, "Appointment")
    assert [e["valueAnnotation"]["text"] for e in appt["extension"] if e["url"] == R5_NOTE] == [
        "Kandung kemih penuh"
    ]
    assert all(validate_resource(r) == [] for r in result.resources)


def test_vxu_observation_note() -> None:
    vxu = "\r".join(
        [
            msh("VXU-G1", "VXU^V04^VXU_V04"),
            PID,
            "ORC|RE||IMM-G1^SIMRS",
            "RXA|0|1|20261101091500||08^Hep B^CVX|0.5|mL^^UCUM",
            "OBX|1|CE|30963-3^Vaccine funding source^LN|1|VXC1^Program^CDCPHINVS||||||F",
            "NTE|1||dana program pemerintah",
        ]
    )
    result = map_text(vxu)
    (obs,) = by_type(result, "Observation")
    assert obs["note"] == [{"text": "dana program pemerintah"}]
    assert result.warnings == []


def test_mdm_common_order_is_the_documents_related_service_request() -> None:
    mdm = "\r".join(
        [
            msh("MDM-G1", "MDM^T02^MDM_T02", version="2.7"),
            "EVN|T02|20261105120000",
            PID,
            "PV1|1|O",
            "ORC|RE|ORD-G1^SIMRS|RAD-G1^RIS",
            "OBR|1|ORD-G1^SIMRS|RAD-G1^RIS|36643-5^XR Chest 2V^LN",
            "NTE|1||Klinis: batuk lama",
            "TXA|1|RAD^Radiology report^HL70270|TX|20261105110000|||||||||DOC-G1^RIS|||||AU",
            "OBX|1|TX|RAD^Radiology report||Paru dalam batas normal||||||F",
        ]
    )
    result = map_text(mdm)
    (order,) = by_type(result, "ServiceRequest")
    assert order["note"] == [{"text": "Klinis: batuk lama"}]
    (doc,) = by_type(result, "DocumentReference")
    assert doc["context"]["related"] == [{"reference": f"ServiceRequest/{order['id']}"}]
    assert all(validate_resource(r) == [] for r in result.resources)
