"""The per-patient order burst shared by the in-process and the Celery ordering tests: for many patients
an admission (A01, emergency class), an update (A08: now inpatient, moved to a ward) and a discharge (A03),
interleaved across patients but in this order for each one."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from hub.errors import MappingError
from hub.hl7 import parse
from hub.mapping import SenderContext, map_message
from hub.store.models import InboundMessage, Resource
from tests.builders import adt

FACILITY = "RSUD_SEHAT"


def _event(prefix: str, n: int, trigger: str) -> bytes:
    text = adt(
        f"{prefix}{n}-{trigger}", trigger, mrn=f"{prefix}M{n}", visit=f"{prefix}V{n}", facility=FACILITY
    )
    lines = text.split("\r")
    pv1 = lines[3].split("|")
    if trigger == "A01":
        pv1[2], pv1[3] = "E", "ER^01^A"  # admitted through the emergency room
    else:
        pv1[2], pv1[3] = "I", "WARD7^12^B"  # the A08 update: inpatient on ward 7 (the A03 repeats it)
    if trigger == "A03":
        pv1 += [""] * (46 - len(pv1))
        pv1[45] = "20261105100000+0700"  # PV1-45 discharge date/time
    lines[3] = "|".join(pv1)
    return "\r".join(lines).encode()


def burst(patients: int, prefix: str, seed: int = 7) -> list[bytes]:
    """A01, A08, A03 for each patient, shuffled across patients, in order within each patient."""
    rng = random.Random(seed)
    pending = {n: ["A01", "A08", "A03"] for n in range(patients)}
    out: list[bytes] = []
    while pending:
        n = rng.choice(sorted(pending))
        out.append(_event(prefix, n, pending[n].pop(0)))
        if not pending[n]:
            del pending[n]
    return out


def assert_patient_order(rows: Sequence[InboundMessage]) -> None:
    """Each stored message was processed once, and for each patient in arrival (id) order."""
    assert rows
    assert {r.state for r in rows} <= {"processed", "failed"}
    assert [r.control_id for r in rows if r.attempts != 1] == []
    by_patient: dict[str, list[InboundMessage]] = defaultdict(list)
    for r in rows:
        assert r.patient_key
        by_patient[r.patient_key].append(r)
    for key, msgs in by_patient.items():
        msgs.sort(key=lambda r: r.id)
        assert [m.control_id.rsplit("-", 1)[1] for m in msgs] == ["A01", "A08", "A03"], key
        done = [m.processed_at for m in msgs]
        assert None not in done
        assert done == sorted(done), f"patient {key}: processed out of arrival order {done}"  # type: ignore[type-var]


def adt_maps_exist() -> bool:
    """False while hub.mapping has no map for ADT^A01 (it raises no-map)."""
    try:
        map_message(parse(_event("PROBE", 0, "A01").decode()), SenderContext(facility=FACILITY))
    except MappingError as exc:
        if exc.code == "no-map":
            return False
        raise
    return True


def require_adt_maps() -> None:
    if not adt_maps_exist():
        pytest.skip("needs the ADT maps")


def assert_encounters_finished(engine: Engine, patients: int, prefix: str) -> None:
    """Each patient's Encounter ends finished (A03 last) and carries the A08 data (inpatient class)."""
    with Session(engine) as s:
        encounters: list[dict[str, Any]] = [
            orjson.loads(c)
            for c in s.scalars(select(Resource.content).where(Resource.resource_type == "Encounter"))
        ]
    for n in range(patients):
        visit = f"{prefix}V{n}"
        mine = [e for e in encounters if visit in {i.get("value") for i in e.get("identifier") or []}]
        assert len(mine) == 1, f"{visit}: {len(mine)} Encounters"
        enc = mine[0]
        assert enc["status"] == "finished", enc
        klass = enc["class"]
        assert (klass[0] if isinstance(klass, list) else klass)["code"] == "IMP", enc


def stored_rows(engine: Engine, ids: Sequence[int]) -> list[InboundMessage]:
    with Session(engine) as s:
        return list(s.scalars(select(InboundMessage).where(InboundMessage.id.in_(ids))))
