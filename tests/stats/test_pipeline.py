"""HL7 v2 messages through the real pipeline (maps, MPI, store) leave the facts the statistics count:
an ADT^A03 from two hospitals for one person (same NIK) is one person diagnosed, in the province of
the address the message gives (XAD-9 county/district code)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, text

from hub import pipeline
from hub.config import Settings
from hub.db import session_scope
from hub.ingest.service import Intake
from hub.stats.config import StatsConfig
from hub.stats.periods import parse_periods
from hub.stats.query import Request, evaluate, indicator


def _a03(facility: str, control: str, mrn: str, visit: str) -> bytes:
    return (
        f"MSH|^~\\&|SIMRS|{facility}|HUB|KEMKES|20260305120000+0700||ADT^A03^ADT_A03|{control}|P|2.5.1\r"
        "EVN|A03|20260305120000+0700\r"
        f"PID|1||{mrn}^^^{facility}^MR~3273015505900003^^^KEMKES^NIK||Lestari^Dewi||19900515|F|||"
        "Jl. Uji 1^^Bandung^Jawa Barat^^^H^^327301\r"
        f"PV1|1|I|W1^01^A||||||||||||||||{visit}^^^{facility}^VN|||||||||||||||||||||||||"
        "20260302080000|20260305110000\r"
        "DG1|1||A90^Dengue^I10||20260302\r"
        "OBX|1|CWE|94558-4^SARS-CoV-2^LN||260373001^Detected^SCT||||||F|||20260302\r"
    ).encode()


def test_messages_from_two_hospitals_count_one_person(engine: Engine, tmp_path: Path) -> None:
    intake = Intake(engine, Settings(var_dir=tmp_path))
    ids = [
        intake.accept(_a03("RSUD-A", "A1", "A-1", "VA1")).message_id,
        intake.accept(_a03("RS-B", "B1", "B-2", "VB1")).message_id,
    ]
    with session_scope(engine) as session:
        outcomes = pipeline.process_batch(session, [i for i in ids if i])
        assert [o.state for o in outcomes] == ["processed", "processed"], outcomes
    with engine.connect() as conn:
        kinds = dict(conn.execute(text("SELECT kind, count(*) FROM stats_fact GROUP BY kind")).all())
        assert kinds["encounter"] == 2 and kinds["condition"] == 2 and kinds["lab"] == 2
        config = StatsConfig(threshold=0)
        req = Request(
            indicator("diagnoses"), parse_periods("2026W10"), ["province", "sex", "facility"], ["A90"]
        )
        result = evaluate(conn, req, config, suppressed=False)
        assert result.total == {"value": 1}  # one person, two hospitals
        assert {(r["province"], r["sex"], r["facility"]) for r in result.rows if r["value"]} == {
            ("32", "female", "RSUD-A"),
            ("32", "female", "RS-B"),
        }
        encounters = evaluate(conn, Request(indicator("encounters"), parse_periods("202603"), [], []), config)
        assert encounters.total == {"value": 2}  # events: both visits
        lab = evaluate(conn, Request(indicator("lab-positivity"), parse_periods("2026W10"), [], []), config)
        assert lab.total == {"value": 100.0}


def _oru(facility: str, control: str, mrn: str) -> bytes:
    """A lab result whose Patient is the one the facility's ADT already stored (nothing of it changes)."""
    return (
        f"MSH|^~\\&|LIS|{facility}|HUB|KEMKES|20260306090000+0700||ORU^R01^ORU_R01|{control}|P|2.5.1\r"
        f"PID|1||{mrn}^^^{facility}^MR~3273015505900003^^^KEMKES^NIK||Lestari^Dewi||19900515|F|||"
        "Jl. Uji 1^^Bandung^Jawa Barat^^^H^^327301\r"
        "OBR|1|PO-1|LAB-1|94558-4^SARS-CoV-2^LN|||20260306080000+0700\r"
        "OBX|1|CWE|94558-4^SARS-CoV-2^LN||260385009^Not detected^SCT||||||F|||20260306080000+0700\r"
    ).encode()


def test_a_result_counts_for_the_facility_that_sent_it(engine: Engine, tmp_path: Path) -> None:
    """The ORU's Patient is unchanged (the ADT stored it): its results still count for the sending
    facility, not for no facility; a rebuild from the store attributes them the same way."""
    from hub.stats import upkeep

    intake = Intake(engine, Settings(var_dir=tmp_path))
    ids = [
        intake.accept(_a03("RSUD-A", "A1", "A-1", "VA1")).message_id,
        intake.accept(_oru("RSUD-A", "R1", "A-1")).message_id,
    ]
    with session_scope(engine) as session:
        for i in ids:  # one batch each: the result's Patient is not written again with it
            assert [o.state for o in pipeline.process_batch(session, [i])] == ["processed"]

    def lab_facilities() -> list[tuple[str, str]]:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT resource_id, facility FROM stats_fact WHERE kind = 'lab' ORDER BY started")
            ).all()
        return [(str(r[1]), str(r[0])) for r in rows]

    written = lab_facilities()
    assert [f for f, _ in written] == ["RSUD-A", "RSUD-A"], written
    with engine.begin() as conn:
        upkeep.rebuild(conn)
    assert lab_facilities() == written
