"""GT1 (guarantor): a RelatedPerson (unless GT1-11 is SEL: then the Patient) that the patient's Account
(PID-18) names as guarantor.party; an organization guarantor (GT1-21) as an Organization."""

from __future__ import annotations

from typing import Any

from hub.fhir.validate import validate_resource
from tests.mapping._support import by_type, map_text

PID = "PID|1||MRN0001^^^RSUD_SEHAT^MR||Santoso^Budi||19800101|M||||||||||ACC-77^^^RSUD_SEHAT^AN"


def _gt1(**fields: str) -> str:
    values = [""] * 22
    values[0], values[1] = "GT1", "1"
    for key, value in fields.items():
        values[int(key[1:])] = value
    return "|".join(values).rstrip("|")


def _message(*segments: str, kind: str = "BAR^P01^BAR_P01", pid: str = PID) -> str:
    head = f"MSH|^~\\&|SIMRS|RSUD_SEHAT|HUB|KEMKES|20261101083000+0700||{kind}|GT1T|P|2.5.1"
    return "\r".join([head, "EVN||20261101083000+0700", pid, *segments]) + "\r"


FATHER = _gt1(
    f2="G-100^^^RSUD_SEHAT",
    f3="Santoso^Hadi",
    f5="Jl. Kenanga 7^^Surabaya^Jawa Timur^60111^ID",
    f6="^PRN^PH^^62^31^5550101",
    f7="^WPN^PH^^62^31^5550102",
    f8="19550505",
    f9="M",
    f11="FTH^Father^HL70063",
    f13="20260101",
    f14="20261231",
)


def _one(result: Any, kind: str) -> dict[str, Any]:
    (found,) = by_type(result, kind)
    return found


def test_guarantor_related_person_is_the_accounts_guarantor() -> None:
    result = map_text(_message(FATHER))
    person = _one(result, "RelatedPerson")
    account = _one(result, "Account")
    patient = _one(result, "Patient")
    assert account["guarantor"] == [
        {
            "party": {"reference": f"RelatedPerson/{person['id']}"},
            "period": {"start": "2026-01-01", "end": "2026-12-31"},
        }
    ]
    assert person["patient"] == {"reference": f"Patient/{patient['id']}"}
    assert person["identifier"][0]["value"] == "G-100"
    assert person["name"][0]["given"] == ["Hadi"]
    assert person["birthDate"] == "1955-05-05" and person["gender"] == "male"
    assert person["address"][0]["city"] == "Surabaya"
    assert [t.get("use") for t in person["telecom"]] == ["home", "work"]
    codes = {c["code"] for r in person["relationship"] for c in r["coding"]}
    assert {"FTH", "GUAR"} <= codes


def test_guarantor_without_number_is_keyed_by_name() -> None:
    result = map_text(_message(FATHER.replace("G-100^^^RSUD_SEHAT", "")))
    person = _one(result, "RelatedPerson")
    assert _one(result, "Account")["guarantor"][0]["party"] == {"reference": f"RelatedPerson/{person['id']}"}
    assert result.warnings == []


def test_self_guarantor_is_the_patient() -> None:
    result = map_text(_message(_gt1(f3="Santoso^Budi", f11="SEL^Self^HL70063")))
    assert by_type(result, "RelatedPerson") == []
    patient = _one(result, "Patient")
    assert _one(result, "Account")["guarantor"] == [{"party": {"reference": f"Patient/{patient['id']}"}}]


def test_organization_guarantor() -> None:
    result = map_text(_message(_gt1(f11="EMR^Employer^HL70063", f21="PT Maju Jaya^^^^^^^^^EMP-9")))
    account = _one(result, "Account")
    orgs = {f"Organization/{o['id']}": o for o in by_type(result, "Organization")}
    org = orgs[account["guarantor"][0]["party"]["reference"]]
    assert org["name"] == "PT Maju Jaya"
    assert org["identifier"][0]["value"] == "EMP-9"


def test_several_guarantors_and_no_account_without_pid18() -> None:
    mother = _gt1(f1="2", f3="Santoso^Ani", f11="MTH^Mother^HL70063")
    result = map_text(_message(FATHER, mother))
    assert len(_one(result, "Account")["guarantor"]) == 2
    assert len(by_type(result, "RelatedPerson")) == 2
    bare = map_text(_message(FATHER, pid=PID.replace("ACC-77^^^RSUD_SEHAT^AN", "")))
    assert by_type(bare, "Account") == []
    assert len(by_type(bare, "RelatedPerson")) == 1
    assert bare.warnings == []


def test_adt_dft_and_by_segment_messages_carry_the_guarantor() -> None:
    for kind in ("ADT^A04^ADT_A01", "ADT^A05^ADT_A05", "DFT^P03^DFT_P03", "BAR^P05^BAR_P05", "ZGT^Z01"):
        result = map_text(_message(FATHER, kind=kind))
        assert _one(result, "Account")["guarantor"][0]["party"]["reference"].startswith("RelatedPerson/"), (
            kind
        )


def test_every_resource_is_valid_fhir_r4() -> None:
    for msg in (_message(FATHER), _message(_gt1(f3="Santoso^Budi", f11="SEL"))):
        result = map_text(msg)
        assert [p for r in result.resources for p in validate_resource(r)] == []
