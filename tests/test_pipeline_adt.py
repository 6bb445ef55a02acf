"""ADT cancels through the real intake and processing: the stored Encounter after A01 + A11 (cancel
admit), A03 + A13 (cancel discharge), A02 + A12 (cancel transfer) and A54 + A55 (cancel change of
attending doctor, A61 + A62 consulting doctor) is what it was before the cancelled event, and a
replay changes nothing."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from hub import pipeline
from hub.config import Settings
from hub.db import session_scope
from hub.ingest.service import Intake
from hub.store import resources
from hub.store.models import Resource

WARD = "W3^301^A^RSUD_SEHAT"
ICU = "ICU^02^B^RSUD_SEHAT"
DR_A = "12345^Wijaya^Siti^^^dr.^^^RSUD_SEHAT"
DR_B = "67890^Pratama^Andi^^^dr.^^^RSUD_SEHAT"
DR_C = "24680^Nugroho^Bayu^^^dr.^^^RSUD_SEHAT"


def _adt(
    n: int,
    trigger: str,
    structure: str,
    *,
    location: str = WARD,
    prior: str = "",
    attending: str = DR_A,
    consulting: str = "",
    admitting: str = "",
    discharged: str = "",
    disposition: str = "",
) -> str:
    """One synthetic ADT of visit V9001; ``n`` orders the messages (control id and event time)."""
    when = f"2026110{n}090000"
    pv1 = [""] * 46
    pv1[:4] = ["PV1", "1", "I", location]
    pv1[6], pv1[7], pv1[9], pv1[17] = prior, attending, consulting, admitting
    pv1[19] = "V9001^^^RSUD_SEHAT^VN"
    pv1[36], pv1[44], pv1[45] = disposition, "20261101080000", discharged
    return (
        "\r".join(
            [
                f"MSH|^~\\&|SIMRS|RSUD_SEHAT|HUB|KEMKES|{when}+0700||ADT^{trigger}^{structure}|PA{n}{trigger}|P|2.5.1",
                f"EVN|{trigger}|{when}+0700",
                "PID|1||RM770001^^^RSUD_SEHAT^MR||Handayani^Tuti||19750520|F",
                "|".join(pv1).rstrip("|"),
            ]
        )
        + "\r"
    )


def _run(engine: Engine, *messages: str, replay_last: bool = False) -> dict[str, Any]:
    intake = Intake(engine, Settings())
    ids = [intake.accept(m.encode()).message_id for m in messages]
    for mid in ids:  # one at a time, in order, as the workers take one patient's messages
        with session_scope(engine) as s:
            (outcome,) = pipeline.process_batch(s, [mid])  # type: ignore[list-item]
        assert outcome.state == "processed", outcome
    if replay_last:
        with session_scope(engine) as s:
            (outcome,) = pipeline.process_batch(s, [ids[-1]], force=True)  # type: ignore[list-item]
        assert outcome.state == "processed"
    with Session(engine) as s:
        (rid,) = s.scalars(select(Resource.id).where(Resource.resource_type == "Encounter")).all()
        return resources.read(s, "Encounter", rid)


def _locations(encounter: dict[str, Any]) -> list[tuple[str, str]]:
    return [(loc["location"]["display"], loc["status"]) for loc in encounter["location"]]


def _doctors(encounter: dict[str, Any], code: str) -> list[str]:
    return [
        p["individual"]["display"]
        for p in encounter["participant"]
        if any(c["code"] == code for t in p["type"] for c in t["coding"])
    ]


def test_a11_cancels_the_admitted_encounter(engine: Engine) -> None:
    enc = _run(engine, _adt(1, "A01", "ADT_A01"), _adt(2, "A11", "ADT_A09"))
    assert enc["status"] == "cancelled"
    assert _locations(enc) == [("RSUD_SEHAT W3 301 A", "active")]
    assert enc["period"] == {"start": "2026-11-01T08:00:00+07:00"}


def test_a13_takes_the_discharge_back(engine: Engine) -> None:
    admit = _adt(1, "A01", "ADT_A01")
    discharge = _adt(2, "A03", "ADT_A03", discharged="20261102110000", disposition="01")
    # The discharge alone: finished, with its end and disposition.
    done = _run(engine, admit, discharge)
    assert done["status"] == "finished" and done["period"]["end"] == "2026-11-02T11:00:00+07:00"
    assert "dischargeDisposition" in done["hospitalization"]
    enc = _run(engine, _adt(3, "A13", "ADT_A01"), replay_last=True)
    assert enc["status"] == "in-progress"
    assert enc["period"] == {"start": "2026-11-01T08:00:00+07:00"}
    assert "dischargeDisposition" not in enc.get("hospitalization", {})


def test_a12_takes_the_transfer_back(engine: Engine) -> None:
    admit = _adt(1, "A01", "ADT_A01")
    transfer = _adt(2, "A02", "ADT_A02", location=ICU, prior=WARD)
    moved = _run(engine, admit, transfer)
    assert _locations(moved) == [("RSUD_SEHAT W3 301 A", "completed"), ("RSUD_SEHAT ICU 02 B", "active")]
    # The cancel names the ward the patient stays in (PV1-3) and the cancelled transfer's ICU (PV1-6).
    enc = _run(engine, _adt(3, "A12", "ADT_A12", location=WARD, prior=ICU), replay_last=True)
    assert _locations(enc) == [("RSUD_SEHAT W3 301 A", "active")]
    assert enc["status"] == "in-progress" and enc["period"] == {"start": "2026-11-01T08:00:00+07:00"}


@pytest.mark.parametrize(
    ("change", "cancel", "code"),
    [("A54", "A55", "ATND"), ("A61", "A62", "CON")],
    ids=["attending", "consulting"],
)
def test_a_doctor_change_replaces_the_doctor_and_its_cancel_takes_it_back(
    engine: Engine, change: str, cancel: str, code: str
) -> None:
    doctor = "attending" if code == "ATND" else "consulting"
    # The consultant change keeps another attending doctor (a participant in two roles is one item).
    other = {} if code == "ATND" else {"attending": DR_C}
    admit = _adt(1, "A01", "ADT_A01", admitting=DR_A, **other, **{doctor: DR_A})
    changed = _run(engine, admit, _adt(2, change, "ADT_A54", **other, **{doctor: DR_B}))
    assert _doctors(changed, code) == ["dr. Andi Pratama"]  # the new doctor in place of the earlier one
    assert _doctors(changed, "ADM") == ["dr. Siti Wijaya"]  # the other roles stay
    enc = _run(engine, _adt(3, cancel, "ADT_A52", **other, **{doctor: DR_A}), replay_last=True)
    assert _doctors(enc, code) == ["dr. Siti Wijaya"]
    assert _doctors(enc, "ADM") == ["dr. Siti Wijaya"]
    assert enc["status"] == "in-progress"  # these triggers give no status: the admission's stays


def test_a_replayed_discharge_stays_cancelled(engine: Engine) -> None:
    intake = Intake(engine, Settings())
    admit, discharge = _adt(1, "A01", "ADT_A01"), _adt(2, "A03", "ADT_A03", discharged="20261102110000")
    ids = [intake.accept(m.encode()).message_id for m in (admit, discharge, _adt(3, "A13", "ADT_A01"))]
    for mid in ids:
        with session_scope(engine) as s:
            pipeline.process_batch(s, [mid])  # type: ignore[list-item]
    with session_scope(engine) as s:
        (outcome,) = pipeline.process_batch(s, [ids[1]], force=True)  # type: ignore[list-item]
    assert outcome.state == "processed"
    with Session(engine) as s:
        (rid,) = s.scalars(select(Resource.id).where(Resource.resource_type == "Encounter")).all()
        enc = resources.read(s, "Encounter", rid)
    assert enc["status"] == "in-progress" and "end" not in enc["period"]


def test_a42_and_a49_retire_the_prior_account(engine: Engine) -> None:
    def with_account(message: str, account: str, mrg: str = "") -> str:
        segments = message.rstrip("\r").split("\r")
        segments[2] += "|" * 10 + f"{account}^^^RSUD_SEHAT^AN"  # PID-18
        if mrg:
            segments.insert(3, f"MRG|RM770001^^^RSUD_SEHAT^MR||{mrg}^^^RSUD_SEHAT^AN")
        return "\r".join(segments) + "\r"

    intake = Intake(engine, Settings())
    messages = [
        with_account(_adt(1, "A01", "ADT_A01"), "ACC1"),
        with_account(_adt(2, "A42", "ADT_A39"), "ACC2", mrg="ACC1"),
        with_account(_adt(3, "A49", "ADT_A30"), "ACC3", mrg="ACC2"),
    ]
    for m in messages:
        mid = intake.accept(m.encode()).message_id
        with session_scope(engine) as s:
            (outcome,) = pipeline.process_batch(s, [mid])  # type: ignore[list-item]
        assert outcome.state == "processed"
    with Session(engine) as s:
        ids = s.scalars(select(Resource.id).where(Resource.resource_type == "Account")).all()
        accounts = {a["identifier"][0]["value"]: a for a in (resources.read(s, "Account", i) for i in ids)}
    assert {k: a["status"] for k, a in accounts.items()} == {
        "ACC1": "inactive",
        "ACC2": "inactive",
        "ACC3": "active",
    }
    assert len({a["subject"][0]["reference"] for a in accounts.values()}) == 1
