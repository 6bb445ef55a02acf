"""`hub mappings check` and `hub mappings try`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from hub.cli import app
from tests.mapping._support import HL7_DIR, ROOT

runner = CliRunner()


def test_check_passes_on_the_shipped_mappings() -> None:
    result = runner.invoke(app, ["mappings", "check", "--dir", str(ROOT / "mappings")])
    assert result.exit_code == 0, result.output
    assert "are valid" in result.output


def test_check_fails_with_file_and_line(tmp_path: Path) -> None:
    root = tmp_path / "mappings"
    shutil.copytree(ROOT / "mappings", root)
    bad = root / "vocab" / "administrative-gender.yaml"
    bad.write_text(bad.read_text() + "unexpected_key: 1\n")
    result = runner.invoke(app, ["mappings", "check", "--dir", str(root)])
    assert result.exit_code == 1
    assert f"{bad}:" in result.output and "unexpected_key" in result.output


def test_try_prints_the_bundle_and_the_unmapped_report() -> None:
    result = runner.invoke(app, ["mappings", "try", str(HL7_DIR / "adt_a04.hl7")])
    assert result.exit_code == 0, result.output
    bundle_text, _, report = result.output.partition("\nunmapped (")
    bundle = json.loads(bundle_text)
    assert bundle["resourceType"] == "Bundle"
    assert {e["resource"]["resourceType"] for e in bundle["entry"]} >= {"Patient", "Encounter", "Provenance"}
    assert report.startswith("0):")


def test_try_with_an_overlay_and_an_unknown_type(tmp_path: Path) -> None:
    zpi = HL7_DIR / "senders" / "rsud_contoh" / "adt_a01_zpi.hl7"
    plain = runner.invoke(app, ["mappings", "try", str(zpi)])
    assert "ZPI-2" in plain.output
    with_overlay = runner.invoke(app, ["mappings", "try", str(zpi), "--sender", "rsud_contoh"])
    assert with_overlay.exit_code == 0 and "ZPI-2" not in with_overlay.output
    qry = tmp_path / "q.hl7"
    qry.write_bytes(zpi.read_bytes().replace(b"ADT^A01", b"QRY^A19"))
    result = runner.invoke(app, ["mappings", "try", str(qry)])
    assert result.exit_code == 0 and "no message map: mapped by segment" in result.output
    only_unknown = tmp_path / "z.hl7"
    only_unknown.write_bytes(b"MSH|^~\\&|SIMRS|RSUD_SEHAT|||20260301||QRY^A19|C1|P|2.5.1\rQRD|x|R\r")
    result = runner.invoke(app, ["mappings", "try", str(only_unknown)])
    assert result.exit_code == 1 and "no map for message type QRY^A19" in result.output
