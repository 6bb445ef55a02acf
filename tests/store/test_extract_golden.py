"""``extract_rows`` produces exactly the rows it produced when the golden file was written (the
extraction before it was specialised per resource type): the same rows, in the same order, for every
resource of a varied corpus (``tests/store/extract_corpus.py``: the mapped ORU/ADT/VXU/… fixtures and
hand-made corner cases). A change that means to change the rows rewrites the golden file on purpose."""

from __future__ import annotations

import json

from tests.store.extract_corpus import GOLDEN, corpus, extract_all


def test_the_corpus_reaches_every_kind_and_the_modifier_rows() -> None:
    golden = json.loads(GOLDEN.read_text())
    assert set(golden) == {name for name, _ in corpus()}
    kinds = {kind for rows in golden.values() for kind, kind_rows in rows.items() if kind_rows}
    assert kinds == {"token", "string", "date", "reference", "quantity", "number", "uri"}
    params = {row[0] for rows in golden.values() for kind_rows in rows.values() for row in kind_rows}
    assert {"identifier:of-type", "general-practitioner:identifier", "combo-code", "phone"} <= params


def test_extract_rows_matches_the_golden_file() -> None:
    golden = json.loads(GOLDEN.read_text())
    actual = extract_all()
    differing = [name for name in golden if actual[name] != golden[name]]
    assert not differing, f"{len(differing)} resources differ, first {differing[0]}: {actual[differing[0]]}"
