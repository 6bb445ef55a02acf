"""The accept benchmark runs end to end on a small count (its figures are for `make bench`, not tests)."""

from __future__ import annotations

import pytest

from bench import accept_bench


def test_accept_bench_reports_cpu_per_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        accept_bench.main(["-n", "9", "--per-commit", "4", "--window", "8"]) == 0
    )  # foreign options ignored
    out = capsys.readouterr().out
    assert "accept (SQLite): 9 ORU^R01, 4 a commit:" in out and "ms CPU per message" in out
