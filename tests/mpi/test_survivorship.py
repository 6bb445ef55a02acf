"""Golden-record survivorship: one test per rule, the source recorded on every element, the rules
configurable, and a sparse message from another facility never shrinking the golden record."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from hub.config import get_settings
from hub.fhir.validate import validate_resource
from hub.mpi import service
from hub.mpi.service import GOLDEN_TAG
from hub.mpi.survivorship import SOURCE_EXTENSION, build_golden, check_rules, without_origin
from hub.store import resources as store
from tests.mpi.builders import ingest, patient, refer

NIK = "3273010312850001"  # a man born 1985-12-03
T0 = datetime(2026, 11, 1, tzinfo=UTC)


@dataclass
class Src:
    id: str
    facility: str
    content: dict[str, Any]
    updated_at: datetime
    active: bool = True


def src(sid: str, facility: str, minutes: int, content: dict[str, Any]) -> Src:
    return Src(sid, facility, content, T0 + timedelta(minutes=minutes))


def origin(value: dict[str, Any]) -> tuple[str, str]:
    """(source id, rule) of a golden element's survivorship extension."""
    (ext,) = [e for e in value.get("extension") or [] if e["url"] == SOURCE_EXTENSION]
    parts = {e["url"]: e for e in ext["extension"]}
    return parts["source"]["valueReference"]["reference"].removeprefix("Patient/"), parts["rule"]["valueCode"]


def golden(*sources: Src, **kw: Any) -> dict[str, Any]:
    return build_golden("g1", list(sources), tag=GOLDEN_TAG, **kw)


def test_a_fuller_name_that_contains_the_shorter_beats_it() -> None:
    full = src("a", "RSUD-A", 0, {"name": [{"text": "Bpk. Budi Hartono Santoso"}]})
    sparse = src("b", "PKM-B", 10, {"name": [{"family": "Santoso", "given": ["Budi"]}]})  # more recent
    g = golden(full, sparse)
    assert g["name"][0]["text"] == "Bpk. Budi Hartono Santoso" and origin(g["name"][0]) == ("a", "fuller")
    # A different name that does not contain it is no "fuller" one: the most recent wins then.
    other = src("c", "PKM-B", 20, {"name": [{"text": "Budi Santosa"}]})
    g = golden(src("a", "RSUD-A", 0, {"name": [{"text": "Budi Santoso"}]}), other)
    assert g["name"][0]["text"] == "Budi Santosa" and origin(g["name"][0]) == ("c", "recent")


def test_a_nik_bearing_source_beats_one_without() -> None:
    nik = {"system": "https://fhir.kemkes.go.id/id/nik", "value": NIK}
    with_nik = src("a", "RSUD-A", 0, {"identifier": [nik], "birthDate": "1985-12-03", "gender": "male"})
    without = src("b", "PKM-B", 10, {"birthDate": "1985-12-30", "gender": "male"})
    g = golden(with_nik, without)
    assert g["birthDate"] == "1985-12-03"
    assert origin(g["_birthDate"]) == ("a", "nik")


def test_the_most_recent_address_and_telecom() -> None:
    old = src(
        "a",
        "RSUD-A",
        0,
        {"address": [{"line": ["Jl. Mawar 1"], "city": "Bandung"}], "telecom": [{"value": "0811"}]},
    )
    new = src(
        "b",
        "PKM-B",
        10,
        {"address": [{"line": ["Jl. Melati 9"], "city": "Jakarta"}], "telecom": [{"value": "0812"}]},
    )
    g = golden(old, new)
    assert g["address"][0]["line"] == ["Jl. Melati 9"] and origin(g["address"][0]) == ("b", "recent")
    assert g["telecom"][0]["value"] == "0812" and origin(g["telecom"][0]) == ("b", "recent")
    # A newer address that is only a part of the one known (the city alone) does not replace it.
    part = src("c", "PKM-C", 20, {"address": [{"city": "Jakarta"}]})
    g = golden(new, part)
    assert g["address"][0]["line"] == ["Jl. Melati 9"] and origin(g["address"][0]) == ("b", "fuller")


def test_the_configured_trust_order_of_facilities() -> None:
    trusted = src("a", "RSUP-PUSAT", 0, {"birthDate": "1985-12-03", "maritalStatus": {"text": "M"}})
    later = src("b", "PKM-B", 10, {"birthDate": "1985-12-30", "maritalStatus": {"text": "S"}})
    assert golden(trusted, later)["birthDate"] == "1985-12-30"  # no trust configured: the most recent
    g = golden(trusted, later, trust={"RSUP-PUSAT": 10, "PKM-B": 1})
    assert g["birthDate"] == "1985-12-03" and origin(g["_birthDate"]) == ("a", "trust")
    assert g["maritalStatus"]["text"] == "M" and origin(g["maritalStatus"]) == ("a", "trust")


def test_never_lose_an_identifier() -> None:
    a = src("a", "RSUD-A", 0, {"identifier": [{"system": "urn:a", "value": "1"}]})
    b = src(
        "b",
        "PKM-B",
        10,
        {"identifier": [{"system": "urn:b", "value": "2"}, {"system": "urn:a", "value": "1"}]},
    )
    retired = Src("c", "RS-C", {"identifier": [{"system": "urn:c", "value": "3"}]}, T0, active=False)
    g = golden(a, b, retired)
    assert [(i["system"], i["value"]) for i in g["identifier"]] == [
        ("urn:b", "2"),
        ("urn:a", "1"),
        ("urn:c", "3"),
    ]
    assert [origin(i)[1] for i in g["identifier"]] == ["union"] * 3
    assert origin(g["identifier"][2])[0] == "c"


def test_active_sources_before_retired_ones() -> None:
    retired = Src(
        "a", "RSUP-PUSAT", {"name": [{"text": "Budi Hartono Santoso"}]}, T0 + timedelta(hours=1), False
    )
    active = src("b", "PKM-B", 0, {"name": [{"text": "Budi Santoso"}]})
    g = golden(retired, active, trust={"RSUP-PUSAT": 10})
    assert g["name"][0]["text"] == "Budi Santoso"  # not even a fuller name of a merged-away record


def test_rules_are_configurable_and_checked() -> None:
    new = src("b", "PKM-B", 10, {"address": [{"line": ["Jl. Melati 9"]}]})
    old = src("a", "RSUP-PUSAT", 0, {"address": [{"line": ["Jl. Mawar 1"]}]})
    g = golden(old, new, trust={"RSUP-PUSAT": 10}, rules=check_rules({"address": ["trust", "recent"]}))
    assert g["address"][0]["line"] == ["Jl. Mawar 1"]
    with pytest.raises(ValueError, match="unknown rule 'oldest'"):
        check_rules({"name": ["oldest"]})
    with pytest.raises(ValueError, match="unknown element 'hair'"):
        check_rules({"hair": ["recent"]})


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_MPI_SENDER_TRUST", '{"RSUP-PUSAT": 10}')
    monkeypatch.setenv("HUB_MPI_SURVIVORSHIP", '{"telecom": ["trust", "recent"]}')
    get_settings.cache_clear()
    try:
        settings = service.configured_settings()
        assert settings.sender_trust == {"RSUP-PUSAT": 10}
        assert settings.survivorship is not None and settings.survivorship["telecom"] == ("trust", "recent")
        assert settings.survivorship["name"] == ("fuller", "nik", "trust", "recent")
    finally:
        get_settings.cache_clear()


def test_the_golden_record_with_its_origins_is_valid_fhir() -> None:
    nik = {"system": "https://fhir.kemkes.go.id/id/nik", "value": NIK}
    a = src(
        "a",
        "RSUD-A",
        0,
        {
            "identifier": [nik],
            "name": [{"text": "Budi Santoso", "family": "Santoso", "given": ["Budi"]}],
            "gender": "male",
            "birthDate": "1985-12-03",
            "telecom": [{"system": "phone", "value": "081234567890"}],
            "address": [{"use": "home", "line": ["Jl. Mawar 1"]}],
            "maritalStatus": {
                "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M"}]
            },
            "deceasedBoolean": False,
        },
    )
    g = golden(a)
    assert validate_resource(g) == []
    assert origin(g["_gender"]) == ("a", "only") and origin(g["name"][0]) == ("a", "only")
    assert without_origin(g["name"]) == a.content["name"]


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine) as s, s.begin():
        yield s


def test_a_sparse_message_from_another_facility_never_shrinks_the_golden_record(session: Session) -> None:
    """Through the service: the full registration, then a sparse A04 of the same NIK from a puskesmas."""
    full = patient(
        "RSUD-A",
        "1",
        "Bpk. Budi Hartono Santoso",
        "1985-12-03",
        "male",
        nik=NIK,
        phone="081234567890",
        district="327301",
        line="Jl. Mawar 1",
    )
    sparse = patient("PKM-B", "7", "Budi Santoso", nik=NIK)
    sparse["name"] = [{"family": "Santoso", "given": ["Budi"]}]
    ingest(session, "RSUD-A", full)
    ingest(session, "PKM-B", sparse)
    assert refer(full) == refer(sparse)
    g = store.read(session, "Patient", refer(full))
    assert g["name"][0]["text"] == "Bpk. Budi Hartono Santoso" and origin(g["name"][0]) == (
        full["id"],
        "fuller",
    )
    assert g["birthDate"] == "1985-12-03" and g["telecom"][0]["value"] == "081234567890"
    assert without_origin(g["address"]) == full["address"]
    assert {(i["system"], i["value"]) for i in g["identifier"]} >= {
        (i["system"], i["value"]) for i in full["identifier"] + sparse["identifier"]
    }
