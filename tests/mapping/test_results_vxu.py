"""VXU V04: an RXA is an Immunization only when it records a vaccine (RXA-5 coded CVX in any coding,
or ATC J07); an RXA of another medicine in the same message is a MedicationAdministration, each with
the route of its own RXR. Synthetic messages only."""

from __future__ import annotations

import shutil
from pathlib import Path

from hub import mapping
from hub.fhir.validate import validate_resource
from tests.mapping._support import by_type, map_text

VXU = "\r".join(
    [
        "MSH|^~\\&|SIMRS|PKM_SEHAT|HUB|KEMKES|20261101083000+0700||VXU^V04^VXU_V04|VXU-M1|P|2.5.1",
        "PID|1||MRN0301^^^PKM_SEHAT^MR||Lestari^Dewi||20250101|F",
        "ORC|RE||IMM-1^SIMRS",
        "RXA|0|1|20261101091500||49281-0215-88^Td vaccine^NDC^09^Td^CVX|0.5|mL^^UCUM||00^New^NIP001",
        "RXR|IM^Intramuscular^HL70162|LA^Left Arm^HL70163",
        "ORC|RE||IMM-2^SIMRS",
        "RXA|0|1|20261101093000||93000001^Parasetamol 120 mg/5 mL sirup^KFA|5|mL^^UCUM",
        "RXR|PO^Oral^HL70162",
        "OBX|1|NM|8310-5^Body temperature^LN|1|38.2|Cel^^UCUM|||||F",
        "ORC|RE||IMM-3^SIMRS",
        "RXA|0|1|20261101094000||J07BC01^Hepatitis B vaccine^ATC|0.5|mL^^UCUM",
    ]
)


def test_vaccines_are_immunizations_and_other_medicines_medication_administrations() -> None:
    result = map_text(VXU)
    assert result.warnings == []
    imms = {i["identifier"][0]["value"]: i for i in by_type(result, "Immunization")}
    meds = {m["identifier"][0]["value"]: m for m in by_type(result, "MedicationAdministration")}
    assert sorted(imms) == ["IMM-1", "IMM-3"]  # NDC with a CVX alternate; ATC J07
    assert sorted(meds) == ["IMM-2"]
    assert imms["IMM-1"]["route"]["coding"][0]["code"] == "IM"
    assert imms["IMM-1"]["site"]["coding"][0]["code"] == "LA"
    paracetamol = meds["IMM-2"]
    assert paracetamol["medicationCodeableConcept"]["coding"][0]["code"] == "93000001"
    assert paracetamol["dosage"]["route"]["coding"][0]["code"] == "PO"
    assert "route" not in imms["IMM-3"]  # the oral route belongs to the paracetamol, not the next vaccine
    # the OBX after the paracetamol is part of its administration
    (temperature,) = by_type(result, "Observation")
    assert temperature["partOf"] == [{"reference": f"MedicationAdministration/{paracetamol['id']}"}]
    assert all(validate_resource(r) == [] for r in result.resources)


def test_an_rxa_without_a_vaccine_code_is_never_both() -> None:
    result = map_text(VXU)
    made = {r["id"] for r in by_type(result, "Immunization")} & {
        r["id"] for r in by_type(result, "MedicationAdministration")
    }
    assert made == set()
    only_drug = map_text(VXU.replace("^CVX|0.5", "^L|0.5"))  # the NDC Td without its CVX alternate
    values = sorted(m["identifier"][0]["value"] for m in by_type(only_drug, "MedicationAdministration"))
    assert values == ["IMM-1", "IMM-2"]


def test_a_sender_overlay_names_its_own_vaccine_codes(tmp_path: Path) -> None:
    maps = tmp_path / "mappings"
    shutil.copytree(mapping.mappings_dir(), maps)
    overlay = maps / "senders" / "pkm_contoh"
    (overlay / "vocab").mkdir(parents=True)
    (overlay / "sender.yaml").write_text("sender: pkm_contoh\n")
    (overlay / "vocab" / "vaccine-codes.yaml").write_text(
        "vocab: vaccine-codes\ncodes:\n  KFA: '9399'  # this formulary's vaccines (synthetic)\n"
    )
    text = VXU.replace("93000001^Parasetamol 120 mg/5 mL sirup^KFA", "93990001^Vaksin contoh^KFA")
    before = mapping.mappings_dir()
    mapping.configure(maps)
    try:
        base = map_text(text)
        local = map_text(text, overlay="pkm_contoh")
    finally:
        mapping.configure(before)
    assert sorted(m["identifier"][0]["value"] for m in by_type(base, "MedicationAdministration")) == ["IMM-2"]
    assert sorted(i["identifier"][0]["value"] for i in by_type(local, "Immunization")) == [
        "IMM-1",
        "IMM-2",
        "IMM-3",
    ]
    assert by_type(local, "MedicationAdministration") == []
