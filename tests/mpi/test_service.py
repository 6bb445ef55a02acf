"""The MPI service on SQLite and PostgreSQL: linking, the review queue, steward decisions, HL7 merges."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from hub.db import session_scope
from hub.errors import Conflict
from hub.mapping import MappingResult, SenderContext
from hub.mpi import service
from hub.mpi.match import NIK_SYSTEM, features
from hub.store import resources as store
from hub.store.models import MpiDecision, MpiReview, MpiSource, Resource
from tests.mpi.builders import ingest, observation, patient, recorded_statements, refer

NIK = "3171015505900003"  # woman born 1990-05-15


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine) as s, s.begin():
        yield s


def golden_of(session: Session, resource: dict[str, Any]) -> dict[str, Any]:
    return store.read(session, "Patient", refer(resource))


def seealso(golden: dict[str, Any]) -> set[str]:
    return {
        lk["other"]["reference"].removeprefix("Patient/") for lk in golden["link"] if lk["type"] == "seealso"
    }


def sari(facility: str, mrn: str, name: str = "Sari Dewi", **kw: Any) -> dict[str, Any]:
    kw.setdefault("nik", NIK)
    return patient(facility, mrn, name, "1990-05-15", "female", **kw)


def test_three_hospitals_three_mrns_one_nik_make_one_golden(session: Session) -> None:
    a = sari("RSUD-A", "A-001", phone="081234567890")
    b = sari("RS-B", "B-77", name="Sari Dewi Lestari", district="317101")
    c = sari("PKM-C", "000123", name="Ny. Sari Dewi")
    for facility, res in (("RSUD-A", a), ("RS-B", b), ("PKM-C", c)):
        ingest(session, facility, res)
    goldens = {refer(a), refer(b), refer(c)}
    assert len(goldens) == 1
    golden = golden_of(session, a)
    assert seealso(golden) == {a["id"], b["id"], c["id"]}
    assert any(t["code"] == "golden" for t in golden["meta"]["tag"])
    # Best current value of each element across sources, identifiers the union of all.
    assert golden["birthDate"] == "1990-05-15" and golden["gender"] == "female"
    assert golden["address"] and golden["telecom"]
    values = {(i["system"], i["value"]) for i in golden["identifier"]}
    assert (NIK_SYSTEM, NIK) in values and len(values) == 4
    # The stored source carries exactly one refer link.
    stored = store.read(session, "Patient", b["id"])
    assert [lk["type"] for lk in stored["link"]] == ["refer"]
    assert service.linked_patient_ids(session, golden["id"]) == [golden["id"], *sorted(seealso(golden))]
    # Nobody is linked twice: one mpi_source row per source.
    assert session.scalar(select(MpiSource.golden_id).where(MpiSource.id == c["id"])) == golden["id"]


def test_data_of_three_hospitals_under_the_golden_compartment(session: Session) -> None:
    sources = [sari(f, m) for f, m in (("RSUD-A", "1"), ("RS-B", "2"), ("PKM-C", "3"))]
    for res in sources:
        ingest(session, res["id"], res)
        store.upsert(session, observation(f"obs-{res['id'][:8]}", res))
    ids = service.linked_patient_ids(session, refer(sources[0]))
    observations = session.scalars(
        select(Resource.id).where(Resource.resource_type == "Observation", Resource.patient_id.in_(ids))
    ).all()
    assert len(observations) == 3


def test_probabilistic_match_without_nik(session: Session) -> None:
    a = patient(
        "RSUD-A",
        "1",
        "Muhammad Rizki Ramadhan",
        "1990-03-12",
        "male",
        phone="+62 812 3456 7890",
        district="337401",
    )
    b = patient(
        "RS-B", "9", "Moh. Rizky Ramadan", "1990-12-03", "male", phone="0812-3456-7890", district="337401"
    )
    ingest(session, "RSUD-A", a)
    ingest(session, "RS-B", b)
    assert refer(a) == refer(b)
    row = session.get(MpiSource, b["id"])
    assert row is not None and row.link_kind == "auto" and row.weight is not None and row.weight > 16


def test_no_match_makes_a_new_golden(session: Session) -> None:
    a = patient("RSUD-A", "1", "Budi Santoso", "1985-12-03", "male", district="337401")
    b = patient("RS-B", "2", "Agus Salim", "1970-01-01", "male", district="317101")
    ingest(session, "RSUD-A", a)
    ingest(session, "RS-B", b)
    assert refer(a) != refer(b)
    assert session.scalars(select(MpiReview)).all() == []


def possible_pair(session: Session) -> tuple[dict[str, Any], dict[str, Any], MpiReview]:
    a = patient("RSUD-A", "1", "Dewi Lestari", "1992-08-17", "female")
    b = patient("RS-B", "2", "Dewi Lestary", "1992-08-17", "female")
    ingest(session, "RSUD-A", a)
    ingest(session, "RS-B", b)
    reviews = session.scalars(select(MpiReview)).all()
    assert len(reviews) == 1
    return a, b, reviews[0]


def test_possible_match_goes_to_the_review_queue(session: Session) -> None:
    a, b, review = possible_pair(session)
    assert refer(a) != refer(b)  # each in its own golden until a steward decides
    assert (review.source_id, review.candidate_source_id, review.status) == (b["id"], a["id"], "open")
    fields = {c["field"]: c["level"] for c in review.comparisons}
    assert fields["name"] == "close" and fields["birthDate"] == "exact"
    # Re-sending the same patient does not queue the pair twice.
    ingest(session, "RS-B", patient("RS-B", "2", "Dewi Lestary", "1992-08-17", "female"))
    assert len(session.scalars(select(MpiReview)).all()) == 1


def test_steward_link_and_undo(session: Session) -> None:
    a, b, review = possible_pair(session)
    decision = service.decide_review(session, review.id, "link", actor="steward:ani", reason="same KTP seen")
    assert (decision.actor, decision.reason, decision.action) == ("steward:ani", "same KTP seen", "link")
    golden = store.read(session, "Patient", refer(a))
    assert seealso(golden) == {a["id"], b["id"]}
    assert refer(store.read(session, "Patient", b["id"])) == golden["id"]
    assert review.status == "linked"
    # b's own golden record is gone (deleted), so nobody finds two records for one person.
    with pytest.raises(Exception, match="deleted"):
        store.read(session, "Patient", service.golden_id_for(b["id"]))

    service.undo(session, decision.id, actor="steward:budi", reason="wrong pair")
    assert refer(store.read(session, "Patient", b["id"])) == service.golden_id_for(b["id"])
    assert seealso(store.read(session, "Patient", refer(a))) == {a["id"]}
    assert review.status == "open"
    assert session.get(MpiDecision, decision.id).undone_at is not None  # type: ignore[union-attr]
    with pytest.raises(Conflict):
        service.undo(session, decision.id, actor="steward:budi")


def test_steward_unlink_is_not_overridden_by_a_later_message(session: Session) -> None:
    a = sari("RSUD-A", "1")
    b = sari("RS-B", "2")
    ingest(session, "RSUD-A", a)
    ingest(session, "RS-B", b)
    assert refer(a) == refer(b)
    decision = service.unlink(session, b["id"], actor="steward:ani", reason="twin sisters")
    stored_b = store.read(session, "Patient", b["id"])
    assert refer(stored_b) != refer(a)
    # The same patient arrives again from its hospital: the steward's decision holds.
    again = sari("RS-B", "2", phone="081299990000")
    ingest(session, "RS-B", again)
    assert refer(again) == refer(stored_b) != refer(a)
    # A new source is free to match, but not into b's pinned record by way of a's.
    assert session.get(MpiSource, b["id"]).link_kind == "manual"  # type: ignore[union-attr]
    service.undo(session, decision.id, actor="steward:ani", reason="not twins after all")
    assert refer(store.read(session, "Patient", b["id"])) == refer(a)


def test_not_duplicate_is_never_overridden(session: Session) -> None:
    _, _, review = possible_pair(session)
    service.decide_review(
        session, review.id, "not-duplicate", actor="steward:ani", reason="different mothers"
    )
    # Both re-sent with more agreeing data: no automatic link across the steward's decision.
    a2 = patient(
        "RSUD-A", "1", "Dewi Lestari", "1992-08-17", "female", phone="081211112222", district="317101"
    )
    b2 = patient("RS-B", "2", "Dewi Lestari", "1992-08-17", "female", phone="081211112222", district="317101")
    ingest(session, "RSUD-A", a2)
    ingest(session, "RS-B", b2)
    assert refer(a2) != refer(b2)
    assert review.status == "not-duplicate"


def test_nik_shared_by_different_people_goes_to_review(session: Session) -> None:
    mother = sari("RSUD-A", "1")
    husband = patient("RS-B", "2", "Bambang Wijaya", "1982-02-20", "male", nik=NIK)
    ingest(session, "RSUD-A", mother)
    ingest(session, "RS-B", husband)
    assert refer(mother) != refer(husband)
    review = session.scalars(select(MpiReview)).one()
    assert review.reason == "NIK conflict"


def test_newborn_placeholder_is_not_auto_linked_to_the_mother(session: Session) -> None:
    mother = sari("RSUD-A", "1")
    baby = patient("RSUD-A", "2", "Bayi Ny. Sari Dewi", "2026-11-28", "female", nik=NIK)
    ingest(session, "RSUD-A", mother)
    ingest(session, "RSUD-A", baby)
    assert refer(mother) != refer(baby)


def test_merge_a40_retires_the_source_and_is_undoable(session: Session) -> None:
    survivor = patient("RSUD-A", "100", "Budi Santoso", "1985-12-03", "male", district="337401")
    retired = patient("RSUD-A", "200", "Budi Santosa", "1985-12-30", "male")
    ingest(session, "RSUD-A", survivor)
    ingest(session, "RSUD-A", retired)
    assert refer(survivor) != refer(retired)
    message = ingest(
        session,
        "RSUD-A",
        patient("RSUD-A", "100", "Budi Santoso", "1985-12-03", "male", district="337401"),
        actions=[{"type": "merge", "survivor": survivor["id"], "retired": retired["id"]}],
    )
    surv = message.resources[0]
    assert {"type": "replaces", "other": {"reference": f"Patient/{retired['id']}"}} in surv["link"]
    old = store.read(session, "Patient", retired["id"])
    assert old["active"] is False
    assert {"type": "replaced-by", "other": {"reference": f"Patient/{survivor['id']}"}} in old["link"]
    assert refer(old) == refer(surv)  # the retired patient's data appear under the survivor's golden
    assert seealso(store.read(session, "Patient", refer(surv))) == {survivor["id"], retired["id"]}
    decision = session.scalars(select(MpiDecision).where(MpiDecision.action == "merge")).one()
    assert decision.actor == "hl7:RSUD-A"

    service.undo(session, decision.id, actor="steward:ani", reason="merged the wrong record")
    old = store.read(session, "Patient", retired["id"])
    assert "active" not in old and [lk["type"] for lk in old["link"]] == ["refer"]
    assert refer(old) == service.golden_id_for(retired["id"])
    surv = store.read(session, "Patient", survivor["id"])
    assert [lk["type"] for lk in surv["link"]] == ["refer"]


def test_merge_of_a_patient_the_hub_never_saw(session: Session) -> None:
    survivor = patient("RSUD-A", "100", "Budi Santoso", "1985-12-03", "male")
    unknown_id = "0b5c2a55-0000-5000-8000-000000000001"
    ingest(
        session,
        "RSUD-A",
        survivor,
        actions=[{"type": "merge", "survivor": survivor["id"], "retired": unknown_id}],
    )
    old = store.read(session, "Patient", unknown_id)
    assert old["active"] is False and refer(old) == refer(survivor)


def test_unlink_a37_and_change_identifier_a47(session: Session) -> None:
    a = sari("RSUD-A", "1")
    b = sari("RS-B", "2")
    ingest(session, "RSUD-A", a)
    ingest(session, "RS-B", b)
    ingest(session, "RSUD-A", a, actions=[{"type": "unlink", "patients": [a["id"], b["id"]]}])
    assert refer(store.read(session, "Patient", b["id"])) != refer(a)

    old = {"system": "urn:oid:2.16.360.RSUD-A", "value": "1"}
    new = {"system": "urn:oid:2.16.360.RSUD-A", "value": "1-NEW"}
    ingest(
        session, "RSUD-A", actions=[{"type": "change-identifier", "patient": a["id"], "old": old, "new": new}]
    )
    row = session.get(MpiSource, a["id"])
    assert row is not None
    values = {i["value"] for i in row.content["identifier"]}
    assert "1-NEW" in values and "1" not in values
    golden = store.read(session, "Patient", refer(a))
    assert "1-NEW" in {i["value"] for i in golden["identifier"]}


def test_a_source_alone_finds_its_match_when_its_data_improve(session: Session) -> None:
    a = patient(
        "RSUD-A", "1", "Rina Marlina", "1975-04-09", "female", district="317101", phone="081377778888"
    )
    b = patient("RS-B", "2", "Rina", None, "female")
    ingest(session, "RSUD-A", a)
    ingest(session, "RS-B", b)
    assert refer(a) != refer(b)
    b2 = patient("RS-B", "2", "Rina Marlina", "1975-04-09", "female", district="317101", phone="081377778888")
    ingest(session, "RS-B", b2)
    assert refer(b2) == refer(a)
    with pytest.raises(Exception, match="deleted"):
        store.read(session, "Patient", service.golden_id_for(b["id"]))


def test_merge_queues_the_retired_patients_other_links_for_review(session: Session) -> None:
    survivor = patient("RSUD-A", "100", "Budi Santoso", "1985-12-03", "male")
    retired = patient("RSUD-A", "200", "Agus Budiman", "1979-05-05", "male", district="317101")
    elsewhere = patient("RS-B", "7", "Agus Budiman", "1979-05-05", "male", district="317101")
    for facility, res in (("RSUD-A", survivor), ("RSUD-A", retired), ("RS-B", elsewhere)):
        ingest(session, facility, res)
    assert refer(retired) == refer(elsewhere)
    ingest(
        session,
        "RSUD-A",
        survivor,
        actions=[{"type": "merge", "survivor": survivor["id"], "retired": retired["id"]}],
    )
    review = session.scalars(select(MpiReview)).one()
    assert (review.source_id, review.candidate_source_id, review.reason) == (
        elsewhere["id"],
        survivor["id"],
        "merge",
    )
    assert refer(store.read(session, "Patient", elsewhere["id"])) != refer(survivor)


def test_golden_prefers_the_most_trusted_sender(session: Session) -> None:
    settings = service.MpiSettings(sender_trust={"RSUP-PUSAT": 10})
    trusted = sari("RSUP-PUSAT", "1", name="Sari Dewi Lestari")
    later = sari("PKM-C", "2", name="Sari D.")
    for facility, res in (("RSUP-PUSAT", trusted), ("PKM-C", later)):
        result = MappingResult(resources=[res])
        service.resolve_identities(session, result, SenderContext(facility=facility), settings)
        store.upsert(session, res)
    golden = store.read(session, "Patient", refer(trusted))
    assert golden["name"][0]["text"] == "Sari Dewi Lestari"
    # Without trust, the most recent source wins.
    service.rebuild_golden(session, golden["id"])
    assert store.read(session, "Patient", golden["id"])["name"][0]["text"] == "Sari D."


def test_a_review_settled_by_a_later_link_leaves_the_queue(session: Session) -> None:
    _, b, review = possible_pair(session)
    service.link(session, b["id"], review.candidate_source_id, actor="steward:ani", reason="seen the KTP")
    assert review.status == "linked"
    assert session.scalars(select(MpiReview).where(MpiReview.status == "open")).all() == []


def test_a47_identifier_change_retires_the_old_source_into_the_new(session: Session) -> None:
    old = patient("RSUD-A", "OLD-1", "Budi Santoso", "1985-12-03", "male", district="337401")
    ingest(session, "RSUD-A", old)
    new = patient("RSUD-A", "NEW-1", "Budi Santoso", "1985-12-03", "male", district="337401")
    action = {
        "type": "change-identifier",
        "patient": old["id"],
        "old": {"system": "urn:oid:2.16.360.RSUD-A", "value": "OLD-1"},
        "new": {"system": "urn:oid:2.16.360.RSUD-A", "value": "NEW-1"},
    }
    ingest(session, "RSUD-A", new, actions=[action])
    retired = store.read(session, "Patient", old["id"])
    assert retired["active"] is False
    assert {"type": "replaced-by", "other": {"reference": f"Patient/{new['id']}"}} in retired["link"]
    assert {"type": "replaces", "other": {"reference": f"Patient/{old['id']}"}} in new["link"]
    assert refer(retired) == refer(new)


def test_replaying_a_message_writes_no_new_versions(session: Session) -> None:
    a = sari("RSUD-A", "1")
    b = sari("RS-B", "2")
    ingest(session, "RSUD-A", a)
    ingest(session, "RS-B", b)
    golden_version = session.get(Resource, ("Patient", refer(a)))
    source_version = session.get(Resource, ("Patient", b["id"]))
    assert golden_version is not None and source_version is not None
    before = (golden_version.version_id, source_version.version_id)
    ingest(session, "RS-B", sari("RS-B", "2"))
    assert (golden_version.version_id, source_version.version_id) == before
    assert len(session.scalars(select(MpiSource)).all()) == 2


def test_features_are_memoised_on_content_and_placeholders() -> None:
    import copy
    from decimal import Decimal

    from hub.mpi.match import MatchConfig, features

    a = sari("RSA", "1")
    assert service._features(a) is service._features(copy.deepcopy(a))  # equal content: computed once
    assert service._features(a) == features(a)
    # The placeholder list is part of the key: a configuration that declares "sari" a placeholder differs.
    strict = MatchConfig(placeholders=(r"^sari\b",))
    assert service._features(a, strict).placeholder and not service._features(a).placeholder
    # Content that is not plain JSON is not memoised, but still compared.
    odd = {**a, "extension": [{"url": "x", "valueDecimal": Decimal("1.5")}]}
    assert service._features(odd) == features(odd)


def test_unchanged_resend_does_not_rebuild_the_golden(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Most messages of a known patient repeat its demographics: the golden record is left alone (no
    rebuild, no new version), and the source still carries its link."""
    p = patient("RS_A", "A1", "Siti Aminah", "1990-05-15", "female", nik=NIK)
    with session_scope(engine) as session:
        ingest(session, "RS_A", dict(p))
    rebuilt: list[str] = []
    real = service.rebuild_golden
    monkeypatch.setattr(
        service, "rebuild_golden", lambda s, g, *a, **k: (rebuilt.append(g), real(s, g, *a, **k))[1]
    )
    with session_scope(engine) as session:
        result = MappingResult(resources=[dict(p)])
        with recorded_statements(engine) as statements:
            service.resolve_identities(session, result, SenderContext(facility="RS_A"))
        again = result.resources[0]
    # One read of the source's row (with the sources merged into it): no candidate search, no locks.
    assert len(statements) == 1 and "FROM mpi_source" in statements[0], "\n---\n".join(statements)
    assert rebuilt == [] and refer(again)
    changed = {**p, "telecom": [{"system": "phone", "value": "+62811000111"}]}
    with session_scope(engine) as session:
        ingest(session, "RS_A", changed)
    assert len(rebuilt) == 1


def test_a_key_shared_by_too_many_sources_is_left_out(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A clinic's phone number given for every patient would make every patient a candidate of every
    other: a key whose block is larger than MAX_BLOCK is ignored, the selective keys still find the match."""
    monkeypatch.setattr(service, "MAX_BLOCK", 2)
    clinic = "0215550000"
    people = [
        patient("RSUD-A", "1", "Bambang Wibowo", "1961-02-11", "male", phone=clinic),
        patient("RSUD-A", "2", "Yuni Kartika", "1987-09-30", "female", phone=clinic),
        patient("RSUD-A", "3", "Hendra Gunawan", "1979-12-01", "male", phone=clinic),
    ]
    for p in people:
        ingest(session, "RSUD-A", p)
    assert len({refer(p) for p in people}) == 3
    same = patient("RS-B", "9", "Bambang Wibowo", "1961-02-11", "male", phone=clinic)
    ingest(session, "RS-B", same)
    assert refer(same) == refer(people[0])
    # Sharing nothing but the crowded phone number: no candidate is even read.
    read: list[str] = []
    real = service._features_of_stored
    monkeypatch.setattr(
        service, "_features_of_stored", lambda raw, cfg: (read.append(raw), real(raw, cfg))[1]
    )
    stranger = patient("RS-B", "10", "Sinta Maharani", "2001-04-04", "female", phone=clinic)
    assert service.find_candidates(session, features(stranger)) == [] and read == []
    monkeypatch.setattr(service, "MAX_BLOCK", 500)
    service.find_candidates(session, features(stranger))
    assert len(read) == 4  # without the cap, every patient given that number
