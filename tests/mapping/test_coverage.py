"""`hub mappings coverage`: every row of every IG segment map, mapped by which map and target, or why not."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hub.cli import DEFAULT_IG, app
from hub.mapping.coverage import STATUSES, CoverageError, coverage_report, render_markdown, render_text
from tests.mapping._support import ROOT

runner = CliRunner()
IG = ROOT.parent / "shared" / "v2-to-fhir-maps"
HEADER = [
    ["HL7 v2", "", "", "", "", "", "Condition (IF True)", "", "", "HL7 FHIR"],
    [
        *("Sort Order", "Identifier", "Name", "Data Type", "Min", "Max", "ANTLR", "FHIRPath", "Narrative"),
        *("FHIR Attribute", "", "Data Type", "Min", "Max", "Data Type Mapping", "Vocabulary", "Assignment"),
    ],
]


def ig_table(folder: Path, name: str, rows: list[tuple[str, str, str, str]]) -> None:
    """One IG segment map as the IG publishes it: (sort order, identifier, name, FHIR attribute) rows."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"HL7 Segment - FHIR R4_ {name} - Sheet1.csv").open(
        "w", newline="", encoding="utf-8"
    ) as fh:
        out = csv.writer(fh)
        out.writerows(HEADER)
        for sort, ident, field_name, attribute in rows:
            out.writerow([sort, ident, field_name, "", "", "", "", "", "", attribute])
        out.writerow([])


@pytest.fixture
def synthetic(tmp_path: Path) -> tuple[Path, Path]:
    ig = tmp_path / "ig"
    ig_table(
        ig / "segments",
        "PID[Patient]",
        [
            ("0", "PID", "", "active"),  # a constant the hub sets too: mapped
            ("1", "PID-1", "Set ID", ""),  # the IG maps it to nothing
            ("3", "PID-3", "Patient Identifier List", "identifier[2]"),
            ("5", "PID-5", "Patient Name", "name[1]"),
            ("6", "PID-6", "Mother's Maiden Name", "extension[1].url"),  # not mapped, with a reason
            ("6", "PID-6", "Mother's Maiden Name", "extension[1].valueString"),
            ("8", "PID-8", "Administrative Sex", "gender"),  # missing
        ],
    )
    ig_table(ig / "segments", "PID[Account]", [("18", "PID-18", "Patient Account Number", "identifier")])
    ig_table(
        ig / "segments",
        "PID[Provenance-Patient]",  # a whole IG map the hub declines
        [("0", "PID", "", "activity"), ("3", "PID-3", "Patient Identifier List", "target")],
    )
    ig_table(
        ig / "segments",
        "MSH[Provenance-Source]",
        [
            ("5", "MSH-5", "Receiving Application", "entity[3].what"),
            ("7", "MSH-7", "Date/Time of Message", "recorded"),
            ("22", "MSH-22", "Sending Responsible Organization", "agent[2].who"),
        ],
    )
    maps = tmp_path / "mappings"
    (maps / "segments").mkdir(parents=True)
    (maps / "messages").mkdir()
    (maps / "segments" / "PID.Patient.yaml").write_text(
        "segment: PID\nresource: Patient\nfields:\n"
        "  - {target: active, value: true}\n"
        "  - {path: PID-3, target: 'identifier[]'}\n"
        "  - {path: PID-5, target: 'name[].text'}\n"
        "  - {path: PID-18, target: 'identifier[]'}\n"
        "not_mapped:\n"
        "  PID-6: The mother's maiden name is not kept (no consent for it).\n"
        "  PID[Provenance-Patient]: One Provenance per message names the patient's resources.\n"
    )
    (maps / "coverage.yaml").write_text(
        "engine:\n  MSH-7: [Provenance.recorded]\nnot_mapped:\n  MSH-5: The receiving application is the hub.\n"
    )
    return ig, maps


def test_the_report_of_a_synthetic_ig_has_exact_totals(synthetic: tuple[Path, Path]) -> None:
    ig, maps = synthetic
    report = coverage_report(ig, maps)
    assert [m.name for m in report.maps] == [
        "MSH[Provenance-Source]",
        "PID[Account]",
        "PID[Patient]",
        "PID[Provenance-Patient]",
    ]
    assert report.totals() == {
        "rows": 13,
        "mapped": 4,  # the PID constant, PID-3, PID-5, MSH-7 (by the engine)
        "not-mapped": 5,  # PID-6 twice, PID[Provenance-Patient] twice, MSH-5
        "other": 1,  # PID-18 goes into the Patient, not an Account
        "missing": 2,  # PID-8, MSH-22
        "ig-none": 1,  # PID-1
    }
    by_field = {(m.name, r.field, r.attribute): r for m in report.maps for r in m.rows}
    pid3 = by_field[("PID[Patient]", "PID-3", "identifier[2]")]
    assert pid3.status == "mapped"
    assert [(u.map, u.file, u.target) for u in pid3.by] == [
        ("PID.Patient", "segments/PID.Patient.yaml", "identifier[]")
    ]
    assert by_field[("PID[Patient]", "", "active")].status == "mapped"
    assert by_field[("PID[Patient]", "PID-6", "extension[1].url")].reason.startswith(
        "The mother's maiden name"
    )
    assert by_field[("PID[Patient]", "PID-8", "gender")].status == "missing"
    assert by_field[("PID[Account]", "PID-18", "identifier")].status == "other"
    assert by_field[("PID[Provenance-Patient]", "PID-3", "target")].reason.startswith("One Provenance")
    msh7 = by_field[("MSH[Provenance-Source]", "MSH-7", "recorded")]
    assert (msh7.status, msh7.by[0].map, msh7.by[0].target) == ("mapped", "engine", "recorded")
    assert by_field[("MSH[Provenance-Source]", "MSH-5", "entity[3].what")].status == "not-mapped"
    segments = {s["segment"]: s["totals"] for s in report.as_json()["segments"]}
    assert segments["PID"] == {
        "rows": 10,
        "mapped": 3,
        "not-mapped": 4,
        "other": 1,
        "missing": 1,
        "ig-none": 1,
    }
    assert segments["MSH"] == {
        "rows": 3,
        "mapped": 1,
        "not-mapped": 1,
        "other": 0,
        "missing": 1,
        "ig-none": 0,
    }


def test_the_command_in_every_format(synthetic: tuple[Path, Path]) -> None:
    ig, maps = synthetic
    base = ["mappings", "coverage", "--ig", str(ig), "--dir", str(maps)]
    as_json = runner.invoke(app, [*base, "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data["totals"]["rows"] == 13 and data["totals"]["mapped"] == 4
    rows = [r for s in data["segments"] for m in s["maps"] for r in m["rows"]]
    assert len(rows) == 13 and {r["status"] for r in rows} == set(STATUSES)
    text = runner.invoke(app, [*base])
    assert text.exit_code == 0
    assert "overall (4 IG segment maps): 13 rows: 4 mapped, 5 not mapped" in text.stdout
    assert "PID-6" in text.stdout and "The mother's maiden name is not kept" in text.stdout
    summary = runner.invoke(app, [*base, "--summary", "--segment", "msh"])
    assert "PID" not in summary.stdout and "MSH[Provenance-Source]: 3 rows: 1 mapped" in summary.stdout
    markdown = runner.invoke(app, [*base, "--format", "markdown"])
    assert "| **all** | | 13 | 4 | 5 | 1 | 2 | 1 | 33.3 |" in markdown.stdout
    assert "## PID[Patient]" in markdown.stdout
    wrong = runner.invoke(app, [*base, "--format", "xml"])
    assert wrong.exit_code == 2


def test_an_absent_ig_folder_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["mappings", "coverage", "--ig", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "no IG segment maps at" in result.stderr and "--ig DIR" in result.stderr
    with pytest.raises(CoverageError):
        coverage_report(tmp_path, ROOT / "mappings")


def test_the_report_builds_over_the_shipped_maps(synthetic: tuple[Path, Path]) -> None:
    """Whatever IG tables are at hand: the shipped maps (every file, coverage.yaml and the not_mapped
    reasons) make a report."""
    ig, _ = synthetic
    report = coverage_report(ig, ROOT / "mappings")
    assert report.totals()["rows"] == 13
    assert render_text(report) and render_markdown(report)
    by_field = {(m.name, r.field, r.attribute): r for m in report.maps for r in m.rows}
    assert by_field[("PID[Patient]", "PID-3", "identifier[2]")].by[0].file == "segments/PID.Patient.yaml"
    assert by_field[("MSH[Provenance-Source]", "MSH-7", "recorded")].by[0].file == "coverage.yaml"


@pytest.mark.skipif(not (IG / "segments").is_dir(), reason=f"the IG's mapping tables are not at {IG}")
def test_the_report_over_the_ig_tables() -> None:
    assert DEFAULT_IG.resolve() == IG.resolve()
    result = runner.invoke(app, ["mappings", "coverage", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    maps = [m for s in data["segments"] for m in s["maps"]]
    assert len(maps) == len(list((IG / "segments").glob("*.csv")))
    totals = data["totals"]
    assert totals["rows"] == sum(m["totals"]["rows"] for m in maps)
    assert totals["rows"] == sum(totals[s] for s in STATUSES)
    for m in maps:
        for row in m["rows"]:
            if row["status"] == "mapped" and row["field"]:
                assert all((ROOT / "mappings" / u["file"]).is_file() for u in row["by"]), row
            if row["status"] == "not-mapped":
                assert row["reason"]
    header = next(m for m in maps if m["ig_map"] == "MSH[MessageHeader]")
    assert {r["status"] for r in header["rows"]} == {"not-mapped", "ig-none"}
    device = next(m for m in maps if m["ig_map"] == "SFT[Device]")
    assert device["totals"]["mapped"] >= 8
