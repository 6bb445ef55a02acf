"""The pipeline on a message type without a message map: processed (mapped by its segments), the stored
unmapped report says so; a message of which nothing maps stays failed no-map."""

from __future__ import annotations

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from hub import pipeline
from hub.config import Settings
from hub.db import session_scope
from hub.ingest.service import Intake
from hub.store.models import InboundMessage, MessageResource
from tests.builders import adt


def test_a_site_type_is_processed_by_segment_and_its_report_says_so(engine: Engine) -> None:
    intake = Intake(engine, Settings())
    by_segment = adt("Z1").replace("ADT^A01^ADT_A01", "ZRS^Z01")
    nothing = adt("Z2").replace("ADT^A01^ADT_A01", "ZRS^Z02").split("\r", 1)[0] + "\rZRS|1|x\r"
    ids = [intake.accept(raw.encode()).message_id for raw in (by_segment, nothing)]
    with session_scope(engine) as s:
        outcomes = pipeline.process_batch(s, ids)  # type: ignore[arg-type]
    assert [(o.state, o.error_code) for o in outcomes] == [("processed", None), ("failed", "no-map")]
    with Session(engine) as s:
        row = s.get(InboundMessage, ids[0])
        assert row is not None and row.unmapped
        assert row.unmapped[0]["note"] == "no message map: mapped by segment"
        assert row.unmapped[0]["value"] == "ZRS^Z01"
        made = {
            r.resource_type
            for r in s.scalars(select(MessageResource).where(MessageResource.message_id == ids[0]))
        }
        assert {"Patient", "Encounter", "Provenance"} <= made
