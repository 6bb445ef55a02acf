"""The record stays with the right person (issue 13, item 1), through the real intake, pipeline and API.

- Two patients sent with the same order, filler, visit and immunization numbers (ORC-3, OBR-3, PV1-19,
  the RXA's ORC-3): each patient's ``$everything`` holds exactly its own resources.
- Where a sender's ids are not scoped to the patient (an overlay keying them by facility, as a lab whose
  counter restarts would need): the second patient's message is held (``patient-conflict``), the operator
  view names both patients, the first patient's record is untouched; releasing it applies it; replaying
  a message of the same patient is an update.
- Shared resources merge: an ORU's sparse PV1 keeps the ADT's Encounter class, location and period; the
  messages out of order give the same Encounter; a later event's status wins.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from hub import pipeline
from hub.app import create_app
from hub.auth import issue_token
from hub.cli import app as cli_app
from hub.config import Settings, get_settings
from hub.db import get_engine, get_read_engine, session_scope
from hub.ingest.service import Intake
from hub.mapping import configure, mappings_dir, patient_id
from hub.store import resources as store
from hub.store.models import InboundMessage, MpiSource, Resource, ResourceContribution, Sender
from tests.conftest import _truncate

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hl7"
FACILITY = "RSUD_SEHAT"
P1 = patient_id(FACILITY, "RM001234", "RSUD_SEHAT")
P2 = patient_id(FACILITY, "RM009999", "RSUD_SEHAT")


def _fixture(name: str) -> str:
    return (FIXTURES / f"{name}.hl7").read_bytes().decode()


def _second_patient(raw: str) -> str:
    """The same message for another (synthetic) person: other MRN, NIK, BPJS number, name, birth date
    and control id; the order, filler, visit and immunization numbers stay as they are."""
    return (
        raw.replace("RM001234", "RM009999")
        .replace("3171234567890001", "3275019876540002")
        .replace("0001234567890", "0009876543210")
        .replace("Santoso^Budi^Hartono^^Bpk.", "Wibowo^Agus^^^Sdr.")
        .replace("19800115", "19751120")
        .replace("budi.santoso", "agus.wibowo")
        .replace("|P|2.5.1", "-2|P|2.5.1")
    )


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_url, var_dir=tmp_path / "var")


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    app = create_app(settings)
    yield TestClient(app, base_url="http://hub.test")
    get_engine(settings.sqlalchemy_url).dispose()
    get_read_engine(settings.sqlalchemy_url).dispose()


@pytest.fixture
def token(settings: Settings) -> Callable[[str], dict[str, str]]:
    def make(role: str = "clinician") -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_token(settings, role)}"}

    return make


@pytest.fixture
def legacy_ids(engine: Engine, tmp_path: Path) -> Iterator[None]:
    """The sender's overlay keys Immunization, DiagnosticReport, Observation and Encounter ids by facility
    and number only (not by patient): a reused number names the same resource for another patient."""
    original = mappings_dir()
    root = tmp_path / "mappings"
    shutil.copytree(original, root)
    overlay = root / "senders" / "legacy_ids"
    (overlay / "segments").mkdir(parents=True)
    (overlay / "sender.yaml").write_text("sender: legacy_ids\ndescription: ids keyed by facility\n")
    rules = {
        "RXA.Immunization": ("RXA", "Immunization", "[ORC-3.1], extra: [ORC-3.2, RXA-5.1]"),
        "OBR.DiagnosticReport": ("OBR", "DiagnosticReport", "[OBR-3.1], extra: [OBR-3.2]"),
        "OBX.Observation": ("OBX", "Observation", "[OBR-3.1, OBX-3.1], extra: [OBR-3.2, OBX-3.3, OBX-4]"),
        "PV1.Encounter": ("PV1", "Encounter", "[PV1-19.1], extra: [PV1-19.4]"),
    }
    for name, (segment, resource, keys) in rules.items():
        (overlay / "segments" / f"{name}.yaml").write_text(
            f"segment: {segment}\nresource: {resource}\nextends: {name}\n"
            f"id:\n  - {{keys: {keys}, scope: facility}}\n"
        )
    with session_scope(engine) as session:
        session.add(Sender(facility=FACILITY, name=FACILITY, overlay="legacy_ids"))
    configure(root)
    try:
        yield
    finally:
        configure(original)


def _send(engine: Engine, *raws: str) -> list[pipeline.Outcome]:
    """Accept each message and process it (one batch each, in order)."""
    intake = Intake(engine, Settings())
    outcomes = []
    for raw in raws:
        accepted = intake.accept(raw.encode())
        assert accepted.message_id is not None
        with session_scope(engine) as session:
            outcomes.extend(pipeline.process_batch(session, [accepted.message_id]))
    return outcomes


def _golden(engine: Engine, source: str) -> str:
    with Session(engine) as session:
        row = session.get(MpiSource, source)
        assert row is not None, "the source Patient is linked"
        return row.golden_id


def _everything(client: TestClient, headers: dict[str, str], patient: str) -> dict[str, dict[str, Any]]:
    """Type/id → resource of every entry of the patient's $everything (all pages)."""
    out: dict[str, dict[str, Any]] = {}
    url: str | None = f"/fhir/Patient/{patient}/$everything?_count=500"
    while url:
        response = client.get(url, headers=headers)
        assert response.status_code == 200, response.text
        bundle = response.json()
        for entry in bundle.get("entry", []):
            r = entry["resource"]
            out[f"{r['resourceType']}/{r['id']}"] = r
        url = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)
        if url is not None:
            url = url.replace("http://hub.test", "")
    return out


def _patient_refs(resource: dict[str, Any]) -> set[str]:
    from hub.store.contributions import patients_of

    return set(patients_of(resource))


def _body(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "meta"}


MESSAGES = ("adt_a01", "oru_r01", "vxu_v04")


def test_reused_numbers_for_another_patient_leave_each_patient_its_own_record(
    engine: Engine, client: TestClient, token: Callable[[str], dict[str, str]]
) -> None:
    auth = token("clinician")
    first = [_fixture(name) for name in MESSAGES]
    assert {o.state for o in _send(engine, *first)} == {"processed"}
    before = _everything(client, auth, _golden(engine, P1))
    kinds = {key.split("/")[0] for key in before}
    assert {"Immunization", "DiagnosticReport", "Observation", "Encounter", "Coverage", "Specimen"} <= kinds
    outcomes = _send(engine, *[_second_patient(raw) for raw in first])
    assert [o.state for o in outcomes] == ["processed"] * 3
    g1, g2 = _golden(engine, P1), _golden(engine, P2)
    assert g1 != g2
    one, two = _everything(client, auth, g1), _everything(client, auth, g2)
    assert one.keys() == before.keys()  # nothing of the first patient moved or was added to
    assert all(one[k]["meta"]["versionId"] == before[k]["meta"]["versionId"] for k in one)
    # The patients' own resources (those naming a Patient) are two sets apart; what they share is
    # what names no patient (the doctors, the hospital, its wards).
    # A message's Provenance is in its patient's compartment (its target names the Patient) and belongs
    # to that patient alone, like the resources naming a Patient.
    mine1 = {k for k, r in one.items() if _patient_refs(r) or k.startswith("Provenance/")}
    mine2 = {k for k, r in two.items() if _patient_refs(r) or k.startswith("Provenance/")}
    assert not mine1 & mine2 and len(mine1) == len(mine2) > 10
    assert {f"Patient/{g1}", f"Patient/{P1}"} <= one.keys() and not {
        f"Patient/{g2}",
        f"Patient/{P2}",
    } & one.keys()
    shared1 = {k for k in one if k not in mine1 and not k.startswith("Patient/")}
    assert shared1 == {k for k in two if k not in mine2 and not k.startswith("Patient/")}
    own1 = {g1, P1}
    own2 = {g2, P2}
    for key, resource in one.items():
        refs = _patient_refs(resource)
        assert not refs & own2, key
    for key, resource in two.items():
        refs = _patient_refs(resource)
        assert not refs & own1, key


def test_a_message_that_would_move_a_resource_to_another_patient_is_held_until_released(
    engine: Engine, client: TestClient, token: Callable[[str], dict[str, str]], legacy_ids: None
) -> None:
    auth, admin = token("clinician"), token("admin")
    first = [_fixture(name) for name in MESSAGES]
    assert {o.state for o in _send(engine, *first)} == {"processed"}
    g1 = _golden(engine, P1)
    before = _everything(client, auth, g1)
    immunizations = [k for k in before if k.startswith("Immunization/")]
    assert len(immunizations) == 1
    # The second patient's VXU names the same Immunization (the overlay's ids): held, nothing applied.
    (held,) = _send(engine, _second_patient(_fixture("vxu_v04")))
    assert (held.state, held.error_code) == ("held", "patient-conflict")
    view = client.get(f"/hl7/messages/{held.message_id}", headers=admin).json()
    assert view["state"] == "held" and view["error_code"] == "patient-conflict"
    conflict = view["patient_conflict"]
    assert conflict["resource"] == immunizations[0]
    assert (conflict["stored_patient"], conflict["message_patient"]) == (P1, P2)
    assert f"Patient/{P1}" in view["error_text"] and f"Patient/{P2}" in view["error_text"]
    assert view["resources"] == []
    listed = client.get("/hl7/messages?state=held", headers=admin).json()["messages"]
    assert [m["id"] for m in listed] == [held.message_id]
    after = _everything(client, auth, g1)
    assert {k: r["meta"]["versionId"] for k, r in after.items()} == {
        k: r["meta"]["versionId"] for k, r in before.items()
    }
    with Session(engine) as session:  # the identity step was rolled back with the rest
        assert session.get(Resource, ("Patient", P2)) is None
        assert session.get(MpiSource, P2) is None
    # Replaying a held message without accepting the change holds it again.
    with session_scope(engine) as session:
        (again,) = pipeline.process_batch(session, [held.message_id], force=True)
    assert again.state == "held"
    # Only an admin releases; only a held message is released.
    assert client.post(f"/hl7/messages/{held.message_id}/release", headers=auth).status_code == 403
    processed_id = _first_message_id(engine)
    assert client.post(f"/hl7/messages/{processed_id}/release", headers=admin).status_code == 409
    released = client.post(f"/hl7/messages/{held.message_id}/release", headers=admin)
    assert released.status_code == 200, released.text
    body = released.json()
    assert body["state"] == "processed" and body["patient_conflict"] is None
    assert body["released"]["message_patient"] == P2
    with Session(engine) as session:
        moved = store.read(session, *immunizations[0].split("/"))
    assert moved["patient"]["reference"] == f"Patient/{P2}" and moved["meta"]["versionId"] == "2"
    two = _everything(client, auth, _golden(engine, P2))
    assert immunizations[0] in two
    assert immunizations[0] not in _everything(client, auth, g1)


def _first_message_id(engine: Engine) -> int:
    with Session(engine) as session:
        found = session.scalar(select(func.min(InboundMessage.id)))
        assert found is not None
        return found


def test_replaying_a_message_of_the_same_patient_is_an_update(
    engine: Engine, client: TestClient, token: Callable[[str], dict[str, str]], legacy_ids: None
) -> None:
    outcomes = _send(engine, *[_fixture(name) for name in MESSAGES])
    assert {o.state for o in outcomes} == {"processed"}
    with Session(engine) as session:
        count = session.scalar(select(func.count()).select_from(Resource))
    with session_scope(engine) as session:
        replayed = pipeline.process_batch(session, [o.message_id for o in outcomes], force=True)
    assert [o.state for o in replayed] == ["processed"] * 3
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(Resource)) == count
        immunization = session.scalars(select(Resource).where(Resource.resource_type == "Immunization")).one()
        assert immunization.version_id == 1 and immunization.patient_id == P1


def test_hub_replay_accept_patient_change_releases_a_held_message(
    engine: Engine, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, legacy_ids: None
) -> None:
    _send(engine, _fixture("vxu_v04"))
    (held,) = _send(engine, _second_patient(_fixture("vxu_v04")))
    assert held.state == "held"
    monkeypatch.delenv("HUB_BROKER_URL", raising=False)
    monkeypatch.setenv("HUB_DATABASE_URL", database_url)
    monkeypatch.setenv("HUB_VAR_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        plain = runner.invoke(cli_app, ["replay", "--id", str(held.message_id)])
        assert "1 held" in plain.output and "--accept-patient-change" in plain.output
        bad = runner.invoke(cli_app, ["replay", "--state", "held", "--accept-patient-change"])
        assert bad.exit_code == 2
        result = runner.invoke(cli_app, ["replay", "--id", str(held.message_id), "--accept-patient-change"])
        assert result.exit_code == 0, result.output
        assert "1 processed" in result.output
    finally:
        get_settings.cache_clear()
    with Session(engine) as session:
        row = session.get(InboundMessage, held.message_id)
        assert row is not None and row.state == "processed" and row.patient_conflict is None
        immunization = session.scalars(select(Resource).where(Resource.resource_type == "Immunization")).one()
        assert immunization.patient_id == P2


# --- shared resources merge ---------------------------------------------------------------------------


def _encounter(engine: Engine) -> dict[str, Any]:
    with Session(engine) as session:
        (row,) = session.scalars(select(Resource).where(Resource.resource_type == "Encounter")).all()
        return store.read(session, "Encounter", row.id)


def test_a_results_sparse_pv1_keeps_the_admissions_encounter(engine: Engine) -> None:
    assert {o.state for o in _send(engine, _fixture("adt_a01"))} == {"processed"}
    admitted = _encounter(engine)
    assert admitted["class"]["code"] == "IMP" and admitted["location"] and admitted["status"] == "in-progress"
    assert {o.state for o in _send(engine, _fixture("oru_r01"))} == {"processed"}
    after = _encounter(engine)
    assert after["class"] == admitted["class"]
    assert after["location"] == admitted["location"]
    assert after.get("period") == admitted.get("period") and after["status"] == "in-progress"
    assert after["participant"] == admitted["participant"]
    # The same messages in the other order (the result first): the same Encounter.
    in_order = _body(after)
    _truncate(engine)
    _send(engine, _fixture("oru_r01"))
    _send(engine, _fixture("adt_a01"))
    assert _body(_encounter(engine)) == in_order
    # A replay of the admission changes nothing.
    with Session(engine) as session:
        ids = list(session.scalars(select(InboundMessage.id).order_by(InboundMessage.id)))
    with session_scope(engine) as session:
        pipeline.process_batch(session, ids, force=True)
    assert _body(_encounter(engine)) == in_order


def test_a_later_events_status_wins(engine: Engine) -> None:
    a01 = _fixture("adt_a01")
    a03 = _fixture("adt_a03").replace("20261101083000", "20261105120000")  # discharged four days later
    _send(engine, a01, a03)
    discharged = _encounter(engine)
    assert discharged["status"] == "finished"
    assert discharged["class"]["code"] == "IMP" and discharged["location"]
    _send(engine, _fixture("oru_r01"))  # a result after the discharge: its PV1 knows no status
    assert _encounter(engine)["status"] == "finished"
    with Session(engine) as session:  # the admission again (a replay, after the discharge)
        first = session.scalar(select(func.min(InboundMessage.id)))
    with session_scope(engine) as session:
        (outcome,) = pipeline.process_batch(session, [int(first or 0)], force=True)
    assert outcome.state == "processed"
    final = _encounter(engine)
    assert final["status"] == "finished" and _body(final) == _body(_encounter(engine))
    with Session(engine) as session:
        kept = session.scalar(select(func.count()).select_from(ResourceContribution))
        assert kept is not None and kept > 0


def test_a_result_correction_replaces_the_observation_whole(engine: Engine) -> None:
    oru = _fixture("oru_r01")
    _send(engine, oru)
    corrected = oru.replace("|ORU0001|", "|ORU0002|").replace("|70-99|HH|||C|", "|70-99||||C|")
    _send(engine, corrected)
    with Session(engine) as session:
        glucose = [
            store.read(session, "Observation", r.id)
            for r in session.scalars(select(Resource).where(Resource.resource_type == "Observation"))
        ]
    (found,) = [o for o in glucose if o["code"]["coding"][0]["code"] == "2345-7"]
    assert "interpretation" not in found and found["meta"]["versionId"] == "2"


def test_an_update_with_a_sparse_pv1_adds_to_the_encounter_instead_of_blanking_it(engine: Engine) -> None:
    """An A08 whose PV1 carries only the class and the visit number (a registration desk's update):
    the Encounter keeps the admission's location, period and doctors."""
    _send(engine, _fixture("adt_a01"))
    admitted = _encounter(engine)
    a08 = (
        _fixture("adt_a08").replace("20261101083000", "20261102090000").split("\rPV1|", 1)[0].rstrip("\r")
        + "\rPV1|1|I|||||||||||||||||V0001^^^RSUD_SEHAT^VN\r"
    )
    (outcome,) = _send(engine, a08)
    assert outcome.state == "processed"
    updated = _encounter(engine)
    for element in ("class", "location", "period", "participant", "subject"):
        assert updated.get(element) == admitted.get(element), element


def _sr(engine: Engine) -> dict[str, Any]:
    with Session(engine) as session:
        (row,) = session.scalars(select(Resource).where(Resource.resource_type == "ServiceRequest")).all()
        return store.read(session, "ServiceRequest", row.id)


def test_the_result_of_an_order_keeps_what_the_order_said(engine: Engine) -> None:
    """ORM then ORU for one order: the ServiceRequest keeps the order's note, reason and priority and
    takes the result's filler number and status; the other order of arrival gives the same resource."""
    orm = _fixture("orm_o01")
    oru = (
        _fixture("oru_r01")
        .replace("PO-5001", "PO-6001")
        .replace("24323-8^Comprehensive metabolic panel^LN", "36643-5^XR Chest 2 Views^LN")
        .replace("20261101083000+0700", "20261101110000+0700")
    )
    _send(engine, orm)
    ordered = _sr(engine)
    assert ordered.get("note") and ordered.get("reasonCode")
    _send(engine, oru)
    resulted = _sr(engine)
    assert resulted["note"] == ordered["note"] and resulted["reasonCode"] == ordered["reasonCode"]
    assert resulted.get("priority") == ordered.get("priority")
    assert any(i.get("value") == "LAB-9001" for i in resulted["identifier"])
    assert resulted["meta"]["versionId"] == "2"
    in_order = _body(resulted)
    _truncate(engine)
    _send(engine, oru)
    _send(engine, orm)
    assert _body(_sr(engine)) == in_order
    # Both in one batch (the contributions of the first are still held when the second reads them).
    _truncate(engine)
    intake = Intake(engine, Settings())
    ids = [intake.accept(raw.encode()).message_id for raw in (orm, oru)]
    with session_scope(engine) as session:
        outcomes = pipeline.process_batch(session, [i for i in ids if i is not None])
    assert [o.state for o in outcomes] == ["processed", "processed"]
    assert _body(_sr(engine)) == in_order
    with Session(engine) as session:
        assert session.scalar(select(func.count()).select_from(ResourceContribution)) >= 2


def test_merging_contributions() -> None:
    from hub.store.contributions import merge, merged

    admitted = {
        "status": "in-progress",
        "class": {"system": "v3", "code": "IMP", "display": "inpatient encounter"},
        "identifier": [{"system": "urn:visit", "value": "V1"}],
        "period": {"start": "2026-11-01"},
        "location": [{"location": {"reference": "Location/w3"}, "status": "active"}],
    }
    later = {
        "status": "unknown",
        "class": {"system": "v3", "code": "AMB"},
        "identifier": [{"system": "urn:visit", "value": "V1", "type": {"text": "visit"}}],
        "period": {"end": "2026-11-05"},
        "location": [
            {"location": {"reference": "Location/w3"}, "status": "completed"},
            {"location": {"reference": "Location/w4"}, "status": "active"},
        ],
    }
    out = merge(admitted, later)
    assert out["status"] == "in-progress"  # "unknown" never replaces a known status
    assert out["class"] == {"system": "v3", "code": "AMB"}  # a Coding is one value: no stale display
    assert out["identifier"] == later["identifier"]  # the same identifier, not a second one
    assert out["period"] == {"start": "2026-11-01", "end": "2026-11-05"}
    assert [(x["location"]["reference"], x["status"]) for x in out["location"]] == [
        ("Location/w3", "completed"),
        ("Location/w4", "active"),
    ]
    assert merge(out, {"status": "finished"})["status"] == "finished"
    assert merged([admitted, later]) == out and admitted["status"] == "in-progress"  # inputs unchanged


def test_a_choice_element_holds_one_type_after_a_merge() -> None:
    """The order's OBR-7 makes ``collection.collectedDateTime``, the result's OBR-7/8 a ``collectedPeriod``:
    the merged Specimen has the later one only (a choice element with two types is invalid R4)."""
    from hub.store.contributions import merge

    ordered = {"collection": {"collectedDateTime": "2026-11-01T08:00:00+07:00", "quantity": {"value": 5}}}
    resulted = {
        "collection": {
            "collectedPeriod": {"start": "2026-11-01T08:00:00+07:00", "end": "2026-11-01T08:10:00+07:00"}
        }
    }
    out = merge(ordered, resulted)
    assert set(out["collection"]) == {"collectedPeriod", "quantity"}
    assert set(merge(out, ordered)["collection"]) == {"collectedDateTime", "quantity"}
    # two lists of R4 (reasonCode, reasonReference) are not one choice element
    reasons = {"reasonCode": [{"text": "fever"}]}
    assert set(merge(reasons, {"reasonReference": [{"reference": "Condition/c1"}]})) == {
        "reasonCode",
        "reasonReference",
    }
    # names that merely start alike are not choices of one another
    assert merge({"valueQuantity": {"value": 1}, "status": "final"}, {"statusReason": {"text": "x"}}) == {
        "valueQuantity": {"value": 1},
        "status": "final",
        "statusReason": {"text": "x"},
    }
