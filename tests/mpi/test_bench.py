"""The accuracy bench runs end to end on a small generated population (the figures come from make bench)."""

from __future__ import annotations

from bench.mpi_bench import Scores, febrl_patient, generate_indonesian, run_indonesian
from hub.mpi.match import features


def test_scores() -> None:
    truth = {frozenset(("a", "b")), frozenset(("c", "d"))}
    s = Scores.of({frozenset(("a", "b")), frozenset(("a", "c"))}, truth)
    assert (s.precision, s.recall, s.true_positives) == (0.5, 0.5, 1)


def test_generator_has_known_duplicates_and_placeholders() -> None:
    records = generate_indonesian(200, seed=3)
    people = [p for p, _, _ in records]
    assert len(set(people)) < len(records)
    assert any(p.endswith("-baby") for p in people)
    assert any(features(r).placeholder for _, _, r in records)


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
    report = run_indonesian(150, seed=11)
    assert report["auto_link"]["precision"] >= 0.99
    assert report["auto_link"]["recall"] >= 0.9
    assert report["database"] == "sqlite"
