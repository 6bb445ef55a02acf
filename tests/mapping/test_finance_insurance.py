"""IN1[Coverage] (V2-to-FHIR IG) with IN2: the payor with its id, address and phone, the plan and
group, the policy number as identifier, the insured as subscriber (the Patient when IN1-17 is SEL,
else a RelatedPerson), the insured's group employer as policy holder; IN2 identifiers merged in."""

from __future__ import annotations

from typing import Any

from hub.fhir.validate import validate_resource
from hub.mapping._ids import resource_id
from tests.mapping._support import by_type, map_text

PID = "PID|1||MRN0001^^^RSUD_SEHAT^MR||Santoso^Budi||19800101|M"


def _in1(**fields: str) -> str:
    values = [""] * 50
    values[0] = "IN1"
    values[1] = "1"
    for key, value in fields.items():
        values[int(key[1:])] = value
    return "|".join(values).rstrip("|")


def _message(*segments: str, kind: str = "ADT^A04^ADT_A01") -> str:
    head = f"MSH|^~\\&|SIMRS|RSUD_SEHAT|HUB|KEMKES|20261101083000+0700||{kind}|INS1|P|2.5.1"
    return "\r".join([head, "EVN||20261101083000+0700", PID, *segments]) + "\r"


SPOUSE = _in1(
    f2="JKN^Jaminan Kesehatan Nasional^L",
    f3="ASR-01^^^RSUD_SEHAT",
    f4="Asuransi Sehat Sentosa",
    f5="Jl. Sudirman 1^^Jakarta^DKI Jakarta^10220^ID",
    f7="^WPN^PH^^62^21^5550100",
    f8="GRP-9",
    f9="PT Maju Jaya",
    f10="EMP-55^^^RSUD_SEHAT",
    f11="PT Maju Jaya",
    f12="20260101",
    f13="20261231",
    f15="KEL^Keluarga^L",
    f16="Santoso^Rina",
    f17="SPO^Spouse^HL70063",
    f18="19820303",
    f19="Jl. Melati 5^^Bandung^Jawa Barat^40111^ID",
    f36="POL-123",
    f43="F",
    f49="INS-777^^^RSUD_SEHAT",
)


def _one(result: Any, kind: str) -> dict[str, Any]:
    (found,) = by_type(result, kind)
    return found


def test_insured_spouse_is_the_subscriber_related_person() -> None:
    result = map_text(_message(SPOUSE))
    coverage = _one(result, "Coverage")
    person = _one(result, "RelatedPerson")
    patient = _one(result, "Patient")
    assert coverage["subscriber"] == {"reference": f"RelatedPerson/{person['id']}"}
    assert coverage["beneficiary"] == {"reference": f"Patient/{patient['id']}"}
    assert person["patient"] == {"reference": f"Patient/{patient['id']}"}
    assert person["name"][0]["family"] == "Santoso" and person["name"][0]["given"] == ["Rina"]
    assert person["birthDate"] == "1982-03-03"
    assert person["gender"] == "female"
    assert person["address"][0]["city"] == "Bandung"
    assert person["identifier"][0]["value"] == "INS-777"
    assert person["relationship"][0]["coding"][0]["code"] == "SPS"
    # The key the Coverage's Reference is computed from is the map's own id rule.
    assert person["id"] == resource_id("RelatedPerson", patient["id"], "SPO", "Santoso", "Rina")


def test_coverage_plan_group_identifier_type_and_period() -> None:
    coverage = _one(map_text(_message(SPOUSE)), "Coverage")
    assert coverage["identifier"] == [{"value": "POL-123"}]
    assert coverage["subscriberId"] == "INS-777"  # IN1-49, before the policy number
    assert coverage["type"]["coding"][0]["code"] == "KEL"  # IN1-15 plan type, not IN1-2
    classes = {c["type"]["coding"][0]["code"]: c for c in coverage["class"]}
    assert classes["plan"]["value"] == "JKN" and classes["plan"]["name"] == "Jaminan Kesehatan Nasional"
    assert classes["group"]["value"] == "GRP-9" and classes["group"]["name"] == "PT Maju Jaya"
    assert coverage["period"] == {"start": "2026-01-01", "end": "2026-12-31"}


def test_payor_and_policy_holder_organizations() -> None:
    result = map_text(_message(SPOUSE))
    coverage = _one(result, "Coverage")
    orgs = {f"Organization/{o['id']}": o for o in by_type(result, "Organization")}
    payor = orgs[coverage["payor"][0]["reference"]]
    assert payor["name"] == "Asuransi Sehat Sentosa"
    assert payor["identifier"][0]["value"] == "ASR-01"
    assert payor["address"][0]["city"] == "Jakarta"
    assert payor["telecom"][0]["value"].endswith("5550100")
    holder = orgs[coverage["policyHolder"]["reference"]]
    assert holder["name"] == "PT Maju Jaya"
    assert holder["identifier"][0]["value"] == "EMP-55"


def test_self_insured_patient_is_the_subscriber_and_no_related_person_is_made() -> None:
    result = map_text(_message(SPOUSE.replace("SPO^Spouse^HL70063", "SEL^Self^HL70063")))
    coverage = _one(result, "Coverage")
    assert coverage["subscriber"] == {"reference": f"Patient/{_one(result, 'Patient')['id']}"}
    assert by_type(result, "RelatedPerson") == []
    assert not [w for w in result.warnings if "RelatedPerson" in w]


def test_no_relationship_makes_no_subscriber_and_no_warning() -> None:
    result = map_text(_message(_in1(f2="JKN", f3="BPJS01^^^BPJS", f4="BPJS Kesehatan", f16="Santoso^Rina")))
    coverage = _one(result, "Coverage")
    assert "subscriber" not in coverage
    assert by_type(result, "RelatedPerson") == []
    assert result.warnings == []


def test_subscriber_number_from_in1_10_typed_sn() -> None:
    msg = _message(
        _in1(f2="JKN", f3="BPJS01^^^BPJS", f4="BPJS Kesehatan", f10="SUB-1^^^BPJS^SN", f36="POL-9")
    )
    coverage = _one(map_text(msg), "Coverage")
    assert coverage["subscriberId"] == "SUB-1"
    assert "policyHolder" not in coverage  # an SN number is the subscriber's, not an employer's


def test_in2_identifiers_merge_into_the_coverage() -> None:
    in2 = "IN2||||||MC-1||MA-2" + "|" * 53 + "MB-3^^^BPJS"
    result = map_text(_message(SPOUSE, in2))
    coverage = _one(result, "Coverage")
    typed = {i.get("type", {}).get("coding", [{}])[0].get("code"): i["value"] for i in coverage["identifier"]}
    assert typed == {None: "POL-123", "MC": "MC-1", "MA": "MA-2", "MB": "MB-3"}


def test_bar_and_by_segment_messages_map_the_insured_too() -> None:
    for kind in ("BAR^P01^BAR_P05", "ZIN^Z01"):
        result = map_text(_message(SPOUSE, kind=kind))
        coverage = _one(result, "Coverage")
        assert coverage["subscriber"]["reference"].startswith("RelatedPerson/"), kind


def test_in3_case_manager_is_a_care_team_of_the_patient() -> None:
    in3 = "IN3|1" + "|" * 20 + "Dewi Lestari"
    result = map_text(_message(SPOUSE, in3))
    team = _one(result, "CareTeam")
    assert team["subject"] == {"reference": f"Patient/{_one(result, 'Patient')['id']}"}
    (participant,) = team["participant"]
    assert participant["member"] == {"display": "Dewi Lestari"}
    assert participant["role"][0]["coding"][0]["code"] == "768832004"
    assert by_type(map_text(_message(SPOUSE, "IN3|1")), "CareTeam") == []


def test_every_resource_is_valid_fhir_r4() -> None:
    in3 = "IN3|1" + "|" * 20 + "Dewi Lestari"
    in2 = "IN2||||||MC-1||MA-2"
    for msg in (_message(SPOUSE, in2, in3), _message(SPOUSE.replace("SPO^Spouse", "SEL^Self"))):
        result = map_text(msg)
        assert [p for r in result.resources for p in validate_resource(r)] == []
