"""A message type without a message map of its own is mapped by its segments (messages/_default.yaml);
SFT → Device in every message; a message none of whose segments maps still fails no-map."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub.errors import MappingError
from hub.fhir.validate import validate_resource
from hub.mapping import check_mappings, configure
from tests.mapping._support import HL7_DIR, ROOT, by_type, map_text, read

BY_SEGMENT = "no message map: mapped by segment"
MSH = "MSH|^~\\&|SIMRS|RSUD_SEHAT|HUB|KEMKES|20261102091500+0700||{type}|C-{type}|P|2.5.1"
PID = "PID|1||RM007788^^^RSUD_SEHAT^MR||Lubis^Rina^^^Ny.||19910304|F"
PV1 = "PV1|1|O|POLI-ANAK^^^RSUD_SEHAT|" + "|" * 15 + "V0777^^^RSUD_SEHAT^VN"
OBX = "OBX|1|NM|8867-4^Heart rate^LN||72|/min^per minute^UCUM|||||F|||20261102090000+0700"


def message(kind: str, *segments: str) -> str:
    return "\r".join([MSH.format(type=kind), *segments]) + "\r"


def ref(resource: dict[str, object]) -> dict[str, str]:
    return {"reference": f"{resource['resourceType']}/{resource['id']}"}


def test_a_type_without_a_map_becomes_patient_encounter_and_observation() -> None:
    result = map_text(message("ZZZ^Z01", PID, PV1, OBX))
    (patient,) = by_type(result, "Patient")
    (encounter,) = by_type(result, "Encounter")
    (observation,) = by_type(result, "Observation")
    assert encounter["subject"] == ref(patient)
    assert observation["subject"] == ref(patient) and observation["encounter"] == ref(encounter)
    assert observation["valueQuantity"] == {
        "value": 72,
        "unit": "per minute",
        "system": "http://unitsofmeasure.org",
        "code": "/min",
    }
    assert result.warnings == [BY_SEGMENT]
    assert result.unmapped[0] == {
        "segment": "MSH",
        "index": 0,
        "field": 9,
        "name": "Message Type",
        "value": "ZZZ^Z01",
        "note": BY_SEGMENT,
    }
    (provenance,) = by_type(result, "Provenance")
    assert {t["reference"] for t in provenance["target"]} >= {  # type: ignore[attr-defined]
        ref(r)["reference"] for r in (patient, encounter, observation)
    }
    assert [p for r in result.resources for p in validate_resource(r)] == []


def test_the_same_segments_map_as_they_do_in_a_message_map() -> None:
    """The fallback's Patient is the ADT^A01's Patient (same map, same id): one record, not two."""
    by_segment = map_text(message("ZZZ^Z01", PID, PV1))
    admitted = map_text(message("ADT^A01^ADT_A01", "EVN|A01|20261102091500", PID, PV1))
    assert by_type(by_segment, "Patient") == by_type(admitted, "Patient")
    assert by_type(by_segment, "Encounter")[0]["id"] == by_type(admitted, "Encounter")[0]["id"]
    assert BY_SEGMENT not in admitted.warnings and "note" not in str(admitted.unmapped)


def test_results_hang_under_their_order_and_notes_under_their_result() -> None:
    obr = "OBR|1|PO-7001^SIMRS|LAB-7001^LIS|58410-2^CBC panel^LN|||20261102083000+0700"
    nte = "NTE|1|L|Sampel sedikit hemolisis."
    result = map_text(message("ZLB^Z02", PID, PV1, obr, OBX, nte))
    (request,) = by_type(result, "ServiceRequest")
    (report,) = by_type(result, "DiagnosticReport")
    (observation,) = by_type(result, "Observation")
    assert report["result"] == [ref(observation)] and report["basedOn"] == [ref(request)]
    assert observation["basedOn"] == [ref(request)]
    assert observation["note"] == [{"text": "Sampel sedikit hemolisis."}]


def test_a_message_of_unknown_segments_still_fails_no_map() -> None:
    with pytest.raises(MappingError) as err:
        map_text(message("ZZZ^Z02", "ZQ1|1|antrian 14", "QRD|20261102|R|I|Q1"))
    assert err.value.code == "no-map" and "ZZZ^Z02" in err.value.message
    # The software segment alone is not the message's content: still no-map.
    with pytest.raises(MappingError) as err:
        map_text(message("ZZZ^Z02", "SFT|Sehat Informatika|4.1.0|SIMRS Sehat|SS-410", "ZQ1|1|x"))
    assert err.value.code == "no-map"


def test_software_segments_become_devices_the_provenance_names() -> None:
    sft = "SFT|Sehat Informatika^L|4.1.0|SIMRS Sehat|SS-410||20250110"
    relay = "SFT|Jembatan Integrasi|1.2|Jembatan HL7|JB-12"
    text = read(HL7_DIR / "oru_r01.hl7")
    msh, rest = text.split("\r", 1)
    result = map_text("\r".join([msh, sft, relay, rest]))
    first, second = by_type(result, "Device")
    assert first["manufacturer"] == "Sehat Informatika" and first["modelNumber"] == "SS-410"
    assert first["deviceName"] == [{"type": "manufacturer-name", "name": "SIMRS Sehat"}]
    assert first["version"] == [
        {
            "value": "4.1.0",
            "extension": [
                {
                    "url": "https://hl7.org/fhir/5.0/StructureDefinition/extension-Device.version.installDate",
                    "valueDateTime": "2025-01-10",
                }
            ],
        }
    ]
    (provenance,) = by_type(result, "Provenance")
    entities = provenance["entity"]
    assert {"role": "source", "what": ref(first)} in entities  # type: ignore[operator]
    assert {"role": "derivation", "what": ref(second)} in entities  # type: ignore[operator]
    assert ref(first) not in provenance["target"]  # type: ignore[operator]
    assert BY_SEGMENT not in result.warnings  # ORU^R01 has its own map
    assert [p for r in result.resources for p in validate_resource(r)] == []
    # The same software at the same facility is one Device, whatever the message.
    again = map_text(message("ZZZ^Z01", sft, PID))
    assert by_type(again, "Device")[0]["id"] == first["id"]


@pytest.fixture
def maps_copy(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", root)
    configure(root)
    yield root
    configure(ROOT / "mappings")


def test_a_segment_map_added_later_is_used_without_editing_the_fallback(maps_copy: Path) -> None:
    (maps_copy / "segments" / "ZKB.Flag.yaml").write_text(
        "segment: ZKB\nresource: Flag\nfields:\n"
        "  - {target: status, value: active}\n"
        "  - {path: ZKB-2, target: code.text}\n"
        "  - {ref: PID.Patient, target: subject}\n"
    )
    # Two maps for one segment: which applies where is the fallback's to say, so neither is guessed.
    for name in ("ZKC.Flag", "ZKC.Basic"):
        (maps_copy / "segments" / f"{name}.yaml").write_text(
            f"segment: ZKC\nresource: {name.split('.')[1]}\nfields:\n  - {{path: ZKC-2, target: code.text}}\n"
        )
    assert check_mappings(maps_copy) == []
    result = map_text(message("ZZZ^Z03", PID, "ZKB|1|Risiko jatuh", "ZKC|1|x"))
    (flag,) = by_type(result, "Flag")
    (patient,) = by_type(result, "Patient")
    assert flag["code"] == {"text": "Risiko jatuh"} and flag["subject"] == ref(patient)
    assert [u["segment"] for u in result.unmapped] == ["MSH", "ZKC"]
    # exclude: a map the fallback must not pick up; the other map of ZKC is then the only one.
    default = maps_copy / "messages" / "_default.yaml"
    default.write_text(default.read_text() + "exclude: [ZKC.Basic]\n")
    assert check_mappings(maps_copy) == []
    result = map_text(message("ZZZ^Z03", PID, "ZKB|1|Risiko jatuh", "ZKC|1|x"))
    assert sorted(f["code"]["text"] for f in by_type(result, "Flag")) == ["Risiko jatuh", "x"]  # type: ignore[index]
    assert [u["segment"] for u in result.unmapped] == ["MSH"]


def test_fallback_faults_are_reported(maps_copy: Path) -> None:
    second = maps_copy / "messages" / "_second.yaml"
    second.write_text("message: _second\nfallback: true\nresources:\n  - {segment: PV1, map: PID.Patient}\n")
    problems = [str(p) for p in check_mappings(maps_copy)]
    assert any("a second fallback map" in p for p in problems), problems
    second.write_text(
        "message: _second\nevents: [ZZZ^Z09]\nevery_message:\n  - {segment: SFT, map: SFT.Device}\n"
    )
    problems = [str(p) for p in check_mappings(maps_copy)]
    assert any("every_message and exclude belong in the fallback map" in p for p in problems), problems
    second.write_text(
        "message: _second\nevents: [ZZZ^Z09]\nresources:\n  - {segment: PV1, map: PID.Patient}\n"
    )
    problems = [str(p) for p in check_mappings(maps_copy)]
    assert any("maps PID, not PV1" in p for p in problems), problems
