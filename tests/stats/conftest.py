"""A synthetic population whose true counts are known: people in several provinces and regencies, of
both sexes and all ages, each a golden Patient with one or two source Patients (two hospitals), with
encounters, diagnoses, immunisations and lab results across weeks. Everything is stored through the
resource store, so the statistics facts come from the write hook."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from hub.app import create_app
from hub.auth import issue_token
from hub.config import Settings
from hub.db import get_engine, get_read_engine, session_scope
from hub.store import resources

GOLDEN_TAG = {"system": "https://hub.kemkes.go.id/fhir/CodeSystem/mpi", "code": "golden"}
# (province, regency, district) codes, and how the source addresses write them.
PLACES = [
    ("31", "3171", "317101"),  # Jakarta Pusat, Gambir
    ("31", "3174", "317401"),  # Jakarta Selatan
    ("32", "3273", "327301"),  # Kota Bandung
    ("33", "3374", "337401"),  # Kota Semarang
]
MONDAY_W10 = date(2026, 3, 2)  # ISO week 2026W10 starts on Monday 2 March


@dataclass
class Person:
    golden: str
    sources: list[str]
    sex: str
    birth: date
    place: tuple[str, str, str]
    facts: list[dict[str, Any]] = field(default_factory=list)


def patient(pid: str, person: Person, *, golden: bool, style: int) -> dict[str, Any]:
    province, regency, district = person.place
    if style == 0:  # SATUSEHAT's administrativeCode extension
        address = {
            "use": "home",
            "line": ["Jl. Contoh 1"],
            "extension": [
                {
                    "url": "https://fhir.kemkes.go.id/r4/StructureDefinition/administrativeCode",
                    "extension": [
                        {"url": "province", "valueCode": province},
                        {"url": "city", "valueCode": regency},
                        {"url": "district", "valueCode": district},
                    ],
                }
            ],
        }
    elif style == 1:  # codes in the address parts
        address = {"use": "home", "district": district, "city": regency, "state": province}
    else:  # names only
        from hub.stats.regions import regions

        table = regions()
        address = {"use": "home", "city": table.name(regency), "state": table.name(province)}
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "id": pid,
        "gender": person.sex,
        "birthDate": person.birth.isoformat(),
        "address": [address],
    }
    if golden:
        body["meta"] = {"tag": [GOLDEN_TAG]}
        body["link"] = [{"other": {"reference": f"Patient/{s}"}, "type": "seealso"} for s in person.sources]
    else:
        body["link"] = [{"other": {"reference": f"Patient/{person.golden}"}, "type": "refer"}]
    return body


def encounter(eid: str, pid: str, start: date, end: date | None, klass: str, facility: str) -> dict[str, Any]:
    period: dict[str, str] = {"start": f"{start.isoformat()}T08:00:00+07:00"}
    if end is not None:
        period["end"] = f"{end.isoformat()}T10:00:00+07:00"
    return {
        "resourceType": "Encounter",
        "id": eid,
        "status": "finished" if end else "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": klass},
        "identifier": [{"system": f"urn:hub:id:{facility}:{facility}", "value": eid}],
        "period": period,
        "subject": {"reference": f"Patient/{pid}"},
    }


def condition(
    cid: str, pid: str, code: str, onset: date | None, encounter_id: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Condition",
        "id": cid,
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": code}]},
        "subject": {"reference": f"Patient/{pid}"},
    }
    if onset is not None:
        body["onsetDateTime"] = onset.isoformat()
    if encounter_id:
        body["encounter"] = {"reference": f"Encounter/{encounter_id}"}
    return body


def immunization(iid: str, pid: str, cvx: str, when: date, dose: int) -> dict[str, Any]:
    return {
        "resourceType": "Immunization",
        "id": iid,
        "status": "completed",
        "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": cvx}]},
        "patient": {"reference": f"Patient/{pid}"},
        "occurrenceDateTime": when.isoformat(),
        "protocolApplied": [{"doseNumberPositiveInt": dose}],
    }


def lab(oid: str, pid: str, loinc: str, when: date, positive: bool) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "laboratory",
                    }
                ]
            }
        ],
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
        "subject": {"reference": f"Patient/{pid}"},
        "effectiveDateTime": f"{when.isoformat()}T09:00:00+07:00",
        "interpretation": [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
                        "code": "POS" if positive else "NEG",
                    }
                ]
            }
        ],
    }


@dataclass
class Population:
    people: list[Person]
    resources: list[dict[str, Any]]


def build_population(seed: int = 7, size: int = 160) -> Population:
    rnd = random.Random(seed)
    people: list[Person] = []
    out: list[dict[str, Any]] = []
    for n in range(size):
        place = PLACES[rnd.randrange(len(PLACES))] if n % 9 else PLACES[0]
        sex = "female" if rnd.random() < 0.5 else "male"
        age_days = rnd.choice([100, 800, 3000, 9000, 20000, 25000])
        birth = MONDAY_W10 - timedelta(days=age_days + rnd.randrange(60))
        golden = f"g{n}"
        sources = [f"s{n}a"] + ([f"s{n}b"] if n % 3 == 0 else [])  # a third seen by two hospitals
        person = Person(golden, sources, sex, birth, place)
        people.append(person)
        out.append(patient(golden, person, golden=True, style=n % 3))
        for i, s in enumerate(sources):
            out.append(patient(s, person, golden=False, style=(n + i) % 3))
        # Each source hospital records the visit: the person has 1 or 2 encounters but is one person.
        week = n % 3  # weeks W10, W11, W12
        day = MONDAY_W10 + timedelta(days=7 * week + n % 7)
        for i, s in enumerate(sources):
            facility = "RSUD-A" if i == 0 else "RS-B"
            inpatient = n % 4 == 0
            end = day + timedelta(days=1 + n % 5) if inpatient else day
            eid = f"e{n}{i}"
            out.append(encounter(eid, s, day, end, "IMP" if inpatient else "AMB", facility))
            person.facts.append(
                {
                    "kind": "encounter",
                    "start": day,
                    "end": end,
                    "class": "IMP" if inpatient else "AMB",
                    "facility": facility,
                }
            )
            if n % 2 == 0:  # dengue: A90 (a third as A91), the date from the encounter for some
                code = "A91" if n % 10 == 0 else "A90"
                onset = None if n % 5 == 0 else day
                out.append(condition(f"c{n}{i}", s, code, onset, eid))
                person.facts.append({"kind": "condition", "code": code, "start": day})
            if n % 7 == 0:
                out.append(condition(f"h{n}{i}", s, "I10", day, eid))
                person.facts.append({"kind": "condition", "code": "I10", "start": day})
        if person_age(person, MONDAY_W10) < 1 or n % 5 == 0:
            s = sources[0]
            out.append(immunization(f"i{n}", s, "03", day, 1))
            person.facts.append({"kind": "immunization", "code": "03", "start": day, "dose": 1})
        if n % 2 == 1:
            s = sources[-1]
            positive = n % 3 == 1
            out.append(lab(f"o{n}", s, "94558-4", day, positive))
            person.facts.append({"kind": "lab", "code": "94558-4", "start": day, "positive": positive})
    return Population(people, out)


def person_age(person: Person, on: date) -> int:
    return on.year - person.birth.year - ((on.month, on.day) < (person.birth.month, person.birth.day))


def band(age: int) -> str:
    return (
        "<1" if age < 1 else "1-4" if age <= 4 else "5-14" if age <= 14 else "15-49" if age <= 49 else "50+"
    )


@pytest.fixture
def stats_settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_url, var_dir=tmp_path / "var")


@pytest.fixture
def stats_client(stats_settings: Settings, engine: Engine) -> Iterator[TestClient]:
    app = create_app(stats_settings)
    yield TestClient(app, base_url="http://hub.test")
    get_engine(stats_settings.sqlalchemy_url).dispose()
    get_read_engine(stats_settings.sqlalchemy_url).dispose()


@pytest.fixture
def role(stats_settings: Settings) -> Callable[[str], dict[str, str]]:
    def make(name: str = "ministry") -> dict[str, str]:
        return {"Authorization": f"Bearer {issue_token(stats_settings, name)}"}

    return make


@pytest.fixture
def store(engine: Engine) -> Callable[..., None]:
    def put(items: list[dict[str, Any]], chunk: int = 50) -> None:
        for i in range(0, len(items), chunk):
            with session_scope(engine) as session:
                resources.upsert_many(session, items[i : i + chunk])

    return put


@pytest.fixture
def population(store: Callable[..., None]) -> Population:
    pop = build_population()
    store(pop.resources)
    return pop
