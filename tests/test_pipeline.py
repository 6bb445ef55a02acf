"""The pipeline: state transitions, errors kept as data, per-patient arrival order."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from hub import pipeline
from hub.config import Settings
from hub.db import session_scope
from hub.hl7 import Message
from hub.ingest.service import Intake
from hub.mapping import MappingResult, SenderContext
from hub.store.models import InboundMessage, MessageResource, ResourceVersion
from tests.builders import adt


def _store(engine: Engine, *raws: str) -> list[int]:
    intake = Intake(engine, Settings())
    return [intake.accept(r.encode()).message_id for r in raws]  # type: ignore[misc]


def test_unknown_message_type_fails_with_reason(engine: Engine) -> None:
    # Nothing in it maps: no message map, and no segment map for its segments (a PID would be mapped).
    msh = adt("X1").replace("ADT^A01^ADT_A01", "ZZZ^Z99").split("\r", 1)[0]
    (mid,) = _store(engine, msh + "\rZZ1|1|X1\r")
    with session_scope(engine) as s:
        (outcome,) = pipeline.process_batch(s, [mid])
    assert outcome.state == "failed" and outcome.error_code == "no-map"
    with Session(engine) as s:
        row = s.get(InboundMessage, mid)
        assert row is not None and row.state == "failed" and "ZZZ^Z99" in (row.error_text or "")
        assert row.attempts == 1


def test_patient_order_and_idempotence(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def fake_map(message: Message, ctx: SenderContext) -> MappingResult:
        seen.append(message.get("MSH-10"))
        pid = message.get("PID-3")
        return MappingResult(resources=[{"resourceType": "Basic", "id": f"b-{pid}", "code": {"text": "x"}}])

    monkeypatch.setattr(pipeline, "map_message", fake_map)
    ids = _store(
        engine,
        adt("P1-A01", "A01", mrn="P1"),
        adt("P2-A01", "A01", mrn="P2"),
        adt("P1-A08", "A08", mrn="P1"),
        adt("P1-A03", "A03", mrn="P1"),
    )
    # The A03 task arrives first: the earlier messages of patient P1 are applied before it, in order.
    with session_scope(engine) as s:
        pipeline.process_batch(s, [ids[3]])
    assert seen == ["P1-A01", "P1-A08", "P1-A03"]
    with session_scope(engine) as s:
        outcomes = pipeline.process_batch(s, ids)  # redelivered tasks: only P2 is still pending
    assert [o.message_id for o in outcomes] == [ids[1]]
    assert seen[-1] == "P2-A01" and len(seen) == 4
    with Session(engine) as s:
        assert {r.state for r in s.scalars(select(InboundMessage))} == {"processed"}
        assert len(s.scalars(select(MessageResource)).all()) == 4


def test_failure_in_one_message_does_not_undo_its_neighbours(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def flaky_map(message: Message, ctx: SenderContext) -> MappingResult:
        if message.get("MSH-10") == "BAD":
            raise RuntimeError("boom")
        res: list[dict[str, Any]] = [
            {"resourceType": "Basic", "id": message.get("MSH-10"), "code": {"text": "x"}}
        ]
        return MappingResult(resources=res)

    monkeypatch.setattr(pipeline, "map_message", flaky_map)
    ids = _store(engine, adt("OK1", mrn="A"), adt("BAD", mrn="B"), adt("OK2", mrn="C"))
    with session_scope(engine) as s:
        outcomes = pipeline.process_batch(s, ids)
    assert [o.state for o in outcomes] == ["processed", "failed", "processed"]
    assert outcomes[1].error_code == "internal-error"
    with session_scope(engine) as s:
        again = pipeline.process_batch(s, [ids[1]], force=True)
    assert again[0].state == "failed"


def test_validate_all_fails_an_invalid_mapping(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """HUB_VALIDATE=all: a mapped resource the R4B models reject fails the message with the reason."""

    def bad_map(message: Message, ctx: SenderContext) -> MappingResult:
        return MappingResult(
            resources=[{"resourceType": "Observation", "id": "o1", "status": "not-a-status"}]
        )

    monkeypatch.setattr(pipeline, "map_message", bad_map)
    monkeypatch.setattr(pipeline, "get_settings", lambda: Settings(validate_mode="all"))
    (mid,) = _store(engine, adt("V1"))
    with session_scope(engine) as s:
        (outcome,) = pipeline.process_batch(s, [mid])
    assert outcome.state == "failed" and outcome.error_code == "invalid-resource"
    monkeypatch.setattr(pipeline, "get_settings", lambda: Settings(validate_mode="off"))
    with session_scope(engine) as s:
        (outcome,) = pipeline.process_batch(s, [mid], force=True)
    assert outcome.state == "processed"


def _basic(rid: str, text: str) -> dict[str, Any]:
    return {"resourceType": "Basic", "id": rid, "code": {"text": text}}


def _map_to(monkeypatch: pytest.MonkeyPatch, *resources: dict[str, Any]) -> None:
    """Every message maps to (fresh copies of) ``resources``."""
    monkeypatch.setattr(
        pipeline, "map_message", lambda message, ctx: MappingResult(resources=[dict(r) for r in resources])
    )


def _links(engine: Engine) -> list[tuple[str, int]]:
    with Session(engine) as s:
        rows = s.execute(select(MessageResource.resource_id, MessageResource.version_id))
        return sorted((r.resource_id, r.version_id) for r in rows)


def test_replay_writes_no_new_version_and_keeps_the_message_links(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _map_to(monkeypatch, _basic("r1", "one"), _basic("r2", "two"))
    (mid,) = _store(engine, adt("R1"))
    for force in (False, True, True):
        with session_scope(engine) as s:
            (outcome,) = pipeline.process_batch(s, [mid], force=force)
        assert outcome.state == "processed"
    assert _links(engine) == [("r1", 1), ("r2", 1)]
    with Session(engine) as s:
        assert len(s.scalars(select(ResourceVersion)).all()) == 2
        row = s.get(InboundMessage, mid)
        assert row is not None and row.attempts == 3


def test_a_resource_twice_in_one_message_is_linked_once_at_its_last_version(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _map_to(monkeypatch, _basic("r1", "first"), _basic("r1", "second"))
    (mid,) = _store(engine, adt("T1"))
    with session_scope(engine) as s:
        (outcome,) = pipeline.process_batch(s, [mid])
    assert outcome.state == "processed"
    assert _links(engine) == [("r1", 2)]


def test_postgresql_batch_holds_one_advisory_lock_per_patient(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("advisory locks are PostgreSQL's; SQLite serialises writers")
    _map_to(monkeypatch, _basic("r1", "one"))
    ids = _store(engine, adt("L1", mrn="A"), adt("L2", mrn="B"), adt("L3", mrn="A"))
    with session_scope(engine) as s:
        pipeline.process_batch(s, ids)
        held = s.execute(
            text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
        ).scalar_one()
    assert held == 2  # patients A and B, taken in one statement, held until the commit


def test_a_conflict_with_another_worker_is_raised_for_a_retry_and_failed_on_the_last_attempt(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A deadlock or a concurrent insert of the same row (PostgreSQL) cannot be cured inside this
    transaction: while the caller will retry, it is raised; on the last attempt it fails the message."""
    from sqlalchemy.exc import IntegrityError

    class UniqueViolation(Exception):
        sqlstate = "23505"

    def conflicting(*args: Any, **kw: Any) -> Any:
        raise IntegrityError("INSERT INTO resource …", {}, UniqueViolation())

    (mid,) = _store(engine, adt("CF1"))
    monkeypatch.setattr(pipeline.store, "upsert_many", conflicting)
    with pytest.raises(IntegrityError), session_scope(engine) as s:
        pipeline.process_batch(s, [mid], retrying=True)
    with session_scope(engine) as s:
        (outcome,) = pipeline.process_batch(s, [mid], retrying=False)
    assert outcome.state == "failed" and outcome.error_code == "internal-error"
    with Session(engine) as s:
        row = s.get(InboundMessage, mid)
        assert row is not None and row.state == "failed" and row.attempts == 1  # the raised try left no trace


def test_premapped_results_are_used_once_and_a_batch_yields_between_messages(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker maps before its write turn (premap); the batch uses each result once. Asked to yield,
    the batch ends after the current message: the rest stay received, in order, for the next one."""
    mapped_in: list[str] = []
    real_map = pipeline.map_message

    def counting_map(message: Message, ctx: SenderContext) -> MappingResult:
        mapped_in.append(message.get("MSH-10"))
        return real_map(message, ctx)

    monkeypatch.setattr(pipeline, "map_message", counting_map)
    ids = _store(engine, *(adt(f"Y{i}", "A01", mrn=f"Y{i}") for i in range(4)))
    with session_scope(engine) as s:
        ahead = pipeline.premap(s, ids)
    assert sorted(ahead) == ids and mapped_in == ["Y0", "Y1", "Y2", "Y3"]
    asked: list[int] = []

    def intake_waits() -> bool:
        asked.append(1)
        return len(asked) >= 2  # the intake starts waiting during the second message

    with session_scope(engine) as s:
        outcomes = pipeline.process_batch(s, ids, mapped=ahead, yield_when=intake_waits)
    assert [o.message_id for o in outcomes] == ids[:2]
    assert {o.state for o in outcomes} == {"processed"}
    assert mapped_in == ["Y0", "Y1", "Y2", "Y3"]  # nothing mapped twice
    assert sorted(ahead) == ids[2:]  # the results used were taken out
    with Session(engine) as s:
        states = {c: st for c, st in s.execute(select(InboundMessage.control_id, InboundMessage.state))}
    assert states == {"Y0": "processed", "Y1": "processed", "Y2": "received", "Y3": "received"}
    with session_scope(engine) as s:
        rest = pipeline.process_batch(s, ids, mapped=ahead)
    assert [o.message_id for o in rest] == ids[2:] and not ahead
