"""A shared NIK is evidence, not proof: household heads, parents, mothers of newborns and family-card numbers
typed as NIKs go to the review queue as "NIK conflict" instead of merging two people."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from hub.mpi import service
from hub.mpi.match import NIK_CONFLICT, compare, features
from hub.store.models import MpiReview, MpiSource
from tests.mpi.builders import ingest, patient, refer

HEAD_NIK = "3273011505620004"  # a man born 1962-05-15
MOTHER_NIK = "3171015505900003"  # a woman born 1990-05-15
KK = "3273010101150007"  # a family card number: it looks like a NIK issued 2015-01-01


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine) as s, s.begin():
        yield s


def _open_reviews(session: Session) -> list[MpiReview]:
    return list(session.scalars(select(MpiReview).where(MpiReview.status == "open")))


def test_household_member_under_the_heads_nik_is_a_nik_conflict(session: Session) -> None:
    head = patient("RSUD-A", "1", "Budi Santoso", "1962-05-15", "male", nik=HEAD_NIK, district="327301")
    member = patient("RS-B", "2", "Agus Santoso", "1969-08-02", "male", nik=HEAD_NIK, district="327301")
    ingest(session, "RSUD-A", head)
    ingest(session, "RS-B", member)
    assert refer(head) != refer(member)
    (review,) = _open_reviews(session)
    assert review.reason == NIK_CONFLICT == "NIK conflict"
    nik = next(c for c in review.comparisons if c["field"] == "nik")
    assert nik["level"] == "conflict" and nik["weight"] == 0 and "7 years apart" in nik["note"]


def test_son_under_his_fathers_nik_with_the_same_name_is_not_linked(session: Session) -> None:
    father = patient("RSUD-A", "1", "Budi Santoso", "1962-05-15", "male", nik=HEAD_NIK, phone="081234567890")
    son = patient("RS-B", "2", "Budi Santoso", "2011-09-30", "male", nik=HEAD_NIK, phone="081234567890")
    ingest(session, "RSUD-A", father)
    ingest(session, "RS-B", son)
    assert refer(father) != refer(son)
    assert [r.reason for r in _open_reviews(session)] == [NIK_CONFLICT]


def test_a_woman_carrying_another_womans_nik_years_apart(session: Session) -> None:
    mother = patient("RSUD-A", "1", "Sari Dewi", "1990-05-15", "female", nik=MOTHER_NIK)
    other = patient("RS-B", "2", "Sari Dewi Lestari", "2001-03-14", "female", nik=MOTHER_NIK)
    ingest(session, "RSUD-A", mother)
    ingest(session, "RS-B", other)
    assert refer(mother) != refer(other)
    assert [r.reason for r in _open_reviews(session)] == [NIK_CONFLICT]


def test_different_given_name_and_sex_under_one_nik() -> None:
    wife = features(patient("A", "1", "Siti Aminah", "1990-05-15", "female", nik=MOTHER_NIK))
    husband = features(patient("B", "2", "Bambang Aminah", "1990-05-15", "male", nik=MOTHER_NIK))
    result = compare(wife, husband)
    assert (result.outcome, result.reason) == ("possible", NIK_CONFLICT)


def test_newborn_under_the_mothers_nik_links_nobody(session: Session) -> None:
    """A placeholder ("Bayi Ny. …") or a newborn already named, both under the mother's NIK (SATUSEHAT's
    nik-ibu practice): never linked to the mother, nor to each other."""
    mother = patient("RSUD-A", "1", "Sari Dewi", "1990-05-15", "female", nik=MOTHER_NIK, district="317101")
    baby = patient("RSUD-A", "2", "Bayi Ny. Sari Dewi", "2026-11-28", "female", nik=MOTHER_NIK)
    named = patient("RS-B", "3", "Putri Ayu", "2026-11-28", "female", nik=MOTHER_NIK, district="317101")
    for facility, res in (("RSUD-A", mother), ("RSUD-A", baby), ("RS-B", named)):
        ingest(session, facility, res)
    assert len({refer(mother), refer(baby), refer(named)}) == 3
    # The mother's own later visit still links on her NIK: a placeholder does not make it suspect.
    again = patient("PKM-C", "4", "Ny. Sari Dewi", "1990-05-15", "female", nik=MOTHER_NIK)
    ingest(session, "PKM-C", again)
    assert refer(again) == refer(mother)
    # The named newborn and the mother are two people under one NIK: it is flagged, the placeholder aside.
    (flagged,) = service.suspect_niks(session)
    assert flagged["nik"] == MOTHER_NIK and baby["id"] not in flagged["sources"]


def test_a_nik_shared_by_five_people_links_nobody(session: Session) -> None:
    """A family-card number typed as the NIK of a whole family: five golden records; once two people carry
    the number it is suspect and counts for nothing, so a sparse record carrying it joins nobody, while a
    record that agrees on everything else still finds its person."""
    family = [
        patient("RSUD-A", "1", "Hendra Wijaya", "1970-03-02", "male", nik=KK, phone="081300000001"),
        patient("RSUD-A", "2", "Ratna Sari", "1974-11-20", "female", nik=KK, phone="081300000001"),
        patient("RS-B", "3", "Dimas Wijaya", "1999-07-07", "male", nik=KK, phone="081300000001"),
        patient("RS-B", "4", "Intan Wijaya", "2003-01-30", "female", nik=KK, phone="081300000001"),
        patient("PKM-C", "5", "Bayu Wijaya", "2010-09-12", "male", nik=KK, phone="081300000001"),
    ]
    for res in family:
        ingest(session, "RSUD-A", res)
    assert len({refer(r) for r in family}) == 5
    sparse = patient("PKM-D", "6", "Wijaya", nik=KK)  # the KK number and a family name: nobody in particular
    ingest(session, "PKM-D", sparse)
    assert refer(sparse) not in {refer(r) for r in family}
    rows = list(session.scalars(select(MpiSource)))
    assert len({r.golden_id for r in rows}) == 6
    suspect = [
        c
        for r in _open_reviews(session)
        for c in r.comparisons
        if c["field"] == "nik" and c["level"] in ("suspect", "conflict")
    ]
    assert suspect  # the steward sees the conflict and the suspect number
    (flagged,) = service.suspect_niks(session)
    assert flagged["nik"] == KK and len(flagged["people"]) == 6 and len(flagged["sources"]) == 6
    # The father again at another hospital, with everything agreeing: found by his demographics.
    father_again = patient("PKM-E", "7", "Hendra Wijaya", "1970-03-02", "male", nik=KK, phone="081300000001")
    ingest(session, "PKM-E", father_again)
    assert refer(father_again) == refer(family[0])


def test_one_typed_digit_in_the_year_under_an_agreeing_nik_still_links() -> None:
    """The same man, his year mistyped (1962 → 1969) in one record: day, month and sex are the NIK's, the
    name agrees: a typo, not a household member."""
    a = features(patient("A", "1", "Budi Santoso", "1962-05-15", "male", nik=HEAD_NIK))
    b = features(patient("B", "2", "Budi Santoso", "1969-05-15", "male", nik=HEAD_NIK))
    assert compare(a, b).outcome == "match"
    other_day = features(patient("B", "3", "Budi Santoso", "1969-08-15", "male", nik=HEAD_NIK))
    assert compare(a, other_day).reason == NIK_CONFLICT


def test_merge_a40_still_joins_a_nik_conflict_pair(session: Session) -> None:
    """A sender's explicit merge is its own decision: applied whatever the NIK check thought."""
    father = patient("RSUD-A", "1", "Budi Santoso", "1962-05-15", "male", nik=HEAD_NIK)
    son = patient("RSUD-A", "2", "Budi Santoso", "2011-09-30", "male", nik=HEAD_NIK)
    ingest(session, "RSUD-A", father)
    ingest(session, "RSUD-A", son)
    assert refer(father) != refer(son)
    ingest(session, "RSUD-A", actions=[{"type": "merge", "survivor": father["id"], "retired": son["id"]}])
    rows = {r.id: r for r in session.scalars(select(MpiSource))}
    assert rows[son["id"]].golden_id == rows[father["id"]].golden_id and not rows[son["id"]].active


def test_twins_with_consecutive_niks_and_near_names_stay_apart() -> None:
    """Twins registered together get consecutive NIKs; "Sari" and "Sri" are two names, not a typo."""
    sari = features(patient("A", "1", "Sari Maharani", "1951-08-26", "female", nik="6471016608513156"))
    sri = features(patient("B", "2", "Sri Maharani", "1951-08-26", "female", nik="6471016608513157"))
    assert compare(sari, sri).outcome == "possible"
