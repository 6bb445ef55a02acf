"""Golden tests: every fixture message in fixtures/hl7 maps to exactly its expected output in
fixtures/expected (resources, MPI actions, unmapped report, explicit nulls, warnings), and every resource
is valid FHIR R4 (R4B models). Regenerate after a deliberate map change with HUB_UPDATE_GOLDEN=1."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from hub.fhir.validate import validate_resource
from tests.mapping._support import EXPECTED_DIR, HL7_DIR, map_file

UPDATE = os.environ.get("HUB_UPDATE_GOLDEN") == "1"

BASE = sorted(p for p in HL7_DIR.glob("*.hl7"))
OVERLAY = sorted(p for p in (HL7_DIR / "senders").glob("*/*.hl7"))


# Overlay fixtures live in fixtures/hl7/senders/<overlay>/ and come from that hospital.
FACILITY_OF_OVERLAY = {"rsud_contoh": "RSUD_CONTOH"}


def _context(path: Path) -> tuple[str, str | None]:
    rel = path.relative_to(HL7_DIR)
    if rel.parts[0] == "senders":
        return FACILITY_OF_OVERLAY[rel.parts[1]], rel.parts[1]
    return "RSUD_SEHAT", None


@pytest.mark.parametrize("path", BASE + OVERLAY, ids=lambda p: str(p.relative_to(HL7_DIR)))
def test_fixture_matches_golden_output(path: Path) -> None:
    facility, overlay = _context(path)
    result = map_file(path, facility=facility, overlay=overlay)
    actual = {
        "resources": result.resources,
        "actions": result.actions,
        "unmapped": result.unmapped,
        "nulls": result.nulls,
        "warnings": result.warnings,
    }
    if result.cancels:  # the earlier event an ADT cancel sets aside (A12, A13, A55, A62 …)
        actual["cancels"] = result.cancels
    if result.replaces:  # the participant type an ADT change replaces (A54, A61)
        actual["replaces"] = result.replaces
    expected_path = EXPECTED_DIR / path.relative_to(HL7_DIR).with_suffix(".json")
    if UPDATE:
        expected_path.parent.mkdir(parents=True, exist_ok=True)
        expected_path.write_text(json.dumps(actual, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    expected = json.loads(expected_path.read_text(encoding="utf-8"))
    assert actual == expected


@pytest.mark.parametrize("path", BASE + OVERLAY, ids=lambda p: str(p.relative_to(HL7_DIR)))
def test_fixture_resources_are_valid_fhir_r4(path: Path) -> None:
    facility, overlay = _context(path)
    result = map_file(path, facility=facility, overlay=overlay)
    assert result.resources or result.actions
    problems = [p for resource in result.resources for p in validate_resource(resource)]
    assert problems == []


def test_every_required_message_family_has_a_fixture() -> None:
    names = {p.stem for p in BASE}
    required = {f"adt_a{n:02d}" for n in range(1, 18)} | {
        "adt_a28", "adt_a29", "adt_a31", "adt_a34", "adt_a40", "adt_a47", "adt_a60",
        "oru_r01", "oul_r22", "vxu_v04", "orm_o01", "oml_o21", "rde_o11", "rds_o13",
        "mdm_t02", "mdm_t06", "siu_s12", "siu_s13", "siu_s14", "siu_s15",
    }  # fmt: skip
    assert required <= names, sorted(required - names)
