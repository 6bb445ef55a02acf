"""A pipeline batch holds its new search-index rows, resource versions and message links and writes them
at its end, one INSERT per table (``hub.store.deferred``): what lands must be exactly what writing them
message by message gives, whatever the batch rewrites of its own earlier rows and whichever of its
messages fail."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, text

from hub import pipeline
from hub.config import Settings
from hub.db import session_scope
from hub.ingest.service import Intake
from hub.store import deferred
from hub.store.search_index import INDEX_MODELS
from tests.builders import adt
from tests.ordering import burst


def _index(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every index table's rows (by the resource's type and id, not its pk, and values), the versions
    (without their time) and the message links, sorted."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for kind, model in INDEX_MODELS.items():
            table = model.__table__
            columns = [c.name for c in table.columns if c.name not in ("row_id", "resource_pk")]
            rows = conn.execute(text(f"SELECT {', '.join(columns)} FROM {table.name}")).all()
            out[kind] = sorted(tuple(str(v) for v in row) for row in rows)
        versions = "SELECT resource_type, id, version_id, deleted, message_id FROM resource_version"
        out["versions"] = sorted(tuple(str(v) for v in row) for row in conn.execute(text(versions)))
        links = "SELECT message_id, resource_type, resource_id, version_id FROM message_resource"
        out["links"] = sorted(tuple(str(v) for v in row) for row in conn.execute(text(links)))
    return out


def _clear(engine: Engine) -> None:
    with engine.begin() as conn:
        for model in INDEX_MODELS.values():
            conn.execute(text(f"DELETE FROM {model.__table__.name}"))
        for table in (
            "message_resource",
            "resource_contribution",
            "resource_version",
            "mpi_decision",
            "mpi_review",
            "mpi_block",
        ):
            conn.execute(text(f"DELETE FROM {table}"))
        conn.execute(text("DELETE FROM mpi_source"))
        for table in ("stats_fact", "stats_person"):  # the statistics facts of the resources removed
            conn.execute(text(f"DELETE FROM {table}"))
        conn.execute(text("DELETE FROM resource"))
        conn.execute(text("UPDATE inbound_message SET state = 'received', attempts = 0"))


def _count_flushes(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Each flush of held rows, True when it ran inside a message's savepoint."""
    calls: list[bool] = []
    real = deferred.Held.flush

    def counted(self: deferred.Held, session: Any) -> None:
        calls.append(self._mark is not None)
        real(self, session)

    monkeypatch.setattr(deferred.Held, "flush", counted)
    return calls


def test_a_batch_indexes_exactly_what_message_by_message_processing_does(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A01, A08, A03 of several patients (the MPI links them to shared golden records) in one batch:
    later messages rewrite the Patients, Encounters and goldens that earlier ones wrote, with their rows
    still held."""
    intake = Intake(engine, Settings())
    ids = [intake.accept(raw).message_id for raw in burst(6, "DX")]
    with session_scope(engine) as s:
        for mid in ids:
            pipeline.process_batch(s, [mid])  # no batch: every write indexed at once
    one_by_one = _index(engine)
    assert one_by_one["token"] and one_by_one["reference"] and one_by_one["versions"] and one_by_one["links"]
    _clear(engine)
    flushes = _count_flushes(monkeypatch)
    with session_scope(engine) as s:
        outcomes = pipeline.process_batch(s, ids)
    assert {o.state for o in outcomes} == {"processed"} and len(outcomes) == len(ids)
    assert _index(engine) == one_by_one
    assert (
        True in flushes and False in flushes
    )  # rewrites found their rows held, before and inside savepoints


def test_a_failing_message_takes_its_rows_and_no_one_elses(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The third message is another record of the first one's person: only the identity step finds that
    it rewrites the first one's golden Patient, so the held rows are written inside its savepoint. Then it
    fails: the rollback takes those rows away, and they must be written again at the batch's end, while
    nothing of the third message's own stays."""
    intake = Intake(engine, Settings())
    raws = [
        adt("F1", "A01", mrn="F1", visit="V1"),
        adt("F2", "A01", mrn="F2", visit="V2", family="Wibowo", given="Sari"),
        adt("F3", "A01", mrn="F9", visit="V9"),
    ]
    ids = [intake.accept(r.encode()).message_id for r in raws]
    with session_scope(engine) as s:
        pipeline.process_batch(s, ids[:2])
    expected = _index(engine)  # what the first two leave: the third must add nothing
    _clear(engine)
    real = pipeline._record_written

    def failing(session: Any, message_id: int, written: Any) -> None:
        real(session, message_id, written)  # after its resources and their index rows were written
        if message_id == ids[2]:
            raise RuntimeError("the third message fails last")

    monkeypatch.setattr(pipeline, "_record_written", failing)
    flushes = _count_flushes(monkeypatch)
    with session_scope(engine) as s:
        outcomes = pipeline.process_batch(s, ids)
    assert [o.state for o in outcomes] == ["processed", "processed", "failed"]
    assert flushes[0] is True  # the golden's rows were written inside the failing message's savepoint
    assert _index(engine) == expected
