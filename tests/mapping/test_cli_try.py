"""`hub mappings try` over several files, folders and batches: one Bundle per message, --ndjson."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from hub.cli import app
from hub.mapping import patient_id
from tests.mapping._support import HL7_DIR

runner = CliRunner()

QUERY = b"MSH|^~\\&|SIMRS|RSUD_SEHAT|||20261102||QRY^A19|Q0001|P|2.5.1\rQRD|20261102|R|I|Q1\r"


def a_days_feed(root: Path) -> Path:
    """Four messages in three files: two single ones and an HL7 batch (FHS/BHS … BTS/FTS) of two, in a
    subfolder, beside a file that holds no HL7 v2."""
    feed = root / "feed"
    (feed / "batches").mkdir(parents=True)
    shutil.copy(HL7_DIR / "oru_r01.hl7", feed / "oru_r01.hl7")
    shutil.copy(HL7_DIR / "zlb_z01_by_segment.hl7", feed / "site_type.txt")
    batch = b"FHS|^~\\&|SIMRS|RSUD_SEHAT\rBHS|^~\\&|SIMRS|RSUD_SEHAT\r"
    batch += (HL7_DIR / "adt_a01.hl7").read_bytes() + (HL7_DIR / "adt_a03.hl7").read_bytes()
    batch += b"BTS|2\rFTS|1\r"
    (feed / "batches" / "day.hl7").write_bytes(batch)
    (feed / "README.md").write_text("notes, not messages\n")
    return feed


def test_a_folder_as_ndjson_is_one_line_per_message(tmp_path: Path) -> None:
    result = runner.invoke(app, ["mappings", "try", "--ndjson", str(a_days_feed(tmp_path))])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 4
    parsed = [json.loads(line) for line in lines]
    assert all(p["bundle"]["resourceType"] == "Bundle" and p["bundle"]["entry"] for p in parsed)
    assert [(Path(p["file"]).name, p["message"], p["type"]) for p in parsed] == [
        ("day.hl7", 1, "ADT^A01"),
        ("day.hl7", 2, "ADT^A03"),
        ("oru_r01.hl7", 1, "ORU^R01"),
        ("site_type.txt", 1, "ZLB^Z01"),
    ]
    by_segment = parsed[3]
    assert by_segment["warnings"] == ["no message map: mapped by segment"]
    assert by_segment["unmapped"][0]["note"] == "no message map: mapped by segment"
    assert all(p["invalid"] == [] for p in parsed)
    summary = result.stderr.strip().splitlines()[-1]
    assert summary.startswith("4 message(s) in 3 file(s): 4 mapped (1 by segment: no message map), 0 failed")
    assert "1 file(s) in the folders hold no HL7 v2" in summary


def test_files_and_folders_print_one_bundle_each_and_a_failure_sets_the_exit_status(tmp_path: Path) -> None:
    feed = a_days_feed(tmp_path)
    query = tmp_path / "query.hl7"
    query.write_bytes(QUERY)
    result = runner.invoke(app, ["mappings", "try", "--no-validate", str(query), str(feed / "batches")])
    assert result.exit_code == 1
    headers = [line for line in result.stdout.splitlines() if line.startswith("== ")]
    assert headers == [
        f"== {feed / 'batches' / 'day.hl7'} [1] ADT^A01 ADTA010001",
        f"== {feed / 'batches' / 'day.hl7'} [2] ADT^A03 ADTA030001",
    ]
    assert result.stdout.count('"resourceType": "Bundle"') == 2
    assert f"{query} [1]: not mapped (no-map): no map for message type QRY^A19" in result.stderr
    assert "3 message(s) in 2 file(s): 2 mapped, 1 failed (no-map 1)" in result.stderr
    one_batch = runner.invoke(app, ["mappings", "try", "--no-validate", str(feed / "batches" / "day.hl7")])
    assert one_batch.exit_code == 0
    assert [line for line in one_batch.stdout.splitlines() if line.startswith("== ")] == headers
    assert "2 message(s) in 1 file(s): 2 mapped, 0 failed" in one_batch.stderr
    as_ndjson = runner.invoke(app, ["mappings", "try", "--ndjson", str(query), str(feed / "oru_r01.hl7")])
    assert as_ndjson.exit_code == 1
    failed, mapped = (json.loads(line) for line in as_ndjson.stdout.splitlines())
    assert failed["bundle"] is None and failed["error"]["code"] == "no-map"
    assert mapped["bundle"]["resourceType"] == "Bundle" and "error" not in mapped


def test_one_file_prints_its_bundle_first_and_facility_sets_the_ids() -> None:
    """What tools reading the first JSON object of the output rely on: one message, no header line, no
    summary; --facility and --no-validate as before."""
    path = str(HL7_DIR / "adt_a04.hl7")
    result = runner.invoke(app, ["mappings", "try", "--no-validate", "--facility", "RS_LAIN", path])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("{") and result.stderr == ""
    bundle, _ = json.JSONDecoder().raw_decode(result.stdout)
    (patient,) = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    mrn = next(
        i for i in patient["identifier"] if i.get("type", {}).get("coding", [{}])[0].get("code") == "MR"
    )
    assert patient["id"] == patient_id("RS_LAIN", mrn["value"], "RSUD_SEHAT")
    own = runner.invoke(app, ["mappings", "try", path])
    assert json.JSONDecoder().raw_decode(own.stdout)[0] != bundle


def test_a_folder_without_messages_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("nothing here\n")
    result = runner.invoke(app, ["mappings", "try", str(tmp_path)])
    assert result.exit_code == 1
    assert "0 message(s) in 0 file(s)" in result.stderr
