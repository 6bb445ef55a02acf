"""The demographics a PID, PD1 and NK1 carry, through the pipeline: stored, and a resend (another
control id, the same content) changes no version of the patient's resources (deterministic ids,
the update Provenance recorded at the message's time). Synthetic data only."""

from __future__ import annotations

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from hub import pipeline
from hub.config import Settings
from hub.db import session_scope
from hub.ingest.service import Intake
from hub.store.models import Resource, ResourceVersion
from tests.mapping._support import HL7_DIR, read

FIXTURE = HL7_DIR / "adt_a04_demographics.hl7"


def _process(engine: Engine, raw: str) -> str:
    mid = Intake(engine, Settings()).accept(raw.encode()).message_id
    assert mid is not None
    with session_scope(engine) as s:
        (outcome,) = pipeline.process_batch(s, [mid])
    return outcome.state


def _versions(engine: Engine) -> dict[tuple[str, str], int]:
    with Session(engine) as s:
        rows = s.execute(select(ResourceVersion.resource_type, ResourceVersion.id)).all()
    out: dict[tuple[str, str], int] = {}
    for rtype, rid in rows:
        out[(rtype, rid)] = out.get((rtype, rid), 0) + 1
    return out


def test_demographics_are_stored_and_a_resend_changes_nothing(engine: Engine) -> None:
    raw = read(FIXTURE)
    assert _process(engine, raw) == "processed"
    with Session(engine) as s:
        types = [t for (t,) in s.execute(select(Resource.resource_type))]
    assert types.count("RelatedPerson") == 3  # the mother (PID-21) and two next of kin
    assert types.count("Provenance") == 2  # the message's and PID-34's last update
    assert types.count("Observation") == 1  # PD1-7 living will
    before = _versions(engine)
    assert _process(engine, raw.replace("ADTA04DEMO1", "ADTA04DEMO2")) == "processed"
    after = _versions(engine)
    changed = {k for k in after if after[k] != before.get(k)}
    # Only the new message's own Provenance is new (the Encounter is PV1's, which keeps a version per
    # message on its own account); the Patient, its RelatedPersons, the living will, the practitioners,
    # organizations and the last-update Provenance are as they were.
    assert {k[0] for k in changed} - {"Encounter"} == {"Provenance"}
    assert len([k for k in changed if k[0] == "Provenance"]) == 1
