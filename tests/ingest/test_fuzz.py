"""Whatever bytes arrive, intake answers with an ACK and keeps them: never an exception, never a loss."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from hub.config import Settings
from hub.hl7 import parse
from hub.ingest.service import Intake
from hub.store.models import InboundMessage
from tests.builders import adt

BASE = adt("FUZZ").encode()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(BASE)
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos : pos + draw(st.integers(1, 20))]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(mutated(), st.binary(max_size=200)))
def test_any_bytes_get_an_ack_and_are_kept(engine: Engine, raw: bytes) -> None:
    intake = Intake(engine, Settings())
    with Session(engine) as s:
        before = s.scalar(select(func.count()).select_from(InboundMessage)) or 0
    res = intake.accept(raw)
    assert res.code in ("AA", "AE", "AR", "CA", "CE", "CR")
    if res.code in ("AA", "AE", "AR"):  # original mode always answers (MSH-15 may silence enhanced mode)
        assert res.ack is not None
    if res.ack is not None:
        assert parse(res.ack).get("MSA-1") == res.code
    with Session(engine) as s:
        after = s.scalar(select(func.count()).select_from(InboundMessage)) or 0
    assert after == before + (0 if res.duplicate else 1)
