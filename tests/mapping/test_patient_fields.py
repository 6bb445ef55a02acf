"""The patient and the people around them (V2-to-FHIR IG PID[Patient], NK1[Patient], NK1[RelatedPerson]):
the fields beyond identity (mother's maiden name, religion, birth place, citizenship, nationality,
county, other telecoms) as the IG's elements and core extensions, and the next of kin's organization,
contact person, period and gender. Synthetic data only."""

from __future__ import annotations

from typing import Any

from hub.fhir.validate import validate_resource
from tests.mapping._support import by_type, map_text

SD = "http://hl7.org/fhir/StructureDefinition/"
MSH = "MSH|^~\\&|SIMRS|RSUD_SEHAT|HUB|KEMKES|20261101083000+0700||ADT^A01^ADT_A01|{id}|P|2.5.1"
PV1 = "PV1|1|I|ICU^01^A||||||||||||||||V0009^^^RSUD_SEHAT^VN"


def segment(name: str, fields: dict[int, str]) -> str:
    out = [name] + [""] * max(fields)
    for n, value in fields.items():
        out[n] = value
    return "|".join(out)


def message(*segments: str, control_id: str = "PTF1") -> str:
    return "\r".join([MSH.format(id=control_id), "EVN|A01|20261101083000+0700", *segments, PV1]) + "\r"


PID_FIELDS = {
    1: "1",
    3: "MRN0009^^^RSUD_SEHAT^MR",
    5: "Wibowo^Rina",
    6: "Lestari^Dewi",
    7: "19900202",
    8: "F",
    11: "Jl. Melati 5^^Bandung^JB^40111^IDN^H",
    12: "3273",
    13: "^PRN^PH^^^^^^^^^+62811111",
    17: "MOS^Muslim^HL70006",
    23: "Bandung",
    26: "IDN^Indonesia^ISO3166~NLD^Netherlands^ISO3166",
    28: "IDN^Indonesia^ISO3166",
    39: "T01^Tribe One^L",
    40: "^NET^Internet^rina@example.invalid",
}


def patient_of(text: str) -> dict[str, Any]:
    result = map_text(text)
    (patient,) = by_type(result, "Patient")
    assert [p for r in result.resources for p in validate_resource(r)] == []
    return patient


def extensions(patient: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [e for e in patient.get("extension", []) if e["url"] == SD + name]


def test_pid_core_extensions() -> None:
    patient = patient_of(message(segment("PID", PID_FIELDS)))
    assert extensions(patient, "patient-mothersMaidenName") == [
        {"url": SD + "patient-mothersMaidenName", "valueString": "Lestari"}
    ]
    (religion,) = extensions(patient, "patient-religion")
    codings = religion["valueCodeableConcept"]["coding"]
    assert codings[0] == {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ReligiousAffiliation",
        "code": "1023",
        "display": "Islam",
    }
    assert codings[1]["code"] == "MOS"  # the sender's own coding kept beside
    assert extensions(patient, "patient-birthPlace") == [
        {"url": SD + "patient-birthPlace", "valueAddress": {"text": "Bandung"}}
    ]
    # PID-26 repeats (one extension per citizenship), PID-39 tribal citizenship the same extension.
    citizenship = extensions(patient, "patient-citizenship")
    codes = [e["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] for e in citizenship]
    assert codes == ["IDN", "NLD", "T01"]
    assert all(e["extension"][0]["url"] == "code" for e in citizenship)
    (nationality,) = extensions(patient, "patient-nationality")
    assert nationality["extension"][0]["url"] == "code"
    assert nationality["extension"][0]["valueCodeableConcept"]["coding"][0]["code"] == "IDN"


def test_pid_40_telecom_and_identity_unchanged() -> None:
    patient = patient_of(message(segment("PID", PID_FIELDS)))
    assert [t["value"] for t in patient["telecom"]] == ["+62811111", "rina@example.invalid"]
    assert patient["identifier"][0]["value"] == "MRN0009"
    assert patient["name"] == [{"family": "Wibowo", "given": ["Rina"]}]
    assert (patient["birthDate"], patient["gender"]) == ("1990-02-02", "female")


def test_pid_12_county_is_the_district_of_the_only_address() -> None:
    patient = patient_of(message(segment("PID", PID_FIELDS)))
    assert patient["address"] == [
        {
            "line": ["Jl. Melati 5"],
            "city": "Bandung",
            "state": "JB",
            "postalCode": "40111",
            "country": "IDN",
            "use": "home",
            "district": "3273",
        }
    ]


def test_pid_12_county_gets_an_address_of_its_own_when_it_cannot_join_one() -> None:
    two = {**PID_FIELDS, 11: "Jl. Melati 5^^Bandung~Jl. Mawar 1^^Cimahi"}
    patient = patient_of(message(segment("PID", two)))
    assert [a.get("city") for a in patient["address"]] == ["Bandung", "Cimahi", None]
    assert patient["address"][2] == {"district": "3273"}
    other_county = {**PID_FIELDS, 11: "Jl. Melati 5^^Bandung^^^^^^3204"}
    patient = patient_of(message(segment("PID", other_county)))
    assert [a.get("district") for a in patient["address"]] == ["3204", "3273"]
    same_county = {**PID_FIELDS, 11: "Jl. Melati 5^^Bandung^^^^^^3273"}
    patient = patient_of(message(segment("PID", same_county)))
    assert [a.get("district") for a in patient["address"]] == ["3273"]
    no_address = {k: v for k, v in PID_FIELDS.items() if k != 11}
    patient = patient_of(message(segment("PID", no_address)))
    assert patient["address"] == [{"district": "3273"}]


def test_pid_35_36_animal_species_and_breed() -> None:
    animal = {**PID_FIELDS, 35: "448771007^Canis familiaris^SCT", 36: "LAB^Labrador retriever^L"}
    patient = patient_of(message(segment("PID", animal)))
    (ext,) = extensions(patient, "patient-animal")
    assert [(p["url"], p["valueCodeableConcept"]["coding"][0]["code"]) for p in ext["extension"]] == [
        ("species", "448771007"),
        ("breed", "LAB"),
    ]


def test_unmapped_report_has_none_of_the_mapped_pid_fields() -> None:
    result = map_text(message(segment("PID", PID_FIELDS)))
    assert [u["field"] for u in result.unmapped if u["segment"] == "PID"] == []


NK1_PERSON = segment(
    "NK1",
    {
        1: "1",
        2: "Wibowo^Agus",
        3: "SPO^Spouse^HL70063",
        5: "^PRN^PH^^^^^^^^^+62812222",
        6: "^^PH^^^^^^^^^+62223333",
        8: "20200101",
        9: "20301231",
        15: "M",
        20: "IND^Indonesian^ISO639",
        40: "^NET^Internet^agus@example.invalid",
    },
)
NK1_EMPLOYER = segment(
    "NK1",
    {
        1: "2",
        3: "EMR^Employer^HL70063",
        13: "PT Sumber Makmur^^^^^^^^^ORG-55",
        30: "Hartono^Dedi",
        31: "^WPN^PH^^^^^^^^^+62224444",
        32: "Jl. Industri 9^^Cimahi^JB^40511^IDN^B",
        41: "^WPN^PH^^^^^^^^^+62225555",
    },
)


def test_nk1_patient_contact_period_gender_organization() -> None:
    result = map_text(
        message("PID|1||MRN0009^^^RSUD_SEHAT^MR||Wibowo^Rina||19900202|F", NK1_PERSON, NK1_EMPLOYER)
    )
    (patient,) = by_type(result, "Patient")
    person, employer = patient["contact"]
    # NK1-3 through the IG's Relationship map (v3 RoleCode first, the sender's coding kept beside).
    assert [c["code"] for c in person["relationship"][0]["coding"]] == ["SPS", "SPO"]
    assert person["period"] == {"start": "2020-01-01", "end": "2030-12-31"}
    assert person["gender"] == "male"
    # NK1-6 without a use code is the business number (IG: contact.telecom[2].use "work").
    assert [(t["value"], t.get("use")) for t in person["telecom"]] == [
        ("+62812222", "home"),
        ("+62223333", "work"),
        ("agus@example.invalid", "home"),
    ]
    (org,) = by_type(result, "Organization")
    assert employer["organization"] == {
        "reference": f"Organization/{org['id']}",
        "display": "PT Sumber Makmur",
    }
    assert org["contact"] == [
        {
            "name": {"family": "Hartono", "given": ["Dedi"]},
            "telecom": [{"system": "phone", "value": "+62224444", "use": "work"}],
            "address": {
                "line": ["Jl. Industri 9"],
                "city": "Cimahi",
                "state": "JB",
                "postalCode": "40511",
                "country": "IDN",
                "use": "work",
            },
        }
    ]
    assert [t["value"] for t in employer["telecom"]] == ["+62225555"]
    assert [p for r in result.resources for p in validate_resource(r)] == []


def test_nk1_related_person_language_and_contact_person() -> None:
    result = map_text(
        message("PID|1||MRN0009^^^RSUD_SEHAT^MR||Wibowo^Rina||19900202|F", NK1_PERSON, NK1_EMPLOYER)
    )
    spouse, employer = by_type(result, "RelatedPerson")
    assert spouse["communication"] == [
        {
            "language": {
                "coding": [
                    {"system": "urn:hub:codesystem:RSUD_SEHAT:ISO639", "code": "IND", "display": "Indonesian"}
                ]
            }
        }
    ]
    assert [t["value"] for t in spouse["telecom"]] == ["+62812222", "+62223333", "agus@example.invalid"]
    assert employer["name"] == [{"family": "Hartono", "given": ["Dedi"]}]
    assert [t["value"] for t in employer["telecom"]] == ["+62224444", "+62225555"]
    assert employer["address"][0]["city"] == "Cimahi"
    assert not [u for u in result.unmapped if u["segment"] == "NK1"]


def test_pid_21_mother_as_related_person() -> None:
    fields = {**PID_FIELDS, 21: "MRN0001^^^RSUD_SEHAT^MR~3201010101800001^^^^NNIDN"}
    result = map_text(message(segment("PID", fields)))
    assert [p for r in result.resources for p in validate_resource(r)] == []
    (patient,) = by_type(result, "Patient")
    (mother,) = by_type(result, "RelatedPerson")
    assert mother["patient"] == {"reference": f"Patient/{patient['id']}"}
    assert [i["value"] for i in mother["identifier"]] == ["MRN0001", "3201010101800001"]
    assert mother["identifier"][1]["system"] == "https://fhir.kemkes.go.id/id/nik"
    assert mother["relationship"][0]["coding"][0]["code"] == "MTH"
    assert "MRN0001" not in str(patient)
    # Keyed by the mother's identifier within the patient: a replay updates the same RelatedPerson.
    again = map_text(message(segment("PID", fields), control_id="PTF9"))
    assert by_type(again, "RelatedPerson")[0]["id"] == mother["id"]
    assert by_type(map_text(message(segment("PID", PID_FIELDS))), "RelatedPerson") == []


def test_pid_33_34_last_update_as_provenance_of_the_patient() -> None:
    fields = {**PID_FIELDS, 33: "20261031101500+0700", 34: "PKM_COBLONG^2.16.360.1.1^ISO"}
    result = map_text(message(segment("PID", fields)))
    assert [p for r in result.resources for p in validate_resource(r)] == []
    (patient,) = by_type(result, "Patient")
    update, message_provenance = by_type(result, "Provenance")
    assert update["target"] == [{"reference": f"Patient/{patient['id']}"}]
    assert update["occurredDateTime"] == "2026-10-31T10:15:00+07:00"
    assert update["recorded"] == message_provenance["recorded"]
    assert update["activity"]["coding"][0]["code"] == "UPDATE"
    (agent,) = update["agent"]
    assert agent["type"]["coding"][0]["code"] == "performer"
    (org,) = [
        o for o in by_type(result, "Organization") if agent["who"]["reference"] == f"Organization/{o['id']}"
    ]
    assert org["name"] == "PKM_COBLONG"
    # The message's own Provenance still names the sender, and the update is among what it made.
    assert message_provenance["agent"][0]["who"]["identifier"]["value"] == "RSUD_SEHAT"
    assert not [u for u in result.unmapped if u["segment"] == "PID"]
    assert len(by_type(map_text(message(segment("PID", PID_FIELDS))), "Provenance")) == 1


def test_pid_13_home_unless_the_sender_says_otherwise() -> None:
    fields = {
        **PID_FIELDS,
        13: "(022)2501234~^PRN^CP^^^^^^^^^+62811111~^ORN^PH^^^^^^^^^+62227777~^ASN^PH^^^^^^^^^+62228888",
    }
    patient = patient_of(message(segment("PID", fields)))
    assert [(t["value"], t.get("use")) for t in patient["telecom"]][:4] == [
        ("(022)2501234", "home"),  # v2.3 style, no XTN-2: the home number (IG telecom[1].use)
        ("+62811111", "mobile"),  # XTN-3 CP: a mobile
        ("+62227777", "home"),  # XTN-2 ORN (other residence) says home itself
        ("+62228888", None),  # XTN-2 ASN (answering service): the sender said, and it is no home use
    ]


def test_nk1_3_other_is_not_self() -> None:
    """Table 0063 OTH is "Other" (IG: v2-0131 O), never v3 ONESELF; GCH a grandchild (IG map)."""
    nk1 = [
        segment("NK1", {1: str(k + 1), 2: f"Wibowo^Nama{k}", 3: code})
        for k, code in enumerate(("OTH", "GCH"))
    ]
    result = map_text(message("PID|1||MRN0009^^^RSUD_SEHAT^MR||Wibowo^Rina||19900202|F", *nk1))
    first = [p["relationship"][0]["coding"][0] for p in by_type(result, "RelatedPerson")]
    assert [(c["system"].rsplit("/", 1)[1], c["code"]) for c in first] == [
        ("v2-0131", "O"),
        ("v3-RoleCode", "GRNDCHILD"),
    ]
    (patient,) = by_type(result, "Patient")
    assert patient["contact"][0]["relationship"][0]["coding"][0]["code"] == "O"
