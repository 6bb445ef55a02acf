"""Intake: store, then ACK; duplicates, conflicts, rejects and registration (SQLite and PostgreSQL)."""

from __future__ import annotations

import time
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from hub.config import Settings
from hub.db import make_engine
from hub.hl7 import parse
from hub.ingest.service import Accepted, Intake, _Item
from hub.store.models import InboundMessage, Sender
from tests.builders import adt, msh


def _intake(engine: Engine, **kw: object) -> Intake:
    return Intake(engine, Settings(**kw))  # type: ignore[arg-type]


def _rows(engine: Engine) -> list[InboundMessage]:
    with Session(engine) as s:
        return list(s.scalars(select(InboundMessage).order_by(InboundMessage.id)))


def test_accept_stores_then_acks_per_v251(engine: Engine) -> None:
    dispatched: list[int] = []
    intake = Intake(engine, Settings(), dispatched.extend)
    res = intake.accept(adt("C1").encode())
    assert res.code == "AA" and res.message_id is not None
    rows = _rows(engine)
    assert len(rows) == 1 and rows[0].state == "received"
    assert rows[0].facility == "RSUD_SEHAT" and rows[0].control_id == "C1"
    assert rows[0].message_type == "ADT^A01" and rows[0].message_structure == "ADT_A01"
    assert rows[0].patient_key == "MRN0001^RSUD_SEHAT"
    assert dispatched == [rows[0].id]
    assert res.ack is not None
    ack = parse(res.ack)
    assert ack.get("MSH-3") == "HUB" and ack.get("MSH-4") == "KEMKES"  # swapped
    assert ack.get("MSH-5") == "SIMRS" and ack.get("MSH-6") == "RSUD_SEHAT"
    assert ack.get("MSH-9") == "ACK" and ack.get("MSH-9.2") == "A01" and ack.get("MSH-9.3") == "ACK"
    assert ack.get("MSH-12") == "2.5.1"
    assert ack.get("MSH-10") not in ("", "C1")
    assert ack.get("MSA-1") == "AA" and ack.get("MSA-2") == "C1"
    assert ack.first("ERR") is None
    # The sender was registered on first contact (loopback default).
    with Session(engine) as s:
        sender = s.scalars(select(Sender)).one()
        assert sender.facility == "RSUD_SEHAT" and sender.auto_registered


def test_unreadable_header_is_rejected_and_kept(engine: Engine) -> None:
    intake = _intake(engine)
    raw = b"MSH|^~\\&|A|FAC|B|C|20260101||ADT^A01||P|2.5\rPID|1\r"  # no MSH-10
    res = intake.accept(raw)
    assert res.code == "AR" and res.ack is not None
    ack = parse(res.ack)
    assert ack.get("MSA-1") == "AR"
    assert ack.get("ERR-2") == "MSH" and ack.get("ERR-2.3") == "10"
    assert ack.get("ERR-3") == "101" and ack.get("ERR-3.3") == "HL70357"
    assert ack.get("ERR-4") == "E"
    (row,) = _rows(engine)
    assert row.state == "rejected" and row.raw == raw and row.error_code == "hl7-101"
    res2 = intake.accept(b"not hl7 at all")
    assert res2.code == "AR"
    assert len(_rows(engine)) == 2


def test_duplicate_gets_original_ack_and_stores_nothing(engine: Engine) -> None:
    dispatched: list[int] = []
    intake = Intake(engine, Settings(), dispatched.extend)
    first = intake.accept(adt("DUP1").encode())
    again = intake.accept(adt("DUP1").encode())
    assert again.duplicate and again.ack == first.ack and again.message_id == first.message_id
    rows = _rows(engine)
    assert len(rows) == 1 and rows[0].duplicate_count == 1
    assert dispatched == [rows[0].id]


def test_same_control_id_other_content_is_held(engine: Engine) -> None:
    dispatched: list[int] = []
    intake = Intake(engine, Settings(), dispatched.extend)
    intake.accept(adt("C9", family="Santoso").encode())
    res = intake.accept(adt("C9", family="Wijaya").encode())
    assert res.code == "AE" and res.ack is not None
    assert parse(res.ack).get("ERR-3") == "205"
    rows = _rows(engine)
    assert [r.state for r in rows] == ["received", "held"]
    assert rows[1].error_code == "control-id-conflict"
    assert dispatched == [rows[0].id]


def test_enhanced_mode_commit_acks(engine: Engine) -> None:
    intake = _intake(engine)
    res = intake.accept(adt("E1", accept_ack="AL", app_ack="NE").encode())
    assert res.code == "CA" and res.ack is not None and parse(res.ack).get("MSA-1") == "CA"
    silent = intake.accept(adt("E2", accept_ack="NE", app_ack="AL").encode())
    assert silent.code == "CA" and silent.ack is None
    assert len(_rows(engine)) == 2


def test_closed_registration_rejects_unknown_facility_but_keeps_it(engine: Engine) -> None:
    intake = _intake(engine, open_registration=False)
    res = intake.accept(adt("U1", facility="STRANGER").encode())
    assert res.code == "AR" and res.ack is not None
    ack = parse(res.ack)
    assert ack.get("ERR-3") == "204" and "not registered" in ack.get("ERR-8")
    (row,) = _rows(engine)
    assert row.state == "rejected" and row.facility == "STRANGER"


def test_registration_default_follows_binding() -> None:
    assert Settings().registration_open
    assert not Settings(http_host="0.0.0.0").registration_open
    assert Settings(http_host="0.0.0.0", open_registration=True).registration_open


def test_missing_structure_is_derived(engine: Engine) -> None:
    intake = _intake(engine)
    raw = (msh("S1", "ADT^A04", version="2.3") + "\rPID|1||X1^^^F^MR||Doe^J\r").encode()
    assert intake.accept(raw).code == "AA"
    assert _rows(engine)[0].message_structure == "ADT_A01"


def test_group_commit_across_connections(engine: Engine) -> None:
    dispatched: list[int] = []
    intake = Intake(engine, Settings(commit_window_ms=20), dispatched.extend)
    intake.start()
    try:
        futures: list[Future[Accepted]] = [
            intake.submit(adt(f"G{i}", mrn=f"M{i}").encode()) for i in range(300)
        ]
        results = [f.result(timeout=30) for f in futures]
    finally:
        intake.stop()
    assert all(r.code == "AA" for r in results)
    assert len({r.message_id for r in results}) == 300
    assert intake.stats.batches < 300  # several messages shared a commit
    with Session(engine) as s:
        assert s.scalar(select(func.count()).select_from(InboundMessage)) == 300
    assert sorted(dispatched) == sorted(r.message_id for r in results if r.message_id is not None)


def test_duplicate_within_one_group_commit_gets_the_original_id(engine: Engine) -> None:
    dispatched: list[int] = []
    intake = Intake(engine, Settings(commit_window_ms=50), dispatched.extend)
    intake.start()
    try:
        futures = [intake.submit(adt("SAME").encode()) for _ in range(3)]
        first, *again = [f.result(timeout=10) for f in futures]
    finally:
        intake.stop()
    assert intake.stats.batches == 1 and intake.stats.duplicates == 2
    assert first.code == "AA" and not first.duplicate and first.message_id is not None
    for dup in again:
        assert dup.duplicate and dup.message_id == first.message_id and dup.ack == first.ack
    rows = _rows(engine)
    assert len(rows) == 1 and rows[0].duplicate_count == 2
    assert dispatched == [first.message_id]


def test_duplicate_lookup_searches_the_index(engine: Engine) -> None:
    """The per-commit duplicate lookup must not scan inbound_message (it grows to millions of rows)."""
    intake = _intake(engine, commit_window_ms=50)
    intake.accept(adt("IX0").encode())
    intake.start()
    try:
        futures = [intake.submit(adt(f"IX{i}", mrn=f"M{i}").encode()) for i in range(1, 4)]
        assert {f.result(timeout=10).code for f in futures} == {"AA"}
    finally:
        intake.stop()
    assert intake.stats.batches == 2  # IX0 alone, then IX1-IX3 in one commit
    # The statement the committer sends to the driver for that commit: three control ids, one facility,
    # one application.
    statement = intake._earlier_sql(3, 1, 1)
    assert intake._earlier_cache[(3, 1, 1)] == statement
    params = ("RSUD_SEHAT", "SIMRS", "IX1", "IX2", "IX3")
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            plan = " ".join(
                str(r[-1]) for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)
            )
            assert "SEARCH inbound_message USING" in plan and "SCAN inbound_message" not in plan, plan
        else:
            conn.exec_driver_sql("SET enable_seqscan = off")  # the table is tiny: ask whether it *can*
            plan = " ".join(str(r[0]) for r in conn.exec_driver_sql("EXPLAIN " + statement, params))
            assert "ix_inbound_message_control" in plan, plan


def test_commit_waits_briefly_for_the_senders_of_the_last_commit(engine: Engine) -> None:
    """Send-and-wait senders answered by one commit send again at nearly the same time: the next commit
    waits (up to HUB_COMMIT_GATHER_MS) for as many messages as the last one had, one fsync for them all."""
    intake = _intake(engine, commit_gather_ms=500)
    first: list[Future[Accepted]] = []
    for i in range(3):  # queued before the committer starts: its first commit takes all three
        item = _Item(raw=adt(f"G{i}", mrn=f"G{i}").encode(), transport="mllp", future=Future())
        intake._prepare(item)
        intake._queue.put(item)
        first.append(item.future)  # type: ignore[arg-type]
    intake.start()
    try:
        assert {f.result(timeout=10).code for f in first} == {"AA"}
        assert intake.stats.batches == 1
        second = [intake.submit(adt("G3", mrn="G3").encode())]
        time.sleep(0.05)  # the other two senders are a little late
        second += [intake.submit(adt(f"G{i}", mrn=f"G{i}").encode()) for i in (4, 5)]
        assert {f.result(timeout=10).code for f in second} == {"AA"}
    finally:
        intake.stop()
    assert intake.stats.batches == 2  # G3-G5 in one commit, not G3 alone and then G4-G5


def test_commit_retries_once_on_a_fresh_connection_when_the_kept_one_died(engine: Engine) -> None:
    intake = _intake(engine)
    intake.start()
    try:
        assert intake.submit(adt("R1", mrn="R1").encode()).result(timeout=10).code == "AA"
        intake._raw.invalidate()  # the kept connection dies while idle (as in a database restart)
        again = intake.submit(adt("R2", mrn="R2").encode()).result(timeout=10)
        assert again.code == "AA" and not again.duplicate
    finally:
        intake.stop()
    assert [r.control_id for r in _rows(engine)] == ["R1", "R2"]


def _queue_then_commit(intake: Intake, raws: list[bytes]) -> list[Accepted]:
    """``raws`` committed together: queued before the committer starts, so its first commit takes them all."""
    futures: list[Future[Accepted]] = []
    for raw in raws:
        item = _Item(raw=raw, transport="mllp", future=Future())
        intake._prepare(item)
        intake._queue.put(item)
        futures.append(item.future)  # type: ignore[arg-type]
    intake.start()
    try:
        return [f.result(timeout=10) for f in futures]
    finally:
        intake.stop()


def test_a_commit_mixing_new_duplicate_held_and_unreadable_messages(engine: Engine) -> None:
    """On PostgreSQL one INSERT stores a commit's new messages and skips those whose control id is
    stored already; the skipped ones are then stored as what they are (duplicate or held). Each message's
    ACK and id must be its own whatever path it took, on either backend."""
    dispatched: list[int] = []
    intake = Intake(engine, Settings(commit_window_ms=50), dispatched.extend)
    first = intake.accept(adt("M1", family="Santoso").encode())
    intake.accept(adt("M2", family="Santoso").encode())
    raws = [
        adt("M3", mrn="N3").encode(),  # new
        adt("M1", family="Santoso").encode(),  # the same bytes again: a duplicate of M1
        b"not hl7 at all",  # unreadable: rejected, kept
        adt("M2", family="Wijaya").encode(),  # M2's control id with other content: held
        adt("M4", mrn="N4").encode(),  # new
    ]
    new3, dup, bad, held, new4 = _queue_then_commit(intake, raws)
    assert intake.stats.batches == 3  # M1, M2, then the five together
    rows = {r.id: r for r in _rows(engine)}
    assert new3.code == new4.code == "AA" and not new3.duplicate
    assert rows[new3.message_id].control_id == "M3" and rows[new4.message_id].control_id == "M4"  # type: ignore[index]
    assert new3.message_id < new4.message_id  # type: ignore[operator]
    assert parse(new3.ack).get("MSA-2") == "M3" and parse(new4.ack).get("MSA-2") == "M4"  # type: ignore[arg-type]
    assert dup.duplicate and dup.ack == first.ack and dup.message_id == first.message_id
    assert rows[first.message_id].duplicate_count == 1  # type: ignore[index]
    assert bad.code == "AR"
    assert held.code == "AE" and parse(held.ack).get("ERR-3") == "205"  # type: ignore[arg-type]
    assert sorted((r.control_id, r.state) for r in rows.values() if r.control_id in ("M2", "M3", "M4")) == [
        ("M2", "held"),
        ("M2", "received"),
        ("M3", "received"),
        ("M4", "received"),
    ]
    assert [r.state for r in rows.values()].count("rejected") == 1
    assert len(rows) == 6  # M1, M2, M3, M4, the held M2 and the unreadable message; no duplicate row
    assert new3.message_id in dispatched and new4.message_id in dispatched
    assert len(dispatched) == 4  # M1, M2 on their own, then M3 and M4
    assert intake.stats.duplicates == 1 and intake.stats.held == 1 and intake.stats.rejected == 1
    assert intake.stats.accepted == 4
    # PostgreSQL stored the commit in one pipelined round trip, then the two it had skipped on their own.
    assert intake.stats.rechecked == (2 if engine.dialect.name == "postgresql" else 0)


def test_the_pipelined_insert_probes_the_control_id_index(pg_database_url: str) -> None:
    """PostgreSQL (SQLite has no round trips to save and keeps the checked path): the commit's INSERT
    tests its message against the (facility, control_id) index, never by a join over the whole table
    (which the planner may pick while the table has no statistics)."""
    from hub.ingest.service import _NEW_COLUMNS, _new_sql

    engine = make_engine(pg_database_url)

    row = {c: "x" for c in _NEW_COLUMNS} | {
        "raw": b"x",
        "received_at": datetime.now(UTC),
        "state": "received",
        "sender_id": None,
    }
    with engine.connect() as conn:
        raw: Any = conn.connection.dbapi_connection
        with raw.cursor() as cursor:
            cursor.execute("SET enable_seqscan = off")  # the table is tiny: ask whether it *can*
            values = [row[c] for c in _NEW_COLUMNS]
            cursor.execute("EXPLAIN " + _new_sql(3), values * 3)
            plan = " ".join(str(r[0]) for r in cursor.fetchall())
    engine.dispose()
    assert "ix_inbound_message_control" in plan, plan
    assert "Anti Join" not in plan, plan


def test_ack_msh7_is_the_present_second_or_the_given_instant() -> None:
    from hub.hl7 import peek_header
    from hub.ingest.ack import build_ack

    header = peek_header(adt("T1").encode())
    for _ in range(3):  # the present second's text is made once and shared: it must still move on
        before = datetime.now(UTC).replace(microsecond=0)
        stamp = parse(build_ack(header, "AA")).get("MSH-7")
        after = datetime.now(UTC)
        assert before <= datetime.strptime(stamp, "%Y%m%d%H%M%S%z") <= after
        time.sleep(0.6)
    given = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse(build_ack(header, "AA", now=given)).get("MSH-7") == "20260102030405+0000"


def _from(app: str, facility: str, control: str, family: str = "Santoso") -> bytes:
    """An ADT^A01 from MSH-3 ``app`` at MSH-4 ``facility``."""
    return adt(control, family=family, facility=facility).replace("|SIMRS|", f"|{app}|", 1).encode()


def test_two_applications_of_one_facility_reusing_a_control_id_are_two_messages(engine: Engine) -> None:
    dispatched: list[int] = []
    intake = Intake(engine, Settings(), dispatched.extend)
    lab = intake.accept(_from("LIS", "RSUD_SEHAT", "1001", family="Santoso"))
    adm = intake.accept(_from("SIMRS", "RSUD_SEHAT", "1001", family="Wijaya"))
    assert lab.code == adm.code == "AA" and not adm.duplicate
    rows = _rows(engine)
    assert [(r.application, r.facility, r.control_id, r.state) for r in rows] == [
        ("LIS", "RSUD_SEHAT", "1001", "received"),
        ("SIMRS", "RSUD_SEHAT", "1001", "received"),
    ]
    assert dispatched == [rows[0].id, rows[1].id]
    # Same key and same content: a duplicate (the original ACK, nothing stored).
    again = intake.accept(_from("LIS", "RSUD_SEHAT", "1001", family="Santoso"))
    assert again.duplicate and again.ack == lab.ack and again.message_id == rows[0].id
    # Same key, other content: held, as before.
    other = intake.accept(_from("LIS", "RSUD_SEHAT", "1001", family="Lain"))
    assert other.code == "AE" and other.state == "held"
    assert [r.state for r in _rows(engine)] == ["received", "received", "held"]


def test_two_applications_in_one_commit_are_two_messages(engine: Engine) -> None:
    """Both in one batch (the PostgreSQL pipelined path takes it whole: the keys differ)."""
    intake = _intake(engine)
    batch = []
    for app in ("LIS", "RIS"):
        item = _Item(raw=_from(app, "RSUD_SEHAT", "7"), transport="mllp", future=Future())
        intake._prepare(item)
        batch.append(item)
    intake._commit(batch)
    codes = [item.future.result().code for item in batch]  # type: ignore[union-attr]
    assert codes == ["AA", "AA"]
    assert [(r.application, r.state) for r in _rows(engine)] == [("LIS", "received"), ("RIS", "received")]


def test_empty_msh4_is_accepted_while_registration_is_open(engine: Engine) -> None:
    dispatched: list[int] = []
    intake = Intake(engine, Settings(), dispatched.extend)
    res = intake.accept(_from("PUSKESMAS_APP", "", "E1"))
    assert res.code == "AA" and res.ack is not None
    assert "not registered" not in res.ack
    (row,) = _rows(engine)
    assert row.state == "received" and row.facility == "" and row.application == "PUSKESMAS_APP"
    assert dispatched == [row.id]
    with Session(engine) as s:
        sender = s.scalars(select(Sender)).one()
        assert sender.facility == "PUSKESMAS_APP" and sender.auto_registered and row.sender_id == sender.id


def test_empty_msh3_and_msh4_is_rejected_without_saying_not_registered(engine: Engine) -> None:
    intake = _intake(engine)
    res = intake.accept(_from("", "", "E2"))
    assert res.code == "AR" and res.ack is not None
    ack = parse(res.ack)
    assert ack.get("ERR-3") == "101" and "not registered" not in res.ack
    (row,) = _rows(engine)
    assert row.state == "rejected" and row.error_code == "hl7-101"


def test_rejected_message_keeps_the_facility_and_application_it_named(engine: Engine) -> None:
    intake = _intake(engine, open_registration=False)
    closed = intake.accept(_from("LIS", "STRANGER", "R1"))
    assert closed.code == "AR"
    unreadable = intake.accept(
        b"MSH|^~\\&|LIS^1.2.3^ISO|^2.16.360.1^ISO|B|C|20260101||ADT^A01||P|2.5\rPID|1\r"
    )
    assert unreadable.code == "AR"  # no MSH-10
    rows = _rows(engine)
    assert [(r.application, r.facility, r.state) for r in rows] == [
        ("LIS", "STRANGER", "rejected"),
        ("LIS", "2.16.360.1", "rejected"),
    ]


def test_closed_registration_names_msh3_when_msh4_is_empty(engine: Engine) -> None:
    intake = _intake(engine, open_registration=False)
    res = intake.accept(_from("LIS", "", "R2"))
    assert res.code == "AR" and res.ack is not None
    assert "'LIS' (MSH-3" in parse(res.ack).get("ERR-8")
