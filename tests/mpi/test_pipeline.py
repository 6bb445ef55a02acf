"""The MPI inside the real pipeline: stored messages → (mapping stubbed with synthetic patients) →
resolve_identities → resources stored, with the links in the stored Patients."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from hub import pipeline
from hub.errors import NotFound
from hub.hl7 import Message
from hub.mapping import MappingResult, SenderContext
from hub.mpi import service
from hub.mpi.survivorship import without_origin
from hub.store import resources as store
from hub.store.models import InboundMessage, MessageResource, MpiBlock, MpiReview, MpiSource, ResourceVersion
from tests.mpi.builders import ingest, observation, patient, recorded_statements, refer

NIK = "3171015505900003"


def adt(facility: str, control_id: str, mrn: str) -> bytes:
    return (
        f"MSH|^~\\&|SIMRS|{facility}|HUB|KEMKES|20261129093000||ADT^A08^ADT_A01|{control_id}|P|2.5\r"
        f"PID|1||{mrn}^^^{facility}^MR||Dewi^Sari||19900515|F\r"
    ).encode()


def test_three_hospitals_through_the_pipeline(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    patients = {
        "RSUD-A": patient("RSUD-A", "A-1", "Sari Dewi", "1990-05-15", "female", nik=NIK),
        "RS-B": patient("RS-B", "B-2", "Sari Dewi", "1990-05-15", "female", nik=NIK),
        "PKM-C": patient("PKM-C", "C-3", "Ny. Sari Dewi", "1990-05-15", "female", nik=NIK),
    }
    _mapping_to(monkeypatch, {f"M{i}": p for i, p in enumerate(patients.values())})
    with Session(engine) as session, session.begin():
        ids = _store_messages(session, list(patients))
        outcomes = pipeline.process_batch(session, ids)
        assert [o.state for o in outcomes] == ["processed"] * 3, outcomes
    with Session(engine) as session:
        stored = [store.read(session, "Patient", p["id"]) for p in patients.values()]
        goldens = {refer(p) for p in stored}
        assert len(goldens) == 1
        golden = store.read(session, "Patient", goldens.pop())
        assert {lk["other"]["reference"] for lk in golden["link"]} == {f"Patient/{p['id']}" for p in stored}


def _store_messages(session: Session, facilities: list[str]) -> list[int]:
    ids = []
    for i, facility in enumerate(facilities):
        raw = adt(facility, f"M{i}", f"{facility}-{i}")
        row = InboundMessage(
            facility=facility, control_id=f"M{i}", raw=raw, content_hash=hashlib.sha256(raw).hexdigest()
        )
        session.add(row)
        session.flush()
        ids.append(row.id)
    return ids


def _mapping_to(monkeypatch: pytest.MonkeyPatch, by_control_id: dict[str, dict[str, Any]]) -> None:
    """The mapping stubbed: message ``M<i>`` becomes the given Patient and an Observation of it."""

    def fake_map(message: Message, ctx: SenderContext) -> MappingResult:
        control_id = message.get("MSH-10")
        res = dict(by_control_id[control_id])
        return MappingResult(resources=[res, observation(f"obs-{control_id}", res)])

    monkeypatch.setattr(pipeline, "map_message", fake_map)


def test_one_batch_two_messages_of_one_new_patient(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second message of a patient first seen earlier in the same batch finds the row the first one
    wrote: one source row, its keys once, one golden record (written once), no review."""
    p = patient("RSUD-A", "A-1", "Sari Dewi", "1990-05-15", "female", nik=NIK)
    _mapping_to(monkeypatch, {"M0": p, "M1": p})
    with Session(engine) as session, session.begin():
        ids = _store_messages(session, ["RSUD-A", "RSUD-A"])
        outcomes = pipeline.process_batch(session, ids)
        assert [o.state for o in outcomes] == ["processed"] * 2, outcomes
    with Session(engine) as session:
        assert session.scalars(select(MpiSource.id)).all() == [p["id"]]
        keys = session.scalars(select(MpiBlock.key).where(MpiBlock.source_id == p["id"])).all()
        assert (
            len(keys) == len(set(keys)) == len(service.block_keys(service._snapshot(p), service._features(p)))
        )
        stored = store.read(session, "Patient", p["id"])
        golden = store.read(session, "Patient", refer(stored))
        assert [lk["other"]["reference"] for lk in golden["link"]] == [f"Patient/{p['id']}"]
        versions = session.scalar(
            select(func.count()).where(
                ResourceVersion.resource_type == "Patient", ResourceVersion.id == golden["id"]
            )
        )
        assert versions == 1
        assert session.scalar(select(func.count()).select_from(MpiReview)) == 0
        # What each message produced, for the operator: its own resources, not the golden record.
        for message_id in ids:
            produced = session.execute(
                select(MessageResource.resource_type, MessageResource.resource_id).where(
                    MessageResource.message_id == message_id
                )
            ).all()
            assert sorted(produced) == sorted(
                [("Observation", f"obs-M{ids.index(message_id)}"), ("Patient", p["id"])]
            )


def test_one_batch_a_patient_matches_one_from_earlier_in_the_batch(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three hospitals' records of one person, a stranger between them, all new and all in one batch:
    each later record is linked to the golden record an earlier message of the same batch founded (by NIK,
    and without one by demographics), the stranger gets its own."""
    a = patient("RSUD-A", "A-1", "Sari Dewi", "1990-05-15", "female", nik=NIK, phone="081234567890")
    stranger = patient("RS-X", "X-9", "Bambang Wibowo", "1961-02-11", "male")
    b = patient("RS-B", "B-2", "Sari Dewi", "1990-05-15", "female", nik=NIK)
    c = patient("PKM-C", "C-3", "Sari Dewi", "1990-05-15", "female", phone="+62 812-3456-7890")
    _mapping_to(monkeypatch, {"M0": a, "M1": stranger, "M2": b, "M3": c})
    with Session(engine) as session, session.begin():
        ids = _store_messages(session, ["RSUD-A", "RS-X", "RS-B", "PKM-C"])
        outcomes = pipeline.process_batch(session, ids)
        assert [o.state for o in outcomes] == ["processed"] * 4, outcomes
    with Session(engine) as session:
        stored = {
            k: store.read(session, "Patient", p["id"])
            for k, p in (("a", a), ("s", stranger), ("b", b), ("c", c))
        }
        assert refer(stored["a"]) == refer(stored["b"]) == refer(stored["c"]) != refer(stored["s"])
        rows = {r.id: r for r in session.scalars(select(MpiSource))}
        assert rows[a["id"]].link_kind == "new" and rows[stranger["id"]].link_kind == "new"
        assert rows[b["id"]].link_kind == rows[c["id"]].link_kind == "auto"
        golden = store.read(session, "Patient", refer(stored["a"]))
        assert {lk["other"]["reference"] for lk in golden["link"]} == {
            f"Patient/{p['id']}" for p in (a, b, c)
        }
        assert golden["telecom"] and golden["birthDate"] == "1990-05-15"
        alone = store.read(session, "Patient", refer(stored["s"]))
        assert [lk["other"]["reference"] for lk in alone["link"]] == [f"Patient/{stranger['id']}"]
        assert session.scalar(select(func.count()).select_from(MpiReview)) == 0


def test_a_first_arrival_costs_four_statements_and_its_golden_waits_for_the_store(engine: Engine) -> None:
    """A new patient that matches nobody: its row read, its keys looked up (after their locks, on
    PostgreSQL), its row and its keys written (in one statement, on PostgreSQL); the golden record it
    founds is handed to the caller, who stores it with the message's resources, instead of a store write
    of its own."""
    p = patient("RSUD-A", "A-1", "Sari Dewi", "1990-05-15", "female", nik=NIK)
    goldens: list[dict[str, Any]] = []
    with Session(engine) as session, session.begin():
        result = MappingResult(resources=[dict(p)])
        with recorded_statements(engine) as statements:
            service.resolve_identities(session, result, SenderContext(facility="RSUD-A"), goldens=goldens)
        expected = ["FROM mpi_source", "FROM mpi_block", "INSERT INTO mpi_source", "INSERT INTO mpi_block"]
        if engine.dialect.name == "postgresql":  # the keys' locks; the row and its keys in one statement
            expected = [expected[0], "pg_advisory_xact_lock", expected[1], "INSERT INTO mpi_block"]
            assert "INSERT INTO mpi_source" in statements[-1]
        assert len(statements) == len(expected), "\n---\n".join(statements)
        assert all(part in sql for part, sql in zip(expected, statements, strict=True)), statements
        keys = session.scalars(select(MpiBlock.key).where(MpiBlock.source_id == p["id"])).all()
        assert sorted(keys) == sorted(service.block_keys(service._snapshot(p), service._features(p)))
        assert [g["id"] for g in goldens] == [refer(result.resources[0])]
        assert session.get(MpiSource, p["id"]) is not None
        with pytest.raises(NotFound):
            store.read(session, "Patient", goldens[0]["id"])


def test_changed_demographics_read_the_source_once(engine: Engine) -> None:
    """A known patient whose demographics changed: the row read to compare them is the row updated (not
    read again), the keys follow, the golden record shows the change."""
    p = patient("RSUD-A", "A-1", "Sari Dewi", "1990-05-15", "female", nik=NIK)
    with Session(engine) as session, session.begin():
        first = MappingResult(resources=[dict(p)])
        service.resolve_identities(session, first, SenderContext(facility="RSUD-A"))
        golden_id = refer(first.resources[0])
    changed = {**p, "telecom": [{"system": "phone", "value": "+62811000111"}]}
    with Session(engine) as session, session.begin():
        result = MappingResult(resources=[dict(changed)])
        with recorded_statements(engine) as statements:
            service.resolve_identities(session, result, SenderContext(facility="RSUD-A"))
        assert refer(result.resources[0]) == golden_id
    # Reads of the row by its id (the golden record's rebuild reads its sources by golden id).
    reads = [sql for sql in statements if re.search(r"FROM mpi_source\s+WHERE (mpi_source\.)?id = ", sql)]
    assert len(reads) == 1, statements
    assert any(sql.startswith("UPDATE mpi_source") for sql in statements), statements
    with Session(engine) as session:
        row = session.get(MpiSource, p["id"])
        assert row is not None and row.content["telecom"] == changed["telecom"]
        assert row.link_kind == "new" and row.active and row.updated_at >= row.created_at
        keys = set(session.scalars(select(MpiBlock.key).where(MpiBlock.source_id == p["id"])))
        assert keys == service.block_keys(service._snapshot(changed), service._features(changed))
        assert "tel:0811000111" in keys
        golden_telecom = store.read(session, "Patient", golden_id)["telecom"]
        assert without_origin(golden_telecom) == changed["telecom"]


def test_changed_demographics_update_the_entity_the_session_holds(engine: Engine) -> None:
    """A transaction that already holds the source's entity (read by a steward's call or a merge earlier
    in it) has that entity updated, not a second one made for the same row."""
    p = patient("RSUD-A", "A-1", "Sari Dewi", "1990-05-15", "female", nik=NIK)
    changed = {**p, "telecom": [{"system": "phone", "value": "+62811000111"}]}
    with Session(engine) as session, session.begin():
        ingest(session, "RSUD-A", dict(p))
        held = session.get(MpiSource, p["id"])
        assert held is not None and "telecom" not in held.content
        ingest(session, "RSUD-A", dict(changed))
        assert session.get(MpiSource, p["id"]) is held
        assert held.content["telecom"] == changed["telecom"]
    with Session(engine) as session:
        row = session.get(MpiSource, p["id"])
        assert row is not None and row.content["telecom"] == changed["telecom"]
