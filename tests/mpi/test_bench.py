"""The accuracy bench runs end to end on a small generated population (the figures come from make bench)."""

from __future__ import annotations

from bench.mpi_bench import (
    Scores,
    adt_message,
    febrl_patient,
    generate_indonesian,
    patient_of,
    run_indonesian,
)
from hub.mpi.match import features


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


def test_adt_message_carries_the_registration() -> None:
    _, reg = next((p, r) for p, r in generate_indonesian(50, seed=3) if r.nik and r.district and r.phone)
    raw = adt_message(reg, "A04", "C1").decode()
    assert raw.startswith("MSH|^~\\&|SIMRS|" + reg.facility) and "ADT^A04^ADT_A01|C1|" in raw
    pid = next(seg for seg in raw.split("\r") if seg.startswith("PID|"))
    assert f"{reg.mrn}^^^{reg.facility}^MR~{reg.nik}^^^^NNIDN" in pid
    assert reg.birth.replace("-", "") in pid and f"^^{reg.district}|" in pid and reg.phone in pid


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
