"""IAM[AllergyIntolerance]: the onset as text, who reported it (a Practitioner, the patient or a
RelatedPerson), how sure it is (table 0438 → verificationStatus), the clinician's codes; RXA[Immunization]:
the administered-at address on the Location. Synthetic messages only."""

from __future__ import annotations

from typing import Any

from hub.fhir.validate import validate_resource
from tests.builders import msh
from tests.mapping._support import by_type, map_text

VERIFICATION = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification"


def _seg(name: str, fields: dict[int, str]) -> str:
    return "|".join([name, *(fields.get(n, "") for n in range(1, max(fields) + 1))])


def _get(result: Any, ref: dict[str, Any]) -> dict[str, Any]:
    rtype, rid = ref["reference"].split("/")
    (found,) = [r for r in result.resources if r["resourceType"] == rtype and r["id"] == rid]
    return found


A60 = "\r".join(
    [
        msh("IAM-1", "ADT^A60^ADT_A60"),
        "PID|1||MRN0701^^^RSUD_SEHAT^MR||Utami^Rini||19850505|F",
        _seg(
            "IAM",
            {
                1: "1",
                2: "DA^Drug allergy^HL70127",
                3: "70618^Penicillin^RXNORM",
                6: "A^Add^HL70323",
                7: "ALG-1^SIMRS",
                12: "masa kecil",
                14: "Utami^Budi",
                15: "FTH^Father^HL70063",
                17: "C^Confirmed^HL70438",
                27: "PCN^Penisilin^L",
            },
        ),
        _seg(
            "IAM",
            {
                1: "2",
                3: "KCG^Kacang^L",
                6: "A",
                7: "ALG-2^SIMRS",
                11: "20200101",
                12: "abaikan",
                14: "Utami^Rini",
                15: "SEL",
                17: "S",
            },
        ),
        _seg("IAM", {1: "3", 3: "SULF^Sulfa^L", 6: "A", 7: "ALG-3^SIMRS", 14: "Hartati^Sri"}),
        _seg("IAM", {1: "4", 3: "UDG^Udang^L", 6: "D", 7: "ALG-4^SIMRS", 17: "C"}),
    ]
)


def _allergies() -> tuple[Any, dict[str, dict[str, Any]]]:
    result = map_text(A60)
    return result, {a["identifier"][0]["value"]: a for a in by_type(result, "AllergyIntolerance")}


def test_onset_text_only_without_an_onset_date() -> None:
    _, allergies = _allergies()
    assert allergies["ALG-1"]["onsetString"] == "masa kecil"
    assert allergies["ALG-2"]["onsetDateTime"] == "2020-01-01"
    assert "onsetString" not in allergies["ALG-2"]


def test_recorder_is_a_related_person_the_patient_or_a_practitioner() -> None:
    result, allergies = _allergies()
    father = _get(result, allergies["ALG-1"]["recorder"])
    assert father["resourceType"] == "RelatedPerson"
    assert father["name"] == [{"family": "Utami", "given": ["Budi"]}]
    assert father["relationship"][0]["coding"][0]["code"] == "FTH"
    assert father["patient"] == allergies["ALG-1"]["patient"]
    assert allergies["ALG-2"]["recorder"] == allergies["ALG-2"]["patient"]  # SEL: the patient herself
    doctor = _get(result, allergies["ALG-3"]["recorder"])
    assert doctor["resourceType"] == "Practitioner" and doctor["name"][0]["family"] == "Hartati"
    assert all(validate_resource(r) == [] for r in result.resources)


def test_clinical_status_table_0438_is_the_verification_status_and_a_delete_wins() -> None:
    _, allergies = _allergies()
    codes = {
        k: a.get("verificationStatus", {}).get("coding", [{}])[0].get("code") for k, a in allergies.items()
    }
    assert codes == {"ALG-1": "confirmed", "ALG-2": "unconfirmed", "ALG-3": None, "ALG-4": "entered-in-error"}
    assert allergies["ALG-1"]["verificationStatus"]["coding"][0]["system"] == VERIFICATION
    assert allergies["ALG-1"]["clinicalStatus"]["coding"][0]["code"] == "active"
    assert "clinicalStatus" not in allergies["ALG-4"]  # FHIR ait-1


def test_clinician_identified_code_is_another_coding() -> None:
    _, allergies = _allergies()
    assert [c["code"] for c in allergies["ALG-1"]["code"]["coding"]] == ["70618", "PCN"]


def test_immunization_location_gets_the_administered_at_address() -> None:
    vxu = "\r".join(
        [
            "MSH|^~\\&|SIMRS|PKM_SEHAT|HUB|KEMKES|20261101083000+0700||VXU^V04^VXU_V04|VXU-L1|P|2.8",
            "PID|1||MRN0702^^^PKM_SEHAT^MR||Lestari^Dewi||20250101|F",
            "ORC|RE||IMM-L1^SIMRS",
            _seg(
                "RXA",
                {
                    1: "0",
                    2: "1",
                    3: "20261101091500",
                    5: "08^Hep B^CVX",
                    6: "0.5",
                    7: "mL^^UCUM",
                    27: "POSYANDU-3^^^PKM_SEHAT",
                    28: "Jl. Melati 3^^Bogor^Jawa Barat^16111^ID",
                },
            ),
        ]
    )
    result = map_text(vxu)
    (imm,) = by_type(result, "Immunization")
    location = _get(result, imm["location"])
    assert location["address"] == {
        "line": ["Jl. Melati 3"],
        "city": "Bogor",
        "state": "Jawa Barat",
        "postalCode": "16111",
        "country": "ID",
    }
    assert all(validate_resource(r) == [] for r in result.resources)
