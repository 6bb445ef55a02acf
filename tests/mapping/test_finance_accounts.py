"""PID[Account] and MRG[Account] (V2-to-FHIR IG): PID-18 is the patient's Account (identifier, status
active, subject the Patient), the same resource a DFT charge points at; MRG-3 is the prior Account."""

from __future__ import annotations

from hub.fhir.validate import validate_resource
from tests.mapping._support import by_type, map_text

PID = (
    "PID|1||MRN0001^^^RSUD_SEHAT^MR||Santoso^Budi||19800101|M||||||||||"
    "ACC-77^^^RSUD_SEHAT&2.16.360.1.1&ISO^AN"
)


def _message(kind: str, *segments: str) -> str:
    head = f"MSH|^~\\&|SIMRS|RSUD_SEHAT|HUB|KEMKES|20261101083000+0700||{kind}|ACC{len(segments)}|P|2.5.1"
    return "\r".join([head, "EVN||20261101083000+0700", *segments]) + "\r"


ADT = _message("ADT^A01^ADT_A01", PID, "PV1|1|I|ICU^01^A||||||||||||||||V0001^^^RSUD_SEHAT^VN")
DFT = _message(
    "DFT^P03^DFT_P03",
    PID,
    "PV1|1|O|||||||||||||||||V0001^^^RSUD_SEHAT^VN",
    "FT1|1|TRX-1||20261101090000|20261101150000|CG|LAB-HB^Hemoglobin^L|||1|45000&IDR",
)


def test_pid18_makes_the_patients_account() -> None:
    result = map_text(ADT)
    (account,) = by_type(result, "Account")
    (patient,) = by_type(result, "Patient")
    assert account["status"] == "active"
    assert account["identifier"][0]["value"] == "ACC-77"
    assert account["identifier"][0]["type"]["coding"][0]["code"] == "AN"
    assert account["subject"] == [{"reference": f"Patient/{patient['id']}"}]
    assert f"Account/{account['id']}" in {t["reference"] for t in by_type(result, "Provenance")[0]["target"]}


def test_a_charge_points_at_the_same_account_the_adt_made() -> None:
    (adt_account,) = by_type(map_text(ADT), "Account")
    dft = map_text(DFT)
    (account,) = by_type(dft, "Account")  # made once, though PID.Account and the charge both name it
    (charge,) = by_type(dft, "ChargeItem")
    assert account["id"] == adt_account["id"]
    assert charge["account"] == [{"reference": f"Account/{account['id']}"}]


def test_no_account_without_pid18() -> None:
    result = map_text(ADT.replace("ACC-77^^^RSUD_SEHAT&2.16.360.1.1&ISO^AN", ""))
    assert by_type(result, "Account") == []
    assert result.resources  # the Patient and Encounter are still made


def test_account_is_scoped_to_the_patient() -> None:
    other = map_text(ADT.replace("MRN0001", "MRN0002"))
    assert by_type(other, "Account")[0]["id"] != by_type(map_text(ADT), "Account")[0]["id"]


def test_mrg3_is_the_prior_account_of_the_patient() -> None:
    # A message type with no map of its own is mapped by its segments: MRG → MRG.Account.
    msg = _message(
        "ZAC^Z01",
        PID.replace("ACC-77", "ACC-78"),
        "MRG|MRN0001^^^RSUD_SEHAT^MR||ACC-77^^^RSUD_SEHAT&2.16.360.1.1&ISO^AN",
    )
    result = map_text(msg)
    accounts = {a["identifier"][0]["value"]: a for a in by_type(result, "Account")}
    prior = accounts["ACC-77"]
    assert prior["status"] == "unknown"
    assert prior["id"] == by_type(map_text(ADT), "Account")[0]["id"]  # the Account PID-18 made before
    (patient,) = by_type(result, "Patient")
    assert prior["subject"] == [{"reference": f"Patient/{patient['id']}"}]


def test_every_resource_is_valid_fhir_r4() -> None:
    for msg in (ADT, DFT):
        result = map_text(msg)
        assert [p for r in result.resources for p in validate_resource(r)] == []
