"""The MPI inside the real pipeline: stored messages → (mapping stubbed with synthetic patients) →
resolve_identities → resources stored, with the links in the stored Patients."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from hub import pipeline
from hub.hl7 import Message
from hub.mapping import MappingResult, SenderContext
from hub.store import resources as store
from hub.store.models import InboundMessage
from tests.mpi.builders import patient, refer

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

    def fake_map(message: Message, ctx: SenderContext) -> MappingResult:
        res: dict[str, Any] = dict(patients[ctx.facility])
        obs = {
            "resourceType": "Observation",
            "id": f"obs-{ctx.facility}",
            "status": "final",
            "code": {"text": "Hb"},
            "subject": {"reference": f"Patient/{res['id']}"},
        }
        return MappingResult(resources=[res, obs])

    monkeypatch.setattr(pipeline, "map_message", fake_map)
    with Session(engine) as session, session.begin():
        ids = []
        for i, (facility, mrn) in enumerate((("RSUD-A", "A-1"), ("RS-B", "B-2"), ("PKM-C", "C-3"))):
            raw = adt(facility, f"C{i}", mrn)
            row = InboundMessage(
                facility=facility, control_id=f"C{i}", raw=raw, content_hash=hashlib.sha256(raw).hexdigest()
            )
            session.add(row)
            session.flush()
            ids.append(row.id)
        outcomes = pipeline.process_batch(session, ids)
        assert [o.state for o in outcomes] == ["processed"] * 3, outcomes
    with Session(engine) as session:
        stored = [store.read(session, "Patient", p["id"]) for p in patients.values()]
        goldens = {refer(p) for p in stored}
        assert len(goldens) == 1
        golden = store.read(session, "Patient", goldens.pop())
        assert {lk["other"]["reference"] for lk in golden["link"]} == {f"Patient/{p['id']}" for p in stored}
