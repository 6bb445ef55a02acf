"""Pharmacy (RDE/RAS/VXU), scheduling (SIU), documents (MDM), finance (DFT), problems (PPR) and referrals
(REF): what the maps make, and that a later cancel, delete or no-show acts on the resource the earlier
message made (same id, a status rather than a removal)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hub.fhir.validate import validate_resource
from tests.mapping._support import HL7_DIR, ROOT, by_type, map_file, map_text, read

FAMILIES = ("rde_", "ras_", "vxu_", "rds_", "omp_", "rgv_", "siu_", "mdm_", "dft_", "ppr_", "ref_")
CORPUS = ROOT.parent / "shared" / "corpus"


def one(result: Any, resource_type: str) -> dict[str, Any]:
    found = by_type(result, resource_type)
    assert len(found) == 1, [r["id"] for r in found]
    return found[0]


def test_siu_cancel_no_show_and_delete_act_on_the_appointment_s12_made() -> None:
    booked = one(map_file(HL7_DIR / "siu_s12_full.hl7"), "Appointment")
    cancelled = one(map_file(HL7_DIR / "siu_s15_cancel.hl7"), "Appointment")
    deleted = one(map_file(HL7_DIR / "siu_s17.hl7"), "Appointment")
    no_show = one(map_file(HL7_DIR / "siu_s26.hl7"), "Appointment")
    assert booked["status"] == "booked"
    assert cancelled["id"] == deleted["id"] == no_show["id"] == booked["id"]
    # SCH-25 still says Booked in the S15/S17: the trigger decides.
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancelationReason"]["coding"][0]["code"] == "BATAL"
    assert deleted["status"] == "entered-in-error"
    assert no_show["status"] == "noshow"


def test_siu_participants_are_the_patient_practitioners_locations_and_resources() -> None:
    result = map_file(HL7_DIR / "siu_s12_full.hl7")
    appt = one(result, "Appointment")
    actors = [p["actor"].get("reference", "") for p in appt["participant"]]
    kinds = {a.split("/")[0] for a in actors if a}
    assert {"Patient", "Practitioner", "Location"} <= kinds
    aip = next(
        p for p in appt["participant"] if p.get("type", [{}])[0].get("coding", [{}])[0].get("code") == "AT"
    )
    assert aip["period"]["start"] == "2026-11-15T10:00:00+07:00"
    assert aip["status"] == "accepted"
    aig = next(p for p in appt["participant"] if "identifier" in p["actor"])
    assert aig["actor"] == {"identifier": {"value": "USG-01"}, "display": "Mesin USG 1"}
    assert appt["serviceType"][0]["coding"][0]["code"] == "POLI-ANAK"
    assert appt["comment"] == "Bawa buku KIA"
    assert appt["appointmentType"]["coding"][0]["code"] == "ROUTINE"  # SCH-8 in table 0276/0277
    assert appt["reasonCode"][0]["coding"][0]["code"] == "KONTROL"  # SCH-7 not in table 0277


def test_siu_s23_declines_the_practitioner_it_carries() -> None:
    appt = one(map_file(HL7_DIR / "siu_s23.hl7"), "Appointment")
    practitioner = next(
        p
        for p in appt["participant"]
        if p["actor"]["reference"].startswith("Practitioner/") and "period" in p
    )
    assert practitioner["status"] == "declined"
    assert appt["status"] == "booked"


def test_mdm_t11_cancels_the_document_t02_made() -> None:
    original = one(map_file(HL7_DIR / "mdm_t02_full.hl7"), "DocumentReference")
    cancel = map_file(HL7_DIR / "mdm_t11.hl7")
    cancelled = one(cancel, "DocumentReference")
    assert original["status"] == "current"
    assert cancelled["id"] == original["id"]
    assert cancelled["status"] == "entered-in-error"
    assert cancelled["content"] == [{"attachment": {"title": "konsul_5001.txt"}}]  # T11 carries no OBX
    assert validate_resource(cancelled) == []
    assert original["securityLabel"][0]["coding"][0]["code"] == "R"
    assert {i["value"] for i in original["identifier"]} == {"konsul_5001.txt", "RX-1002"}
    custodian = next(
        r for r in map_file(HL7_DIR / "mdm_t02_full.hl7").resources if r["resourceType"] == "Organization"
    )
    assert original["custodian"]["reference"] == f"Organization/{custodian['id']}"
    assert custodian["identifier"] == [{"system": "urn:ietf:rfc:3986", "value": "urn:oid:2.16.360.1.1"}]


def test_mdm_notification_without_content_is_still_a_document() -> None:
    doc = one(map_file(HL7_DIR / "mdm_t01.hl7"), "DocumentReference")
    assert doc["docStatus"] == "preliminary"
    assert doc["status"] == "current"  # TXA-19 UN: exists, not yet available
    assert doc["content"][0]["attachment"]["title"] == "konsul_5002.txt"


def test_mdm_addendum_points_at_the_parent_documents_own_id() -> None:
    parent = one(map_file(HL7_DIR / "mdm_t02.hl7"), "DocumentReference")
    addendum = one(map_file(HL7_DIR / "mdm_t06.hl7"), "DocumentReference")
    assert addendum["relatesTo"] == [
        {"code": "appends", "target": {"reference": f"DocumentReference/{parent['id']}"}}
    ]


def test_ppr_pc2_updates_and_pc3_deletes_the_problem_pc1_added() -> None:
    added = one(map_file(HL7_DIR / "ppr_pc1.hl7"), "Condition")
    updated = one(map_file(HL7_DIR / "ppr_pc2.hl7"), "Condition")
    deleted = one(map_file(HL7_DIR / "ppr_pc3.hl7"), "Condition")
    assert added["id"] == updated["id"] == deleted["id"]
    assert added["category"][0]["coding"][0]["code"] == "problem-list-item"
    assert added["clinicalStatus"]["coding"][0]["code"] == "active"
    assert added["verificationStatus"]["coding"][0]["code"] == "confirmed"
    assert added["note"] == [{"text": "Kontrol gula darah tiap bulan"}]
    assert updated["clinicalStatus"]["coding"][0]["code"] == "resolved"
    assert updated["abatementDateTime"] == "2026-12-01T09:00:00+07:00"
    assert deleted["verificationStatus"]["coding"][0]["code"] == "entered-in-error"
    assert "clinicalStatus" not in deleted  # FHIR con-5
    assert validate_resource(deleted) == []


def test_ref_i12_referral_with_its_referring_and_referred_to_parties() -> None:
    result = map_file(HL7_DIR / "ref_i12.hl7")
    sr = one(result, "ServiceRequest")
    made = {f"{r['resourceType']}/{r['id']}": r for r in result.resources}
    assert sr["status"] == "active"
    assert sr["priority"] == "routine"
    assert sr["identifier"][0]["value"] == "RUJ-2026-0001"
    assert sr["reasonCode"][0]["coding"][0]["code"] == "P"
    requester = made[sr["requester"]["reference"]]
    assert requester["resourceType"] == "Practitioner"
    assert requester["name"][0]["family"] == "Rahayu"
    performers = [made[p["reference"]] for p in sr["performer"]]
    assert [p["resourceType"] for p in performers] == ["Practitioner", "Organization"]
    assert performers[1]["identifier"] == [{"system": "urn:ietf:rfc:3986", "value": "urn:oid:2.16.360.1.1"}]
    # The puskesmas the referral comes from is an Organization too.
    assert any(r["resourceType"] == "Organization" and r["name"] == "PKM_SEHAT" for r in result.resources)
    cancelled = one(map_file(HL7_DIR / "ref_i14.hl7"), "ServiceRequest")
    assert cancelled["id"] == sr["id"]
    assert cancelled["status"] == "revoked"


def test_rde_with_tq1_has_one_dosage_with_timing_route_and_dose() -> None:
    mr = one(map_file(HL7_DIR / "rde_o11_tq1.hl7"), "MedicationRequest")
    assert len(mr["dosageInstruction"]) == 1
    dosage = mr["dosageInstruction"][0]
    repeat = dosage["timing"]["repeat"]
    assert (repeat["frequency"], repeat["period"], repeat["periodUnit"]) == (3, 1, "d")
    assert repeat["boundsPeriod"] == {
        "start": "2026-11-01T12:00:00+07:00",
        "end": "2026-11-06T12:00:00+07:00",
    }
    assert repeat["countMax"] == 15
    assert dosage["route"]["coding"][0]["code"] == "PO"
    assert dosage["site"]["coding"][0]["code"] == "MTH"
    assert dosage["doseAndRate"][0]["doseQuantity"]["value"] == 500
    assert mr["priority"] == "routine"
    assert mr["reasonCode"][0]["coding"][0]["code"] == "J06.9"
    types = {i.get("type", {}).get("coding", [{}])[0].get("code") for i in mr["identifier"]}
    assert {"PLAC", "FILL"} <= types


def test_each_order_of_an_rde_gets_the_timing_and_route_of_its_own_group() -> None:
    text = read(HL7_DIR / "rde_o11_tq1.hl7")
    segs = [s for s in text.split("\r") if s]
    order = segs[3:]
    second = [
        s.replace("RX-1002", "RX-1009").replace("TID^Tiga", "BID^Dua").replace("PO^Oral", "IV^Intravenous")
        for s in order
    ]
    result = map_text("\r".join([*segs, *second]) + "\r")
    by_order = {r["identifier"][0]["value"]: r for r in by_type(result, "MedicationRequest")}
    assert set(by_order) == {"RX-1002", "RX-1009"}
    first_dose = by_order["RX-1002"]["dosageInstruction"][0]
    second_dose = by_order["RX-1009"]["dosageInstruction"][0]
    assert first_dose["timing"]["repeat"]["frequency"] == 3
    assert second_dose["timing"]["repeat"]["frequency"] == 2
    assert first_dose["route"]["coding"][0]["code"] == "PO"
    assert second_dose["route"]["coding"][0]["code"] == "IV"


def test_ras_non_vaccine_is_a_medication_administration_of_the_order() -> None:
    result = map_file(HL7_DIR / "ras_o17.hl7")
    admin = one(result, "MedicationAdministration")
    order = one(result, "MedicationRequest")
    assert by_type(result, "Immunization") == []
    assert admin["request"] == {"reference": f"MedicationRequest/{order['id']}"}
    assert admin["effectivePeriod"] == {
        "start": "2026-11-01T14:30:00+07:00",
        "end": "2026-11-01T14:35:00+07:00",
    }
    assert admin["dosage"]["route"]["coding"][0]["code"] == "IV"
    assert admin["performer"][0]["function"]["coding"][0]["code"] == "AP"
    vxu = map_file(HL7_DIR / "vxu_v04.hl7")
    assert len(by_type(vxu, "Immunization")) == 1
    assert by_type(vxu, "MedicationAdministration") == []


def test_dft_charges_with_account_and_procedure() -> None:
    result = map_file(HL7_DIR / "dft_p03.hl7")
    charges = {c["identifier"][0]["value"]: c for c in by_type(result, "ChargeItem")}
    assert set(charges) == {"TRX-5001", "TRX-5002"}
    lab = charges["TRX-5001"]
    assert lab["code"]["coding"][0]["code"] == "LAB-HB"
    assert lab["quantity"] == {"value": 1}
    assert lab["priceOverride"] == {"value": 45000, "currency": "IDR"}
    assert lab["occurrencePeriod"] == {
        "start": "2026-11-01T09:00:00+07:00",
        "end": "2026-11-01T09:30:00+07:00",
    }
    account = one(result, "Account")
    assert account["identifier"][0]["value"] == "ACC-2026-0099"
    assert lab["account"] == [{"reference": f"Account/{account['id']}"}]
    procedure = one(result, "Procedure")  # only the FT1 with an FT1-25 procedure code
    assert procedure["code"]["coding"][0]["code"] == "85018"
    assert lab["service"] == [{"reference": f"Procedure/{procedure['id']}"}]
    assert "service" not in charges["TRX-5002"]
    p11 = map_file(HL7_DIR / "dft_p11.hl7")
    assert one(p11, "ChargeItem")["account"] == lab["account"]  # the same patient account


def _fixtures() -> list[Path]:
    return sorted(p for p in HL7_DIR.glob("*.hl7") if p.name.startswith(FAMILIES))


@pytest.mark.parametrize("path", _fixtures(), ids=lambda p: p.name)
def test_every_reference_resolves_to_a_resource_the_message_made(path: Path) -> None:
    result = map_file(path)
    made = {f"{r['resourceType']}/{r['id']}" for r in result.resources}

    def refs(value: Any) -> list[str]:
        if isinstance(value, dict):
            own = [value["reference"]] if isinstance(value.get("reference"), str) else []
            return own + [r for v in value.values() for r in refs(v)]
        if isinstance(value, list):
            return [r for v in value for r in refs(v)]
        return []

    # An addendum's relatesTo points at the parent document an earlier message made.
    earlier = {rel["target"]["reference"] for res in result.resources for rel in res.get("relatesTo", [])}
    pointed = {r for res in result.resources for r in refs(res)} - earlier
    # The Encounter belongs to the ADT feed (reference_only); everything else must be made here.
    missing = {r for r in pointed - made if not r.startswith("Encounter/")}
    assert missing == set()
    assert result.warnings == []


CORPUS_FILES = [
    "google-hdh/rde_o01_ex1.hl7",
    "google-hdh/rde_o01_ex2.hl7",
    "google-hdh/rde_o01_ex3.hl7",
    "v2-to-fhir-ig/Message.hl7_MDM_T02.txt",
]


@pytest.mark.parametrize("name", CORPUS_FILES)
def test_corpus_pharmacy_and_document_messages_map(name: str) -> None:
    path = CORPUS / name
    if not path.exists():
        pytest.skip(f"the shared corpus is not here ({path})")
    result = map_file(path)
    wanted = "DocumentReference" if "MDM" in name else "MedicationRequest"
    assert by_type(result, wanted)
    # The IG's sample sends a placeholder "<Base64 encoded>" as its PDF: the one warning expected.
    assert [w for w in result.warnings if "not valid Base64" not in w] == []
    for res in by_type(result, wanted):
        assert validate_resource(res) == []


def test_omp_rxo_order_as_requested() -> None:
    mr = one(map_file(HL7_DIR / "omp_o09.hl7"), "MedicationRequest")
    assert mr["intent"] == "original-order"
    assert mr["priority"] == "stat"  # TQ1-9
    dose = mr["dosageInstruction"][0]["doseAndRate"][0]["doseRange"]
    assert (dose["low"]["value"], dose["high"]["value"]) == (5, 10)
    assert mr["dosageInstruction"][0]["timing"]["repeat"]["period"] == 8
    assert mr["dispenseRequest"]["quantity"]["value"] == 1


def test_rde_without_rxe_timing_reads_the_orc_timing() -> None:
    text = read(HL7_DIR / "rde_o11.hl7").replace("RXE|^^^20261101100000|", "RXE||")
    text = text.replace(
        "ORC|NW|RX-1001^SIMRS|||||||2026",
        "ORC|NW|RX-1001^SIMRS|||||^BID^^20261101100000^20261105100000^R||2026",
    )
    mr = one(map_text(text), "MedicationRequest")
    timing = mr["dosageInstruction"][0]["timing"]
    assert timing["code"]["coding"][0]["code"] == "BID"
    assert timing["repeat"]["boundsPeriod"]["end"] == "2026-11-05T10:00:00+07:00"
    assert mr["priority"] == "routine"


def test_every_trigger_semantic_has_a_fixture() -> None:
    names = {p.stem for p in HL7_DIR.glob("*.hl7")}
    required = {
        "dft_p03", "dft_p11", "ras_o17", "rde_o11_tq1", "omp_o09", "siu_s12_full", "siu_s15_cancel",
        "siu_s17", "siu_s23", "siu_s26", "mdm_t01", "mdm_t02_full", "mdm_t11", "ppr_pc1", "ppr_pc2",
        "ppr_pc3", "ref_i12", "ref_i14",
    }  # fmt: skip
    assert required <= names, sorted(required - names)


def test_appointment_end_from_the_duration_when_the_message_gives_none() -> None:
    full = read(HL7_DIR / "siu_s12_full.hl7")
    no_end = one(
        map_text(full.replace("^^20^20261115100000^20261115102000", "^^20^20261115100000")), "Appointment"
    )
    assert (no_end["start"], no_end["end"]) == ("2026-11-15T10:00:00+07:00", "2026-11-15T10:20:00+07:00")
    hours = full.replace("^^20^20261115100000^20261115102000", "").replace("|20|MIN|", "|1|H|")
    from_ais = one(map_text(hours), "Appointment")  # start AIS-4, duration SCH-9 in hours
    assert (from_ais["start"], from_ais["end"]) == ("2026-11-15T10:00:00+07:00", "2026-11-15T11:00:00+07:00")
    assert "minutesDuration" not in from_ais  # SCH-9 is not in minutes


def test_rgv_give_is_an_instance_order_based_on_the_order() -> None:
    result = map_file(HL7_DIR / "rgv_o15.hl7")
    orders = {r["intent"]: r for r in by_type(result, "MedicationRequest")}
    assert set(orders) == {"order", "instance-order"}
    give = orders["instance-order"]
    assert give["basedOn"] == [{"reference": f"MedicationRequest/{orders['order']['id']}"}]
    assert (
        give["dosageInstruction"][0]["timing"]["repeat"]["boundsPeriod"]["start"]
        == "2026-11-01T14:00:00+07:00"
    )
    assert give["dosageInstruction"][0]["text"] == "Berikan sesudah makan siang"
    assert "identifier" not in give


@pytest.mark.parametrize("name", ["ppr_pc1.hl7", "ref_i12.hl7"])
def test_problem_and_referral_observations_under_their_obr(name: str) -> None:
    extra = "OBR|1||LAB-77^SIMRS|4548-4^HbA1c^LN|||20261101080000\rOBX|1|NM|4548-4^HbA1c^LN||8.1|%^percent^UCUM|||||F\r"
    result = map_text(read(HL7_DIR / name) + extra)
    obs = one(result, "Observation")
    assert obs["code"]["coding"][0]["code"] == "4548-4"
    assert obs["valueQuantity"]["value"] == 8.1
    assert result.warnings == []
