"""PRT and ROL (participations, roles): the V2-to-FHIR IG's PRT[PractitionerRole], PRT[Device],
PRT[RelatedPerson], PRT[Observation-Location], ROL[…] maps and the message maps that link them to the
patient, the visit, the order, the report and the observation the segment follows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.mapping._support import HL7_DIR, by_type, map_file, map_text


def _one(result: Any, resource_type: str, **match: Any) -> dict[str, Any]:
    found = [r for r in by_type(result, resource_type) if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (resource_type, match, found)
    return found[0]


def _ref(resource: dict[str, Any]) -> dict[str, str]:
    return {"reference": f"{resource['resourceType']}/{resource['id']}"}


def _role(result: Any, code: str) -> dict[str, Any]:
    roles = [r for r in by_type(result, "PractitionerRole") if r["code"][0]["coding"][0]["code"] == code]
    assert len(roles) == 1, (code, roles)
    return roles[0]


def _practitioner(result: Any, role: dict[str, Any]) -> dict[str, Any]:
    ref = role["practitioner"]["reference"]
    return next(r for r in result.resources if f"{r['resourceType']}/{r['id']}" == ref)


ORU = HL7_DIR / "oru_r01_prt.hl7"


def test_oru_prt_after_pid_pp_is_the_general_practitioner() -> None:
    result = map_file(ORU)
    patient = _one(result, "Patient")
    gp = _role(result, "PP")
    assert patient["generalPractitioner"] == [_ref(gp)]
    assert gp["code"][0]["coding"][0]["system"] == "http://terminology.hl7.org/CodeSystem/v2-0912"
    assert gp["telecom"] == [{"system": "phone", "value": "+62 (22) 7001234", "use": "work"}]
    doctor = _practitioner(result, gp)
    assert doctor["identifier"][0]["value"] == "D7001"
    # PRT-14 is the practitioner's address (IG: practitioner(Practitioner.address)).
    assert doctor["address"][0]["city"] == "Bandung"
    assert gp["active"] is True


def test_oru_prt_after_pid_other_role_is_a_related_person() -> None:
    result = map_file(ORU)
    patient = _one(result, "Patient")
    mother = _one(result, "RelatedPerson")
    assert mother["patient"] == _ref(patient)
    assert mother["relationship"][0]["coding"][0]["code"] == "MTH"
    assert mother["name"] == [{"family": "Lestari", "given": ["Sri"]}]
    assert mother["period"] == {"start": "2020-01-01"}
    assert mother["address"][0]["use"] == "home"
    assert mother["telecom"][0]["use"] == "home"
    # The mother is no practitioner: no PractitionerRole with her role.
    assert not [r for r in by_type(result, "PractitionerRole") if r["code"][0]["coding"][0]["code"] == "MTH"]


def test_oru_prt_after_pv1_is_an_encounter_participant() -> None:
    result = map_file(ORU)
    encounter = _one(result, "Encounter")
    attending = _role(result, "AT")
    assert encounter["participant"] == [
        {
            "type": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                            "code": "ATND",
                            "display": "attender",
                        },
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v2-0912",
                            "code": "AT",
                            "display": "Attending Provider",
                        },
                    ]
                }
            ],
            "individual": _ref(attending),
            "period": {"start": "2026-11-05T08:00:00+07:00", "end": "2026-11-05T08:30:00+07:00"},
        }
    ]
    assert attending["period"] == {"start": "2026-11-05T08:00:00+07:00", "end": "2026-11-05T08:30:00+07:00"}


def test_oru_prt_after_orc_is_the_requester_of_the_following_obr() -> None:
    result = map_file(ORU)
    order = _one(result, "ServiceRequest")
    ordering = _role(result, "OP")
    assert order["requester"] == _ref(ordering)
    assert ordering["organization"]["display"] == "RSUD Sehat"


def test_oru_prt_after_obr_performs_and_interprets_the_report() -> None:
    result = map_file(ORU)
    report = _one(result, "DiagnosticReport")
    assert report["resultsInterpreter"] == [_ref(_role(result, "PRI"))]
    assert report["performer"] == [_ref(_role(result, "TN"))]


def test_oru_prt_after_obx_names_performer_location_and_device() -> None:
    result = map_file(ORU)
    hb = next(o for o in by_type(result, "Observation") if o["code"]["coding"][0]["code"] == "718-7")
    wbc = next(o for o in by_type(result, "Observation") if o["code"]["coding"][0]["code"] == "6690-2")
    observer = _role(result, "RO")
    assert hb["performer"] == [_ref(observer)]
    location = observer["location"][0]
    assert hb["extension"] == [
        {"url": "http://hl7.org/fhir/StructureDefinition/event-location", "valueReference": location}
    ]
    assert "device" not in hb and "performer" not in wbc
    device = _one(result, "Device")
    assert wbc["device"] == _ref(device)
    assert device["identifier"][0]["value"] == "HA-2201"
    assert device["udiCarrier"] == [{"deviceIdentifier": "UDI-00012345"}]
    assert (device["lotNumber"], device["serialNumber"]) == ("LOT77", "SN-5521")
    assert (device["manufactureDate"], device["expirationDate"]) == ("2025-01-01", "2030-12-31")
    assert device["status"] == "active"
    assert not [u for u in result.unmapped if u["segment"] == "PRT" and u["field"] != 4]


def test_prt_ids_are_deterministic_and_scoped_to_the_patient() -> None:
    text = ORU.read_bytes().decode("utf-8")
    first, again = map_text(text), map_text(text.replace("ORUPRT0001", "ORUPRT0002"))
    ids = sorted(r["id"] for r in by_type(first, "PractitionerRole"))
    assert ids == sorted(r["id"] for r in by_type(again, "PractitionerRole"))
    other = map_text(text.replace("RM009911", "RM009912"))
    assert not set(ids) & {r["id"] for r in by_type(other, "PractitionerRole")}
    # A device is the sender's, the same for every patient.
    assert _one(first, "Device")["id"] == _one(other, "Device")["id"]


def test_prt_action_code_d_inactivates() -> None:
    text = ORU.read_bytes().decode("utf-8").replace("PRT|1|UC||PP^", "PRT|1|D||PP^")
    result = map_text(text)
    assert _role(result, "PP")["active"] is False
    assert _role(result, "AT")["active"] is True


def test_prt_after_the_obx_of_an_earlier_order_stays_there() -> None:
    """An ORC's PRT goes to the OBR after that ORC, never to the previous order's."""
    text = ORU.read_bytes().decode("utf-8")
    second = (
        "ORC|RE|PO-7702^SIMRS|LAB-7702^LIS\r"
        "PRT|1|UC||OP^Ordering Provider^HL70912|D7009^Gunawan^Tono^^^dr.^^^RSUD_SEHAT\r"
        "OBR|2|PO-7702^SIMRS|LAB-7702^LIS|2345-7^Glucose^LN|||20261105081000+0700\r"
        "OBX|1|NM|2345-7^Glucose^LN||101|mg/dL^^UCUM|||||F\r"
    )
    result = map_text(text + second)
    orders = {o["identifier"][0]["value"]: o for o in by_type(result, "ServiceRequest")}
    roles = {r["practitioner"]["display"]: r for r in by_type(result, "PractitionerRole")}
    assert orders["PO-7701"]["requester"] == _ref(roles["dr. Maya Sari"])
    assert orders["PO-7702"]["requester"] == _ref(roles["dr. Tono Gunawan"])


ADT = HL7_DIR / "adt_a01_rol_prt.hl7"


def test_adt_rol_pp_after_pid_is_the_general_practitioner() -> None:
    result = map_file(ADT)
    patient = _one(result, "Patient")
    gp = next(r for r in by_type(result, "PractitionerRole") if r["identifier"][0]["value"] == "R-1")
    assert patient["generalPractitioner"] == [_ref(gp)]
    # ROL-3 (table 0443) PP → SNOMED CT primary care physician, the sender's coding beside.
    assert [c["code"] for c in gp["code"][0]["coding"]] == ["446050000", "PP"]
    assert gp["organization"]["display"] == "Klinik Pratama Melati"
    assert gp["period"] == {"start": "2025-01-01"}
    assert _practitioner(result, gp)["address"][0]["city"] == "Surabaya"  # ROL-11


def test_adt_care_roles_after_pid_make_one_care_team_of_the_patient() -> None:
    result = map_file(ADT)
    patient = _one(result, "Patient")
    team = _one(result, "CareTeam")
    assert team["subject"] == _ref(patient) and team["status"] == "active"
    consultant = next(
        r for r in by_type(result, "PractitionerRole") if r.get("identifier", [{}])[0].get("value") == "R-2"
    )
    referrer = _role(result, "RP")
    members = [p["member"] for p in team["participant"]]
    assert members == [_ref(consultant), _ref(referrer)]
    assert team["participant"][0]["role"][0]["coding"][0]["code"] == "CON"  # ROL-3 CP
    assert team["participant"][1]["role"][0]["coding"][0]["code"] == "RP"  # PRT-4
    assert team["participant"][1]["onBehalfOf"]["display"] == "Puskesmas Kenjeran"  # PRT-8
    assert team["reasonCode"][0]["coding"][0]["code"] == "I10"  # ROL-8
    # The same patient's next message updates the same CareTeam; another patient has another.
    text = ADT.read_bytes().decode("utf-8")
    assert _one(map_text(text.replace("ADTROL0001", "ADTROL0002")), "CareTeam")["id"] == team["id"]
    assert _one(map_text(text.replace("RM008822", "RM008823")), "CareTeam")["id"] != team["id"]


def test_adt_prt_of_another_role_after_pid_is_a_related_person() -> None:
    result = map_file(ADT)
    friend = next(r for r in by_type(result, "RelatedPerson") if r["name"][0]["family"] == "Wahyuni")
    assert friend["relationship"][0]["coding"][0]["code"] == "FND"
    assert friend["patient"] == _ref(_one(result, "Patient"))
    assert "FND" not in {r["code"][0]["coding"][-1]["code"] for r in by_type(result, "PractitionerRole")}


def test_adt_rol_and_prt_after_pv1_are_encounter_participants() -> None:
    result = map_file(ADT)
    encounter = _one(result, "Encounter")
    attending = next(
        r for r in by_type(result, "PractitionerRole") if r.get("identifier", [{}])[0].get("value") == "R-3"
    )
    admitting = _role(result, "AD")
    assert [p["individual"] for p in encounter["participant"]] == [_ref(attending), _ref(admitting)]
    assert [p["type"][0]["coding"][0]["code"] for p in encounter["participant"]] == ["ATND", "ADM"]
    assert encounter["participant"][0]["period"] == {"start": "2026-11-06T10:00:00+07:00"}
    assert not [u for u in result.unmapped if u["segment"] in ("ROL", "PRT")]


def test_care_team_and_related_person_reach_the_patient_compartment() -> None:
    """CareTeam?patient= and $everything find the CareTeam (R4 Patient compartment: CareTeam.patient,
    .participant) and the RelatedPerson (RelatedPerson.patient)."""
    from hub.store.search_params import PATIENT_COMPARTMENT, compartment_paths, extract_rows

    result = map_file(ADT)
    patient_id = _one(result, "Patient")["id"]
    for resource_type, element in (("CareTeam", "subject"), ("RelatedPerson", "patient")):
        assert PATIENT_COMPARTMENT[resource_type][0] == "patient"
        assert element in compartment_paths(resource_type)
        for resource in by_type(result, resource_type):
            assert resource[element] == {"reference": f"Patient/{patient_id}"}
            rows = [tuple(r[:3]) for r in extract_rows(resource)["reference"]]
            assert (element, "Patient", patient_id) in rows, resource_type


def test_vxu_order_prt_are_immunization_performers_with_their_function() -> None:
    result = map_file(HL7_DIR / "vxu_v04_prt.hl7")
    immunization = _one(result, "Immunization")
    ordering, administering = _role(result, "OP"), _role(result, "AP")
    performers = {p["function"]["coding"][0]["code"]: p["actor"] for p in immunization["performer"]}
    assert performers == {"OP": _ref(ordering), "AP": _ref(administering)}
    assert administering["location"][0]["display"] == "RSUD_SEHAT Poli Anak IMUN"
    observation = _one(result, "Observation")
    assert observation["performer"] == [_ref(_role(result, "RO"))]
    assert not result.warnings


OML = (
    "MSH|^~\\&|SIMRS|RSUD_SEHAT|LIS|RSUD_SEHAT|20261108070000+0700||OML^O21^OML_O21|OMLPRT0001|P|2.8\r"
    "PID|1||RM006644^^^RSUD_SEHAT^MR||Pratiwi^Nur||19881201|F\r"
    "PRT|1|UC||PP^Primary Care Provider^HL70912|D6001^Siregar^Hana^^^dr.^^^RSUD_SEHAT\r"
    "ORC|NW|PO-6601^SIMRS\r"
    "PRT|1|UC||OP^Ordering Provider^HL70912|D6002^Lubis^Fajar^^^dr.^^^RSUD_SEHAT\r"
    "OBR|1|PO-6601^SIMRS||57021-8^CBC W Auto Differential panel^LN|||20261108065500\r"
    "ORC|NW|PO-6602^SIMRS\r"
    "OBR|2|PO-6602^SIMRS||2345-7^Glucose^LN|||20261108065500\r"
    "PRT|1|UC||OP^Ordering Provider^HL70912|D6003^Harahap^Gita^^^dr.^^^RSUD_SEHAT\r"
)


def test_oml_prt_of_each_order_is_its_requester() -> None:
    result = map_text(OML)
    assert _one(result, "Patient")["generalPractitioner"] == [_ref(_role(result, "PP"))]
    orders = {o["identifier"][0]["value"]: o for o in by_type(result, "ServiceRequest")}
    roles = {r["practitioner"]["display"]: r for r in by_type(result, "PractitionerRole")}
    assert orders["PO-6601"]["requester"] == _ref(roles["dr. Fajar Lubis"])  # PRT after the ORC
    assert orders["PO-6602"]["requester"] == _ref(roles["dr. Gita Harahap"])  # PRT after the OBR
    assert not by_type(result, "RelatedPerson")


def test_a_message_without_a_map_of_its_own_maps_prt_and_rol_by_segment() -> None:
    """messages/_default.yaml places PRT and ROL as the message maps do."""
    oru = ORU.read_bytes().decode("utf-8").replace("ORU^R01^ORU_R01", "ZRS^Z01^ZRS_Z01")
    result = map_text(oru)
    assert result.warnings == ["no message map: mapped by segment"]
    assert _one(result, "Patient")["generalPractitioner"] == [_ref(_role(result, "PP"))]
    assert _one(result, "ServiceRequest")["requester"] == _ref(_role(result, "OP"))
    assert _one(result, "DiagnosticReport")["resultsInterpreter"] == [_ref(_role(result, "PRI"))]
    adt = ADT.read_bytes().decode("utf-8").replace("ADT^A01^ADT_A01", "ADT^Z62^ADT_A01")
    result = map_text(adt)
    assert _one(result, "Patient")["generalPractitioner"]
    assert len(_one(result, "CareTeam")["participant"]) == 2  # ROL CP, PRT RP
    assert [r["name"][0]["family"] for r in by_type(result, "RelatedPerson") if "active" in r] == ["Wahyuni"]
    assert len(_one(result, "Encounter")["participant"]) == 2


def test_a_deleted_participation_is_left_out_of_the_care_team() -> None:
    text = ADT.read_bytes().decode("utf-8")
    deleted = text.replace("ROL|R-2^SIMRS|UC|", "ROL|R-2^SIMRS|D|").replace("PRT|1|UC||RP^", "PRT|1|D||RP^")
    result = map_text(deleted)
    assert not by_type(result, "CareTeam")
    # The roles themselves are kept, inactive.
    assert _role(result, "RP")["active"] is False
    only_rol = map_text(text.replace("PRT|1|UC||RP^", "PRT|1|D||RP^"))
    assert [p["role"][0]["coding"][0]["code"] for p in _one(only_rol, "CareTeam")["participant"]] == ["CON"]


def test_an_entry_condition_is_checked_like_a_map_condition(tmp_path: Path) -> None:
    import shutil

    from hub.mapping import check_mappings
    from tests.mapping._support import ROOT

    target = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", target)
    path = target / "messages" / "ORU_R01.yaml"
    text = path.read_text().replace(
        "when: {function: equals, path: PRT-4.1, args: [PP]}", "when: {function: guess}"
    )
    path.write_text(text)
    problems = check_mappings(target)  # the base file, and the sender overlay that extends it
    assert {p.message for p in problems} == {"unknown condition 'guess'"}
    assert problems[0].file == path and problems[0].line > 1


def test_empty_or_odd_prt_and_rol_segments_make_nothing_broken() -> None:
    from hub.fhir.validate import validate_resource

    segments = [
        "MSH|^~\\&|SIMRS|RSUD_SEHAT|HUB|KEMKES|20261105091500+0700||ORU^R01^ORU_R01|ROB1|P|2.8",
        "PID|1||RM1^^^RSUD_SEHAT^MR||Anto^Budi",
        "PRT",
        "PRT||||MTH",
        "PRT||||PP",
        "PV1|1|O|||||||||||||||||V1^^^RSUD_SEHAT^VN",
        "ROL",
        "PRT||||AT^^HL70912",
        "ORC|RE|P1",
        "PRT||||OP|^^^",
        "OBR|1|P1||X^Y^L",
        "OBX|1|NM|718-7^Hb^LN||1||||||F",
        "PRT||||||||^^^",
    ]
    for structure in ("ORU^R01^ORU_R01", "ADT^A01^ADT_A01", "ZRS^Z01^ZRS_Z01"):
        result = map_text("\r".join(segments).replace("ORU^R01^ORU_R01", structure) + "\r")
        types = {r["resourceType"] for r in result.resources}
        assert not types & {"PractitionerRole", "RelatedPerson", "Device", "CareTeam"}, structure
        assert "generalPractitioner" not in _one(result, "Patient")
        assert [p for r in result.resources for p in validate_resource(r)] == []
