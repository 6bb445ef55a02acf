"""What the maps must guarantee beyond the golden files: encounter status per trigger, the NIK and BPJS
systems, deterministic ids that survive reordering, corrections updating the same Observation, patient
references, MPI actions, explicit nulls, the unmapped report and sender overlays."""

from __future__ import annotations

import json

import pytest

from hub.errors import MappingError
from hub.mapping import patient_id
from tests.mapping._support import HL7_DIR, by_type, map_file, map_text, read

NIK = "https://fhir.kemkes.go.id/id/nik"


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("adt_a01", "in-progress"),
        ("adt_a02", "in-progress"),
        ("adt_a03", "finished"),
        ("adt_a04", "planned"),
        ("adt_a05", "planned"),
        ("adt_a11", "cancelled"),
        ("adt_a13", "in-progress"),
        ("adt_a14", "planned"),
    ],
)
def test_encounter_status_comes_from_the_trigger(name: str, status: str) -> None:
    (encounter,) = by_type(map_file(HL7_DIR / f"{name}.hl7"), "Encounter")
    assert encounter["status"] == status


def test_a08_with_discharge_date_finishes_the_encounter() -> None:
    text = read(HL7_DIR / "adt_a08.hl7")
    pv1 = next(line for line in text.split("\r") if line.startswith("PV1"))
    fields = pv1.split("|") + [""] * 50
    fields[45] = "20261105120000"
    text = text.replace(pv1, "|".join(fields[:46]))
    (encounter,) = by_type(map_text(text), "Encounter")
    assert encounter["status"] == "finished"
    assert encounter["period"] == {"start": "2026-11-01T08:00:00+07:00", "end": "2026-11-05T12:00:00+07:00"}


def test_nik_and_bpjs_identifiers_get_national_systems() -> None:
    (patient,) = by_type(map_file(HL7_DIR / "adt_a01.hl7"), "Patient")
    systems = {i["value"]: i["system"] for i in patient["identifier"]}
    assert systems["3171234567890001"] == NIK  # PID-3 repeat of type NNIDN
    assert systems["0001234567890"] == "https://fhir.kemkes.go.id/id/bpjs"  # authority BPJS, type SN
    assert systems["RM001234"].startswith("urn:hub:id:RSUD_SEHAT")


def test_patient_id_is_the_exported_helper_and_every_resource_points_at_it() -> None:
    result = map_file(HL7_DIR / "adt_a01.hl7")
    (patient,) = by_type(result, "Patient")
    assert patient["id"] == patient_id("RSUD_SEHAT", "RM001234", "RSUD_SEHAT")
    ref = {"reference": f"Patient/{patient['id']}"}
    for resource in result.resources:
        for key in ("subject", "patient", "beneficiary"):
            if key in resource:
                assert resource[key] == ref, resource["resourceType"]


def test_ids_are_deterministic_across_runs() -> None:
    first = map_file(HL7_DIR / "oru_r01.hl7")
    second = map_file(HL7_DIR / "oru_r01.hl7")
    assert [r["id"] for r in first.resources] == [r["id"] for r in second.resources]


def test_reordered_obx_and_a_correction_keep_observation_ids() -> None:
    original = map_file(HL7_DIR / "oru_r01.hl7")
    resent = map_file(HL7_DIR / "oru_r01_reordered.hl7")
    # Result observations only (the specimen group OBX is not in the resent message).
    ids = {o["id"] for o in by_type(original, "Observation") if "specimen" in o and "encounter" in o}
    ids_resent = {o["id"] for o in by_type(resent, "Observation")}
    assert ids == ids_resent and len(ids) == 10
    glucose = next(o for o in by_type(resent, "Observation") if o["code"]["coding"][0]["code"] == "2345-7")
    assert glucose["status"] == "corrected"
    assert glucose["valueQuantity"]["value"] == 245
    assert glucose["id"] in ids


def test_diagnostic_report_results_and_specimen_observations_are_kept_apart() -> None:
    result = map_file(HL7_DIR / "oru_r01.hl7")
    (report,) = by_type(result, "DiagnosticReport")
    (specimen,) = by_type(result, "Specimen")
    results = {r["reference"] for r in report["result"]}
    spm_obs = [o for o in by_type(result, "Observation") if f"Observation/{o['id']}" not in results]
    assert len(results) == 10 and len(spm_obs) == 1
    assert spm_obs[0]["code"]["coding"][0]["code"] == "20233-3"
    assert spm_obs[0]["specimen"] == {"reference": f"Specimen/{specimen['id']}"}
    assert report["specimen"] == [{"reference": f"Specimen/{specimen['id']}"}]


def test_observation_values_by_type() -> None:
    obs = {
        o["code"]["coding"][0]["code"]: o for o in by_type(map_file(HL7_DIR / "oru_r01.hl7"), "Observation")
    }
    assert obs["718-7"]["valueQuantity"] == {
        "value": 13.5,
        "unit": "gram per deciliter",
        "system": "http://unitsofmeasure.org",
        "code": "g/dL",
    }
    assert obs["2160-0"]["valueQuantity"]["comparator"] == "<"
    assert obs["5778-6"]["valueRatio"] == {"numerator": {"value": 1}, "denominator": {"value": 128}}
    assert obs["5767-9"]["valueRange"] == {"low": {"value": 10}, "high": {"value": 20}}
    assert obs["94500-6"]["valueCodeableConcept"]["coding"][0]["system"] == "http://snomed.info/sct"
    # TX repetitions are lines; escapes are resolved after splitting.
    assert obs["11526-1"]["valueString"] == "Baris satu\nBaris dua dengan | pipa ^ topi & dan \\"
    assert obs["22637-3"]["valueString"] == "Kesimpulan:\nTidak ada keganasan.\ndr. A"
    assert obs["8665-2"]["valueDateTime"] == "2026-10-15"
    assert obs["2345-7"]["note"] == [{"text": "Hasil dikoreksi setelah kalibrasi ulang."}]
    # The translated interpretation comes first; the sender's code is kept beside it.
    codings = obs["2345-7"]["interpretation"][0]["coding"]
    assert [c["code"] for c in codings] == ["HH", "HH"]
    assert codings[1]["system"] == "http://terminology.hl7.org/CodeSystem/v2-0078"


def test_one_provenance_targets_every_resource() -> None:
    result = map_file(HL7_DIR / "adt_a01.hl7")
    (prov,) = by_type(result, "Provenance")
    assert result.resources[-1] is prov
    targets = {t["reference"] for t in prov["target"]}
    assert targets == {f"{r['resourceType']}/{r['id']}" for r in result.resources[:-1]}
    assert prov["recorded"] == "2026-11-01T08:30:00+07:00"


def test_provenance_id_follows_the_stored_message_id_when_given() -> None:
    text = read(HL7_DIR / "adt_a01.hl7")
    a = by_type(map_text(text, message_id=41), "Provenance")[0]["id"]
    b = by_type(map_text(text, message_id=42), "Provenance")[0]["id"]
    c = by_type(map_text(text), "Provenance")[0]["id"]
    assert len({a, b, c}) == 3
    assert by_type(map_text(text, message_id=41), "Provenance")[0]["id"] == a


def test_merge_actions() -> None:
    survivor = patient_id("RSUD_SEHAT", "RM001234", "RSUD_SEHAT")
    retired = patient_id("RSUD_SEHAT", "RM000777", "RSUD_SEHAT")
    for name in ("adt_a40", "adt_a34"):
        assert map_file(HL7_DIR / f"{name}.hl7").actions == [
            {"type": "merge", "survivor": survivor, "retired": retired}
        ]


def test_change_identifier_and_unlink_actions() -> None:
    (change,) = map_file(HL7_DIR / "adt_a47.hl7").actions
    assert change["type"] == "change-identifier"
    assert change["patient"] == patient_id("RSUD_SEHAT", "RM001234", "RSUD_SEHAT")
    assert change["old"]["value"] == "RM001234" and change["new"]["value"] == "RM555000"
    (unlink,) = map_file(HL7_DIR / "adt_a37.hl7").actions
    assert unlink == {
        "type": "unlink",
        "patients": [
            patient_id("RSUD_SEHAT", "RM001234", "RSUD_SEHAT"),
            patient_id("RSUD_SEHAT", "RM009876", "RSUD_SEHAT"),
        ],
    }


def test_explicit_null_is_reported_and_distinct_from_empty() -> None:
    result = map_file(HL7_DIR / "adt_a08.hl7")
    (patient,) = by_type(result, "Patient")
    assert "telecom" not in patient and "maritalStatus" not in patient
    nulled = {(n["path"], n["element"]) for n in result.nulls}
    assert nulled == {("PID-13", "telecom[]"), ("PID-16", "maritalStatus")}  # PID-14 was empty, not ""


def test_unmapped_report_lists_unused_fields_and_z_segments() -> None:
    text = read(HL7_DIR / "adt_a04.hl7") + "ZVI|1|VIP^Very important|x\r"
    result = map_text(text)
    zvi = [u for u in result.unmapped if u["segment"] == "ZVI"]
    assert [(u["field"], u["value"]) for u in zvi] == [(2, "VIP^Very important"), (3, "x")]
    assert zvi[0]["name"] == "" and zvi[0]["index"] == 4
    assert all(u["segment"] != "PID" for u in result.unmapped)  # every sent PID field is mapped


def test_unknown_message_type_is_rejected_with_a_reason() -> None:
    # No message map, and none of its segments has a segment map (with a PID it would be mapped by
    # segment: tests/mapping/test_fallback.py).
    msh = read(HL7_DIR / "adt_a01.hl7").split("\r", 1)[0].replace("ADT^A01^ADT_A01", "QRY^A19^QRY_A19")
    text = msh + "\rQRD|20260301|R|I|Q1|||1^RD|RM-001234|DEM\r"
    with pytest.raises(MappingError) as err:
        map_text(text)
    assert err.value.code == "no-map"
    assert "QRY^A19" in err.value.message


def test_a29_marks_the_source_patient_inactive() -> None:
    (patient,) = by_type(map_file(HL7_DIR / "adt_a29.hl7"), "Patient")
    assert patient["active"] is False


def test_overlay_time_zone_z_segment_and_local_codes() -> None:
    folder = HL7_DIR / "senders" / "rsud_contoh"
    adt = map_file(folder / "adt_a01_zpi.hl7", facility="RSUD_CONTOH", overlay="rsud_contoh")
    (patient,) = by_type(adt, "Patient")
    assert {"system": NIK, "value": "7371012345670002"}.items() <= patient["identifier"][1].items()
    assert patient["identifier"][0]["system"] == "https://rsud-contoh.example.id/fhir/id/mrn"
    (encounter,) = by_type(adt, "Encounter")
    assert encounter["period"]["start"] == "2026-11-01T08:00:00+08:00"  # WITA, not the server's zone
    assert not [u for u in adt.unmapped if u["segment"] == "ZPI"]
    # Without the overlay the same message keeps its ZPI unmapped and reads times in the sender's zone.
    base = map_file(folder / "adt_a01_zpi.hl7", facility="RSUD_CONTOH")
    assert [u["field"] for u in base.unmapped if u["segment"] == "ZPI"] == [2]
    assert by_type(base, "Encounter")[0]["period"]["start"].endswith("+07:00")
    oru = map_file(folder / "oru_r01_local_codes.hl7", facility="RSUD_CONTOH", overlay="rsud_contoh")
    codes = {o["code"]["coding"][-1]["code"]: o["code"]["coding"] for o in by_type(oru, "Observation")}
    assert codes["HB"][0] == {
        "system": "http://loinc.org",
        "code": "718-7",
        "display": "Hemoglobin [Mass/volume] in Blood",
    }
    assert codes["HB"][1]["code"] == "HB"  # original kept beside the translation
    assert len(codes["XYZ"]) == 1  # unknown local code: kept as sent


def test_sender_time_zone_is_used_when_no_offset_is_sent() -> None:
    text = read(HL7_DIR / "adt_a01.hl7")
    result = map_text(text, time_zone="Asia/Jayapura")
    (encounter,) = by_type(result, "Encounter")
    assert encounter["period"]["start"] == "2026-11-01T08:00:00+09:00"
    # MSH-7 carried its own offset: kept as sent.
    assert by_type(result, "Provenance")[0]["recorded"] == "2026-11-01T08:30:00+07:00"


def test_an_oru_with_two_patients_links_each_result_to_its_own_patient() -> None:
    text = read(HL7_DIR / "oru_r01_reordered.hl7")
    second = (
        "PID|1||RM009876^^^RSUD_SEHAT^MR||Lestari^Dewi||19920302|F\r"
        "OBR|1|PO-9^SIMRS|LAB-9^LIS|24323-8^Comprehensive metabolic panel^LN|||20261101070000\r"
        "OBX|1|NM|718-7^Hemoglobin^LN||11.2|g/dL^^UCUM|||||F\r"
    )
    result = map_text(text + second)
    patients = {p["identifier"][0]["value"]: p["id"] for p in by_type(result, "Patient")}
    assert set(patients) == {"RM001234", "RM009876"}
    hb = [o for o in by_type(result, "Observation") if o["code"]["coding"][0]["code"] == "718-7"]
    assert sorted(o["subject"]["reference"] for o in hb) == sorted(f"Patient/{i}" for i in patients.values())
    reports = by_type(result, "DiagnosticReport")
    assert {r["subject"]["reference"] for r in reports} == {f"Patient/{i}" for i in patients.values()}


def test_document_date_is_an_instant_even_from_a_bare_date() -> None:
    text = read(HL7_DIR / "mdm_t02.hl7").replace("|20261105110000|", "|20261105|", 1)
    (doc,) = by_type(map_text(text), "DocumentReference")
    assert doc["date"] == "2026-11-05T00:00:00+07:00"


def test_a_choice_element_takes_one_type_the_later_field_wins() -> None:
    """PID-24 (multiple birth flag) and PID-25 (birth order) both map to multipleBirth[x]; so do PID-30
    and PID-29 to deceased[x]. FHIR allows one type per choice: the more specific, later field wins."""
    text = read(HL7_DIR / "adt_a01.hl7")
    pid = next(line for line in text.split("\r") if line.startswith("PID"))
    fields = pid.split("|") + [""] * 40
    fields[24], fields[25] = "Y", "2"
    fields[29], fields[30] = "20261102101500+0700", "Y"
    text = text.replace(pid, "|".join(fields[:31]))
    (patient,) = by_type(map_text(text), "Patient")
    assert patient["multipleBirthInteger"] == 2 and "multipleBirthBoolean" not in patient
    assert patient["deceasedDateTime"].startswith("2026-11-02T10:15") and "deceasedBoolean" not in patient


def test_remembered_codes_are_not_shared_between_messages() -> None:
    """Coded values (CWE, vocabulary translations, units, identifier systems) are remembered across
    messages for speed; a caller changing one result must not change the next one."""
    text = read(HL7_DIR / "oru_r01.hl7")
    expected = map_text(text).resources
    pristine = [json.loads(json.dumps(r)) for r in expected]
    for res in map_text(text).resources:  # mutate everything nested in a second result
        for value in res.values():
            if isinstance(value, dict):
                value["mutated"] = True
                for item in value.get("coding", []):
                    item["code"] = "mutated"
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, dict):
                        item["mutated"] = True
                value.append("mutated")
    assert map_text(text).resources == pristine
