"""``hub import`` (files of messages, HL7 batch files) and ``hub send`` (MLLP client against a real
``hub serve``)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from hub.cli import app
from hub.config import get_settings
from hub.hl7 import parse
from hub.store.models import InboundMessage
from tests.builders import adt, oru
from tests.processes import HubProcess, free_port, hub_env, hub_run

runner = CliRunner()


@pytest.fixture
def cli_env(
    database_url: str, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The CLI runs in this process on the test's (emptied) database."""
    for key in ("HUB_BROKER_URL", "HUB_DATABASE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HUB_DATABASE_URL", database_url)
    monkeypatch.setenv("HUB_VAR_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    yield database_url
    get_settings.cache_clear()


def _ends(text: str, end: str) -> str:
    return text.replace("\r", end)


def _summary(output: str) -> dict[str, int]:
    line = next(ln for ln in output.splitlines() if " messages: " in ln)
    m = re.fullmatch(
        r"(\d+) messages: (\d+) accepted, (\d+) rejected, (\d+) duplicates, (\d+) held .*", line.strip()
    )
    assert m, line
    total, accepted, rejected, duplicates, held = map(int, m.groups())
    return {
        "total": total,
        "accepted": accepted,
        "rejected": rejected,
        "duplicates": duplicates,
        "held": held,
    }


def test_import_files_and_batches(cli_env: str, engine: Engine, tmp_path: Path) -> None:
    # A plain file: one message each with CR, LF and CRLF segment ends (and a UTF-8 BOM in front).
    plain = tmp_path / "plain.hl7"
    plain.write_bytes(
        b"\xef\xbb\xbf"
        + _ends(adt("F1", mrn="A1"), "\r").encode()
        + _ends(adt("F2", mrn="A2"), "\n").encode()
        + _ends(oru("F3", mrn="A3"), "\r\n").encode()
    )
    # An HL7 batch file: FHS/BHS … BTS/FTS around five messages: two new, a duplicate of F2 (same bytes
    # once the segment ends are normalised), the same control id as F1 with other content (held), and
    # one whose MSH has no MSH-10 (rejected, still kept).
    bad = "MSH|^~\\&|SIMRS|RSUD_SEHAT|HUB|KEMKES|20261101083000+0700||ADT^A01^ADT_A01||P|2.5.1\rPID|1\r"
    batch = tmp_path / "batch.hl7"
    batch.write_text(
        "\r\n".join(
            [
                "FHS|^~\\&|SIMRS|RSUD_SEHAT|HUB|KEMKES|20261101090000+0700",
                "BHS|^~\\&|SIMRS|RSUD_SEHAT|HUB|KEMKES|20261101090000+0700",
                _ends(adt("B1", "A08", mrn="A1"), "\r\n").rstrip(),
                _ends(oru("B2", mrn="A4"), "\r\n").rstrip(),
                _ends(adt("F2", mrn="A2"), "\r\n").rstrip(),
                _ends(adt("F1", mrn="A1", family="Other"), "\r\n").rstrip(),
                bad.replace("\r", "\r\n").rstrip(),
                "BTS|5",
                "FTS|1",
            ]
        )
        + "\r\n",
        newline="",
    )

    result = runner.invoke(app, ["import", str(plain), str(batch)])
    assert result.exit_code == 0, result.output
    assert _summary(result.output) == {"total": 8, "accepted": 5, "rejected": 1, "duplicates": 1, "held": 1}

    with Session(engine) as s:
        rows = list(s.scalars(select(InboundMessage).order_by(InboundMessage.id)))
    assert [r.control_id for r in rows] == ["F1", "F2", "F3", "B1", "B2", "F1", ""]
    assert Counter(r.transport for r in rows) == {"import": 7}
    by_state = Counter(r.state for r in rows)
    assert by_state["held"] == 1 and by_state["rejected"] == 1
    assert rows[1].duplicate_count == 1
    # Stored with CR segment ends, no envelope segments, no BOM.
    assert all(b"\n" not in r.raw and not r.raw.startswith(b"\xef") for r in rows)
    assert not any(r.raw.startswith((b"FHS", b"BHS")) for r in rows)
    assert parse(rows[2].raw.decode()).get("OBX-5") == "1.5"
    # The accepted ones were processed (once) before the command returned.
    accepted = [r for r in rows if r.state not in ("held", "rejected")]
    assert len(accepted) == 5
    assert {r.state for r in accepted} <= {"processed", "failed"}
    assert {r.attempts for r in accepted} == {1}


def test_import_again_is_all_duplicates(cli_env: str, engine: Engine, tmp_path: Path) -> None:
    f = tmp_path / "msgs.hl7"
    f.write_text("".join(adt(f"R{i}", mrn=f"R{i}") for i in range(20)), newline="")
    first = runner.invoke(app, ["import", "--no-process", str(f)])
    assert first.exit_code == 0, first.output
    assert _summary(first.output)["accepted"] == 20
    again = runner.invoke(app, ["import", "--no-process", str(f)])
    assert again.exit_code == 0, again.output
    assert _summary(again.output) == {"total": 20, "accepted": 0, "rejected": 0, "duplicates": 20, "held": 0}
    with Session(engine) as s:
        rows = s.scalars(select(InboundMessage)).all()
    assert len(rows) == 20 and {r.state for r in rows} == {"received"}  # --no-process: left for a worker
    assert {r.duplicate_count for r in rows} == {1}


def test_import_unreadable_file_fails_cleanly(cli_env: str, tmp_path: Path) -> None:
    result = runner.invoke(app, ["import", str(tmp_path / "missing.hl7")])
    assert result.exit_code == 2
    assert "cannot read" in result.output


@pytest.mark.slow
def test_send_prints_each_ack_from_a_running_hub(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'hub.db'}"
    mllp_port = free_port()
    env = hub_env(db_url, tmp_path / "var", HUB_MLLP_PORT=str(mllp_port), HUB_HTTP_PORT=str(free_port()))
    hub_run(["db", "upgrade"], env)
    server = HubProcess(["serve"], env, tmp_path / "serve.log")
    try:
        server.wait_port(mllp_port)
        good = tmp_path / "good.hl7"
        good.write_text(adt("S1", mrn="S1") + "\n" + _ends(oru("S2", mrn="S2"), "\n"), newline="")
        result = runner.invoke(app, ["send", str(good), "--port", str(mllp_port)])
        assert result.exit_code == 0, result.output
        headers = [ln for ln in result.output.splitlines() if ln.startswith("# ")]
        assert headers == [f"# {good}", f"# {good}"]
        msas = [ln for ln in result.output.splitlines() if ln.startswith("MSA|")]
        assert [m.split("|")[1:3] for m in msas] == [["AA", "S1"], ["AA", "S2"]]

        # The duplicate gets its original ACK again; a message the hub rejects makes the exit code 1.
        bad = tmp_path / "bad.hl7"
        bad.write_text(adt("S1", mrn="S1") + "MSH|^~\\&|X|RSUD_SEHAT|HUB|K|2026||ADT^A01||P|2.5\rPID|1\r")
        result = runner.invoke(app, ["send", str(bad), "--port", str(mllp_port)])
        assert result.exit_code == 1, result.output
        msas = [ln.split("|")[1:3] for ln in result.output.splitlines() if ln.startswith("MSA|")]
        assert msas == [["AA", "S1"], ["AR", ""]]
        assert "ERR|" in result.output
    finally:
        server.stop()
    assert "Traceback" not in server.log()


def test_send_without_a_hub_says_so(tmp_path: Path) -> None:
    f = tmp_path / "one.hl7"
    f.write_text(adt("N1"))
    result = runner.invoke(app, ["send", str(f), "--port", str(free_port()), "--timeout", "2"])
    assert result.exit_code == 2
    assert "cannot connect to MLLP" in result.output


def test_the_shipped_batch_file_imports_and_processes(cli_env: str, engine: Engine) -> None:
    """``fixtures/batch/``: the sample batch file the documentation points at loads as it is."""
    batch = Path(__file__).resolve().parent.parent / "fixtures" / "batch" / "pkm_menteng_history.hl7"
    result = runner.invoke(app, ["import", str(batch)])
    assert result.exit_code == 0, result.output
    summary = _summary(result.output)
    assert summary["total"] == summary["accepted"] >= 3, summary
    with Session(engine) as s:
        rows = list(s.scalars(select(InboundMessage)))
    assert len(rows) == summary["accepted"]
    assert {r.state for r in rows} == {"processed"}, [(r.control_id, r.state, r.error_code) for r in rows]
