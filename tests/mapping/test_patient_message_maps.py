"""Every message map that makes the PID's Patient also applies the other PID maps (PID-21 mother,
PID-34 last update) and, where the message structure carries a PD1, both PD1 maps: a message family
added later does not silently drop those fields into the unmapped report."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

MESSAGES = Path(__file__).resolve().parents[2] / "mappings" / "messages"
# HL7 v2.5.1 structures without a PD1 in their PATIENT part (MDM, REF/RRI, ADT_A60).
NO_PD1 = {"MDM_T02", "REF_I12", "ADT_A60"}


def _maps_of(path: Path) -> set[str]:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {str(e.get("map")) for e in doc.get("resources") or [] if isinstance(e, dict)}


FILES = sorted(p for p in MESSAGES.glob("*.yaml") if "PID.Patient" in _maps_of(p))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_message_maps_with_a_patient_apply_every_patient_map(path: Path) -> None:
    maps = _maps_of(path)
    assert {"PID.RelatedPersonMother", "PID.Provenance"} <= maps
    if path.stem not in NO_PD1:
        assert {"PD1.Patient", "PD1.LivingWill"} <= maps
