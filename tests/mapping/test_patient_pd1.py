"""PD1 (V2-to-FHIR IG PD1[Patient], PD1[Observation-LivingWill]): the primary facility and care
provider as Patient.generalPractitioner (the Organization and Practitioner made), handicap and place
of worship as core extensions, the living will as an Observation of the patient. Synthetic data only."""

from __future__ import annotations

from hub.fhir.validate import validate_resource
from tests.mapping._support import by_type, map_text
from tests.mapping.test_patient_fields import SD, message, segment

PID = "PID|1||MRN0009^^^RSUD_SEHAT^MR||Wibowo^Rina||19900202|F"
PD1 = segment(
    "PD1",
    {
        3: "Puskesmas Coblong^^^^^^^^^PKM-0101",
        4: "D1234^Setiawan^Hadi^^^dr.^^^RSUD_SEHAT",
        6: "DEAF^Deaf^L",
        7: "Y",
        12: "N",
        14: "Masjid Al-Ikhlas",
    },
)


def test_pd1_general_practitioner_and_extensions() -> None:
    result = map_text(message(PID, PD1))
    assert [p for r in result.resources for p in validate_resource(r)] == []
    (patient,) = by_type(result, "Patient")
    (org,) = by_type(result, "Organization")
    (doctor,) = by_type(result, "Practitioner")
    assert patient["generalPractitioner"] == [
        {"reference": f"Organization/{org['id']}", "display": "Puskesmas Coblong"},
        {"reference": f"Practitioner/{doctor['id']}", "display": "dr. Hadi Setiawan"},
    ]
    assert org["identifier"][0]["value"] == "PKM-0101"
    assert doctor["identifier"][0]["value"] == "D1234"
    by_url = {e["url"]: e for e in patient["extension"]}
    assert by_url[SD + "patient-disability"]["valueCodeableConcept"]["coding"][0]["code"] == "DEAF"
    assert by_url[SD + "patient-congregation"] == {
        "url": SD + "patient-congregation",
        "valueString": "Masjid Al-Ikhlas",
    }
    # The MPI's keys are PID's alone.
    assert patient["identifier"][0]["value"] == "MRN0009"


def test_pd1_place_of_worship_by_identifier_when_unnamed() -> None:
    pd1 = segment("PD1", {14: "^^^^^^^^^GEREJA-7"})
    (patient,) = by_type(map_text(message(PID, pd1)), "Patient")
    assert patient["extension"] == [{"url": SD + "patient-congregation", "valueString": "GEREJA-7"}]


def test_pd1_living_will_observation() -> None:
    result = map_text(message(PID, PD1))
    (patient,) = by_type(result, "Patient")
    (obs,) = by_type(result, "Observation")
    assert obs["status"] == "final"
    assert obs["code"]["coding"] == [
        {"system": "http://loinc.org", "code": "75320-2", "display": "Advance directive"}
    ]
    assert obs["subject"] == {"reference": f"Patient/{patient['id']}"}
    assert obs["valueCodeableConcept"]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/v2-0315",
        "code": "Y",
        "display": "Yes, patient has a living will",
    }
    # One per patient: a later message with another answer updates the same Observation.
    later = map_text(message(PID, segment("PD1", {7: "N"}), control_id="PTF2"))
    (again,) = by_type(later, "Observation")
    assert again["id"] == obs["id"]
    assert again["valueCodeableConcept"]["coding"][0]["code"] == "N"


def test_pd1_without_living_will_makes_no_observation() -> None:
    result = map_text(message(PID, segment("PD1", {3: "Puskesmas Coblong"})))
    assert by_type(result, "Observation") == []
    assert [u for u in result.unmapped if u["segment"] == "PD1"] == []


def test_pd1_in_a_message_without_a_map_of_its_own_and_in_oru() -> None:
    pd1 = segment("PD1", {4: "D1234^Setiawan^Hadi^^^dr.^^^RSUD_SEHAT", 7: "N"})
    text = message(PID, pd1).replace("ADT^A01^ADT_A01", "ADT^A44^ADT_A43")
    (patient,) = by_type(map_text(text), "Patient")
    assert patient["generalPractitioner"][0]["display"] == "dr. Hadi Setiawan"
    oru = message(PID, pd1).replace("ADT^A01^ADT_A01", "ORU^R01^ORU_R01")
    result = map_text(oru)
    assert by_type(result, "Patient")[0]["generalPractitioner"][0]["display"] == "dr. Hadi Setiawan"
    assert [o["code"]["coding"][0]["code"] for o in by_type(result, "Observation")] == ["75320-2"]
