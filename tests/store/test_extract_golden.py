"""``extract_rows`` produces exactly the rows it produced when the golden file was written (the
extraction before it was bound to resource shapes): the same rows, in the same order (the index writer
compares row lists), for every resource of a varied corpus (``tests/store/extract_corpus.py``: the
mapped ORU/ADT/VXU/… fixtures and hand-made corner cases). A change that means to change the rows, or a
new or changed mapping fixture, rewrites the golden file on purpose and reviews its diff."""

from __future__ import annotations

import json
from typing import Any

from bench import extract_bench
from hub.store import search_params
from tests.store.extract_corpus import GOLDEN, corpus, extract_all

REWRITE = "rewrite the golden file (python -m tests.store.extract_corpus --write) and review its diff"


def test_the_corpus_reaches_every_kind_and_the_modifier_rows() -> None:
    golden = json.loads(GOLDEN.read_text())
    assert set(golden) == {name for name, _ in corpus()}, f"the corpus changed: {REWRITE}"
    kinds = {kind for rows in golden.values() for kind, kind_rows in rows.items() if kind_rows}
    assert kinds == {"token", "string", "date", "reference", "quantity", "number", "uri"}
    params = {row[0] for rows in golden.values() for kind_rows in rows.values() for row in kind_rows}
    assert {"identifier:of-type", "general-practitioner:identifier", "combo-code", "phone"} <= params


def test_extract_rows_matches_the_golden_file() -> None:
    golden = json.loads(GOLDEN.read_text())
    actual = extract_all()
    differing = [name for name in golden if actual[name] != golden[name]]
    assert not differing, (
        f"{len(differing)} resources differ, first {differing[0]}: {actual[differing[0]]} (if on purpose: {REWRITE})"
    )


def test_the_same_rows_when_the_shape_cache_is_cleared_between_resources(monkeypatch: Any) -> None:
    """The extraction binds each type's parameters to the key tuples it sees and forgets them all when
    the cache is full (clients may send any keys): with room for one shape, every resource is bound
    afresh or after another type's, and the rows are still the golden ones."""
    monkeypatch.setattr(search_params, "_MAX_SHAPES", 1)
    monkeypatch.setattr(search_params, "_SHAPES", {})
    golden = json.loads(GOLDEN.read_text())
    assert extract_all() == golden
    assert len(search_params._SHAPES) == 1


def test_bench_extract_reports_the_rows_of_the_pipeline_message(capsys: Any) -> None:
    """``python -m bench extract`` maps the pipeline benchmark's ORU^R01 and extracts it: 14 resources
    (Patient, ServiceRequest, DiagnosticReport, 10 Observations, Provenance) and their 134 index rows."""
    assert extract_bench.main(["-n", "3", "--repeat", "1", "--families", extract_bench.PIPELINE_ORU]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith(extract_bench.PIPELINE_ORU) and "(14 resources, 134 rows)" in line
