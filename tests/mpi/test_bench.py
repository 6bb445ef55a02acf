"""The accuracy bench runs end to end on a small generated population (the figures come from make bench)."""

from __future__ import annotations

import pytest

from bench.mpi_bench import (
    Scores,
    adt_message,
    febrl_patient,
    generate_indonesian,
    patient_of,
    run_indonesian,
    run_scale,
)
from hub.mpi.match import features
from hub.store.schema import scratch_database
from tests.conftest import PG_URL, require_postgres


def test_scores() -> None:
    truth = {frozenset(("a", "b")), frozenset(("c", "d"))}
    s = Scores.of({frozenset(("a", "b")), frozenset(("a", "c"))}, truth)
    assert (s.precision, s.recall, s.true_positives) == (0.5, 0.5, 1)


def test_generator_has_known_duplicates_placeholders_twins_and_namesakes() -> None:
    records = generate_indonesian(400, seed=3)
    people = [p for p, _ in records]
    assert len(set(people)) < len(records)
    assert any(p.endswith("-baby") for p in people)
    assert any(p.endswith("-twin") for p in people) and any(p.endswith("-son") for p in people)
    assert any(features(patient_of(r)).placeholder for _, r in records)
    # People under another's NIK: relatives, named newborns, sons, families under one KK number.
    carriers: dict[str, set[str]] = {}
    for person, reg in records:
        if reg.nik:
            carriers.setdefault(reg.nik, set()).add(person)
    assert any(p.endswith("-kin") for p in people) and any(p.endswith("-child") for p in people)
    assert max(len(c) for c in carriers.values()) >= 2


def test_household_niks_merge_nobody_in_a_small_population() -> None:
    report = run_indonesian(300, seed=8, ingest=False)
    assert report["false_merges"] == 0 and report["false_pairs"] == 0
    assert report["review_reasons"].get("NIK conflict", 0) > 0


def test_adt_message_carries_the_registration() -> None:
    _, reg = next((p, r) for p, r in generate_indonesian(50, seed=3) if r.nik and r.district and r.phone)
    raw = adt_message(reg, "A04", "C1").decode()
    assert raw.startswith("MSH|^~\\&|SIMRS|" + reg.facility) and "ADT^A04^ADT_A01|C1|" in raw
    pid = next(seg for seg in raw.split("\r") if seg.startswith("PID|"))
    assert f"{reg.mrn}^^^{reg.facility}^MR~{reg.nik}^^^^NNIDN" in pid
    assert reg.birth.replace("-", "") in pid and f"^^{reg.district}|" in pid and f"|{reg.phone}^PRN^PH" in pid


def test_febrl_record_conversion() -> None:
    row = {
        "given_name": "michaela",
        "surname": "neumann",
        "street_number": "8",
        "address_1": "stanley street",
        "address_2": "miami",
        "suburb": "winston hills",
        "postcode": "4223",
        "state": "nsw",
        "date_of_birth": "19151111",
        "soc_sec_id": "5304218",
    }
    f = features(febrl_patient("rec-1-org", row))
    assert f.tokens == ("mikhaela", "neuman") and f.birth_date == (1915, 11, 11)
    assert f.postal_code == "4223" and f.person_ids == {"urn:febrl:soc_sec_id": "5304218"}


def test_indonesian_run_through_the_service() -> None:
    report = run_indonesian(150, seed=11, ingest=False)
    assert report["auto_link"]["precision"] >= 0.99
    assert report["auto_link"]["recall"] >= 0.9
    assert report["database"] == "sqlite" and report["path"] == "resolve_identities"


def test_indonesian_run_through_intake_and_pipeline_agrees_with_the_service() -> None:
    """ADT messages through Intake and process_batch build the same golden records as the direct mode:
    the PID map carries everything the MPI compares (NIK, name, birth date, district code, phone)."""
    direct = run_indonesian(80, seed=13, ingest=False)
    ingested = run_indonesian(80, seed=13, resend=0.2)
    assert ingested["path"].startswith("ADT^A04/A08")
    assert ingested["sources"] == direct["sources"] > 80
    assert ingested["auto_link"] == direct["auto_link"]
    assert ingested["review_queue"] == direct["review_queue"]


def test_scale_run_bulk_loads_and_decides_on_postgres() -> None:
    """The 1,000,000-patient latency bench, small: the COPY load writes every source and its block keys
    (indexes rebuilt), a second run reuses the load, and mistyped records find their person first."""
    require_postgres()
    from sqlalchemy import create_engine, func, select

    from hub.store.models import MpiBlock, MpiSource

    with scratch_database(PG_URL, "hubm_bench_test") as url:
        first = run_scale(1500, url, probes=60)
        assert first["patients"] == 1500 and first["load_seconds"] != "reused"
        assert first["true_record_ranked_first"] >= 0.95
        assert first["decision_ms_p50"] > 0 and first["decision_cpu_ms_p99"] > 0
        engine = create_engine(url)
        with engine.connect() as conn:
            assert conn.scalar(select(func.count()).select_from(MpiSource)) == 1500
            per_source = (conn.scalar(select(func.count()).select_from(MpiBlock)) or 0) / 1500
            indexes = {r[0] for r in conn.exec_driver_sql("SELECT indexname FROM pg_indexes")}
        engine.dispose()
        assert per_source > 5  # blocking keys and identifier keys of every source
        assert {"mpi_block_pkey", "ix_mpi_block_source", "ix_mpi_source_golden"} <= indexes
        assert run_scale(1500, url, probes=20)["load_seconds"] == "reused"


def test_scale_run_refuses_a_database_not_named_for_benchmarks() -> None:
    with pytest.raises(SystemExit, match="bench"):
        run_scale(10, "postgresql+psycopg://postgres@127.0.0.1:5432/hub")
