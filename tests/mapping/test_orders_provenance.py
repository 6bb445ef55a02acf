"""Orders: one Provenance per order (V2-to-FHIR IG ORC[Provenance], as the IG's ORM_O01 and OML_O21
message maps make it) beside the message's own: its target is that order's resources only, its
agents the people ORC names (entered, verified, acted on, entering device and organization), its
location the ordering facility; ORC-24 the ordering provider's address."""

from __future__ import annotations

from typing import Any

from hub.fhir.validate import validate_resource
from tests.mapping._support import map_text
from tests.mapping.test_orders_timing import PV1, seg

MSH = "MSH|^~\\&|SIMRS|RSUD_SEHAT|HUB|KEMKES|20261103080000+0700||{type}|{ctrl}|P|2.5.1"
PID2 = "PID|1||RM009002^^^RSUD_SEHAT^MR||Kusuma^Rina||19850505|F"
PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"


def mapped(type_: str, *segments: str, ctrl: str = "ORDP001") -> list[dict[str, Any]]:
    text = "\r".join([MSH.format(type=type_, ctrl=ctrl), *segments]) + "\r"
    result = map_text(text)
    assert result.warnings == [], result.warnings
    for res in result.resources:
        assert validate_resource(res) == [], res
    return result.resources


def refs(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{r['resourceType']}/{r['id']}": r for r in resources}


def order_provenances(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in resources if r["resourceType"] == "Provenance" and "entity" in r and "activity" in r
            and r["activity"]["coding"][-1]["system"].endswith("v2-0119")]  # fmt: skip


ORC_FULL = seg(
    "ORC",
    {1: "NW", 2: "PO-9001^SIMRS", 9: "20261103074500", 10: "55501^Lestari^Dewi", 11: "55502^Wijaya^Tono",
     12: "67890^Pratama^Andi^^^dr.", 17: "LAB-ENTRY^Instalasi Laboratorium^L", 18: "TERM-07^Terminal 7^L",
     19: "55503^Santoso^Hadi", 21: "Klinik Anak^^^^^RSUD_SEHAT&2.16.360.1.1&ISO^XX^^^KA-01",
     22: "Jl. Sudirman 5^^Jakarta^DKI Jakarta^10220^ID", 23: "^WPN^PH^^62^21^5550100",
     24: "Jl. Thamrin 9^^Jakarta^DKI Jakarta^10230^ID", 28: "R^Restricted^HL70177"},
)  # fmt: skip


def test_an_orders_provenance_names_its_people_and_place() -> None:
    resources = mapped(
        "ORM^O01^ORM_O01",
        "PID|1||RM009001^^^RSUD_SEHAT^MR||Wibowo^Sari||19900202|F",
        PV1,
        ORC_FULL,
        "OBR|1|PO-9001^SIMRS||2345-7^Glucose^LN",
    )
    by_ref = refs(resources)
    (prov,) = order_provenances(resources)
    sr = next(r for r in resources if r["resourceType"] == "ServiceRequest")
    assert prov["target"] == [{"reference": f"ServiceRequest/{sr['id']}"}]
    assert prov["recorded"] == prov["occurredDateTime"] == "2026-11-03T07:45:00+07:00"  # ORC-9
    assert prov["activity"]["coding"][0]["code"] == "CREATE"  # ORC-1 NW
    assert prov["meta"]["security"][0]["code"] == "R"  # ORC-28
    agents = {a.get("type", {}).get("coding", [{}])[0].get("code", "device"): a for a in prov["agent"]}
    assert agents["author"]["who"]["identifier"] == {"system": "urn:hub:sender", "value": "RSUD_SEHAT"}
    assert by_ref[agents["enterer"]["who"]["reference"]]["name"][0]["family"] == "Lestari"  # ORC-10
    assert by_ref[agents["enterer"]["onBehalfOf"]["reference"]]["name"] == "Instalasi Laboratorium"  # ORC-17
    assert by_ref[agents["verifier"]["who"]["reference"]]["name"][0]["family"] == "Wijaya"  # ORC-11
    assert by_ref[agents["performer"]["who"]["reference"]]["name"][0]["family"] == "Santoso"  # ORC-19
    device = by_ref[agents["device"]["who"]["reference"]]  # ORC-18
    assert device["resourceType"] == "Device" and device["deviceName"][0]["name"] == "Terminal 7"
    location = by_ref[prov["location"]["reference"]]  # ORC-21..23
    assert location["name"] == "Klinik Anak"
    assert location["identifier"][0]["value"] == "KA-01"
    assert location["address"]["city"] == "Jakarta" and location["telecom"][0]["value"] == "+62 (21) 5550100"
    # ORC-12 is the requester (not a Provenance author), with ORC-24 as its address
    assert "Practitioner" not in {a["who"].get("reference", "").split("/")[0] for a in prov["agent"] if a.get("type", {}).get("coding", [{}])[0].get("code") == "author"}  # fmt: skip
    requester = by_ref[sr["requester"]["reference"]]
    assert requester["name"][0]["family"] == "Pratama"
    assert requester["address"][0]["line"] == ["Jl. Thamrin 9"]
    # the message's own Provenance still targets everything, the order's Provenance included
    message_prov = next(r for r in resources if r["resourceType"] == "Provenance" and r is not prov)
    assert {"reference": f"Provenance/{prov['id']}"} in message_prov["target"]


def test_each_order_has_its_own_provenance_and_never_another_patients_order() -> None:
    resources = mapped(
        "ORM^O01^ORM_O01",
        "PID|1||RM009001^^^RSUD_SEHAT^MR||Wibowo^Sari||19900202|F",
        "ORC|NW|PO-9101^SIMRS|||||||20261103080000|55501^Lestari^Dewi",
        "OBR|1|PO-9101^SIMRS||2345-7^Glucose^LN",
        "OBR|2|PO-9101^SIMRS||718-7^Hemoglobin^LN",
        "ORC|NW|RX-9102^SIMRS|||||||20261103081500",
        "RXO|93000002^Parasetamol 500 mg tablet^KFA|500||mg^milligram^UCUM",
        PID2,
        "OBR|1|PO-9201^SIMRS||2345-7^Glucose^LN",  # a new patient's order with no ORC of its own
    )
    by_ref = refs(resources)
    provs = order_provenances(resources)
    assert len(provs) == 2
    first, second = provs
    assert [by_ref[t["reference"]]["resourceType"] for t in first["target"]] == ["ServiceRequest"] * 2
    assert [by_ref[t["reference"]]["resourceType"] for t in second["target"]] == ["MedicationRequest"]
    patients = {by_ref[t["reference"]]["subject"]["reference"] for p in provs for t in p["target"]}
    assert len(patients) == 1  # the second patient's OBR is in no order Provenance of the first patient
    assert second["recorded"] == "2026-11-03T08:15:00+07:00"


def test_an_order_without_orc9_is_recorded_when_the_message_was_sent() -> None:
    resources = mapped(
        "RDE^O11^RDE_O11",
        "PID|1||RM009001^^^RSUD_SEHAT^MR||Wibowo^Sari||19900202|F",
        seg("ORC", {1: "XO", 2: "RX-9301^SIMRS", 13: "FARMASI^^^RSUD_SEHAT"}),
        "RXE|^BID|93000002^Parasetamol 500 mg tablet^KFA|500||mg^milligram^UCUM",
    )
    (prov,) = order_provenances(resources)
    assert prov["recorded"] == "2026-11-03T08:00:00+07:00"  # MSH-7
    assert "occurredDateTime" not in prov
    assert prov["activity"]["coding"][0]["code"] == "UPDATE"  # XO
    assert [a["type"]["coding"][0]["code"] for a in prov["agent"]] == ["author"]
    # no ORC-21: the enterer's location (ORC-13)
    location = refs(resources)[prov["location"]["reference"]]
    assert location["name"] == "RSUD_SEHAT FARMASI"


def test_an_order_that_makes_nothing_makes_no_provenance() -> None:
    text = "\r".join([
        MSH.format(type="ORM^O01^ORM_O01", ctrl="ORDP004"),
        "PID|1||RM009001^^^RSUD_SEHAT^MR||Wibowo^Sari||19900202|F",
        "ORC|NW|RX-9401^SIMRS",
        "RXO|",  # no medication: no MedicationRequest
    ]) + "\r"  # fmt: skip
    result = map_text(text)
    assert not order_provenances(result.resources)
    assert "ORC at segment 2: no Provenance made, target missing" in result.warnings
    for res in result.resources:
        assert validate_resource(res) == []
