"""Mapping files: the schema and `hub mappings check` report file and line of a fault; overlays merge."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hub.mapping import check_mappings
from hub.mapping._loader import MappingFileError, load_maps
from tests.mapping._support import ROOT

MAPPINGS = ROOT / "mappings"


def test_the_shipped_mappings_are_valid() -> None:
    assert check_mappings(MAPPINGS) == []


@pytest.fixture
def maps_copy(tmp_path: Path) -> Path:
    target = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, target)
    return target


def test_a_schema_fault_names_file_and_line(maps_copy: Path) -> None:
    path = maps_copy / "segments" / "PID.Patient.yaml"
    lines = path.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if "PID-7" in line)
    lines[at] = "  - {path: PID7, target: birthDate, datatype: DT}"
    path.write_text("\n".join(lines) + "\n")
    (problem,) = check_mappings(maps_copy)
    assert problem.file == path and problem.line == at + 1
    assert "PID7" in problem.message


def test_unknown_function_vocab_and_map_are_faults(maps_copy: Path) -> None:
    path = maps_copy / "segments" / "AL1.AllergyIntolerance.yaml"
    text = path.read_text().replace("vocab: allergy-category", "vocab: no-such-table")
    text = text.replace("function: concept_text", "function: eval_python")
    path.write_text(text)
    messages = sorted(p.message for p in check_mappings(maps_copy))
    assert messages == ["unknown transform 'eval_python'", "unknown vocab 'no-such-table'"]
    assert all(p.line > 1 for p in check_mappings(maps_copy))


def test_overlay_faults_are_reported(maps_copy: Path) -> None:
    (maps_copy / "senders" / "rsud_contoh" / "sender.yaml").write_text("sender: x\ntime_zone: Mars/Olympus\n")
    problems = check_mappings(maps_copy)
    assert [p.message for p in problems] == ["unknown time zone 'Mars/Olympus'"]
    with pytest.raises(MappingFileError):
        load_maps(maps_copy, "rsud_contoh")


def test_overlay_merges_without_forking_the_base(maps_copy: Path) -> None:
    base = load_maps(maps_copy)
    overlay = load_maps(maps_copy, "rsud_contoh")
    assert "local-lab-codes" in overlay.vocabs and "local-lab-codes" not in base.vocabs
    # The overlay's authority joins the base table instead of replacing it.
    assert overlay.vocabs["identifier-authorities"].get("NIK") == base.vocabs["identifier-authorities"].get(
        "NIK"
    )
    assert overlay.vocabs["identifier-authorities"].get("RSC")
    assert overlay.time_zone == "Asia/Makassar" and base.time_zone is None
    assert (
        "ZPI" in overlay.messages["ADT^A01"].by_segment and "ZPI" not in base.messages["ADT^A01"].by_segment
    )
    # Changed field choice: only the OBX code field differs from the base map.
    assert len(overlay.segment_maps["OBX.Observation"].fields) == len(
        base.segment_maps["OBX.Observation"].fields
    )


def test_a_missing_mappings_directory_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(MappingFileError) as err:
        load_maps(tmp_path / "nowhere")
    assert "HUB_MAPPINGS_DIR" in err.value.message
    assert [p.message for p in check_mappings(tmp_path / "nowhere")] == ["mappings directory does not exist"]


def test_edited_maps_are_picked_up_and_a_broken_edit_keeps_the_last_good_ones(
    maps_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from hub.mapping import _loader

    monkeypatch.setattr(_loader, "RECHECK_SECONDS", 0.0)
    first = load_maps(maps_copy)
    assert load_maps(maps_copy) is first  # unchanged files: the same compiled maps
    vocab = maps_copy / "vocab" / "administrative-gender.yaml"
    vocab.write_text(vocab.read_text().replace("F: female", "F: female, W: female"))
    os.utime(vocab, ns=(10**19, 10**19))
    second = load_maps(maps_copy)
    assert second is not first and second.vocabs["administrative-gender"].get("W") == "female"
    vocab.write_text("vocab: administrative-gender\ncodes: [not, a, table]\n")
    os.utime(vocab, ns=(2 * 10**19, 2 * 10**19))
    assert load_maps(maps_copy) is second
    assert [p.file for p in _loader.stale_problems(maps_copy)] == [vocab]
