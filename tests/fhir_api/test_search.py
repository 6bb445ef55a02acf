"""Search through the API: every parameter type with its modifiers and prefixes, chaining, _has,
_include/_revinclude, _sort, _count paging, _summary, _elements, _total, unknown parameters and the
golden Patient's compartment. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from hub.db import session_scope
from hub.store import resources
from tests.fhir_api import builders as b
from tests.fhir_api.conftest import included_keys, match_ids

Search = Callable[..., list[str]]


@pytest.fixture
def clinic(put: Callable[..., None]) -> None:
    """Two hospitals' source Patients linked to one golden Patient, plus an unrelated patient."""
    put(
        b.patient(
            "gold",
            family="Santoso",
            given="Budi",
            nik="3201010101010001",
            links=[("seealso", "srcA"), ("seealso", "srcB")],
        ),
        b.patient(
            "srcA", family="Santoso", given="Budi", mrn="RSA-1", links=[("refer", "gold")], phone="0812-1"
        ),
        b.patient(
            "srcB",
            family="Santosa",
            given="Budi",
            mrn="RSB-9",
            links=[("refer", "gold")],
            birth_date="1980-05",
        ),
        b.patient(
            "other",
            family="Pérez",
            given="Ána",
            gender="female",
            birth_date="1995-12-01",
            mrn="RSA-2",
            city="Jakarta",
        ),
        b.practitioner("dr1", family="Wijaya"),
        b.location("loc1"),
        b.encounter(
            "encA", "srcA", start="2024-03-01T08:00:00Z", end="2024-03-01T12:00:00Z", location="loc1"
        ),
        b.observation(
            "obsA1", "srcA", value=118, effective="2024-03-01T09:00:00Z", encounter="encA", performer="dr1"
        ),
        b.observation(
            "obsA2",
            "srcA",
            code="8462-4",
            display="Diastolic blood pressure",
            value=78,
            effective="2024-03-01T09:00:00Z",
        ),
        b.observation("obsB1", "srcB", value=141.5, effective="2024-06-15T10:00:00+07:00"),
        b.observation(
            "obsB2",
            "srcB",
            code="2345-7",
            display="Glucose",
            system=b.LOINC,
            value=5.4,
            unit="mmol/L",
            effective="2024-06-15",
            category="laboratory",
        ),
        b.observation("obsO1", "other", value=125, effective="2023-12-31T23:00:00Z", status="amended"),
        b.condition("condB", "srcB", code="A90", onset="2024-06-10"),
        b.provenance("prov1", "Observation/obsA1"),
    )


@pytest.fixture
def search(client: TestClient, auth: dict[str, str]) -> Search:
    def run(url: str, **kw: Any) -> list[str]:
        r = client.get(url, headers=auth, **kw)
        assert r.status_code == 200, r.text
        return sorted(match_ids(r.json()))

    return run


@pytest.mark.usefixtures("clinic")
def test_token(search: Search) -> None:
    assert search("/fhir/Observation?code=8480-6") == ["obsA1", "obsB1", "obsO1"]
    assert search("/fhir/Observation?code=http://loinc.org|8462-4") == ["obsA2"]
    assert search("/fhir/Observation?code=http://snomed.info/sct|8462-4") == []
    assert search("/fhir/Observation?code=|8462-4") == []  # the coding has a system
    assert search("/fhir/Observation?status=|final") == ["obsA1", "obsA2", "obsB1", "obsB2"]
    assert search("/fhir/Observation?code=http://loinc.org|") == ["obsA1", "obsA2", "obsB1", "obsB2", "obsO1"]
    assert search("/fhir/Observation?code=8462-4,2345-7") == ["obsA2", "obsB2"]
    assert search("/fhir/Observation?code=&status=amended") == ["obsO1"]  # empty values are ignored
    assert search("/fhir/Observation?code:not=8480-6") == ["obsA2", "obsB2"]
    assert search("/fhir/Observation?code:text=diastolic") == ["obsA2"]
    assert search("/fhir/Observation?category=laboratory") == ["obsB2"]
    assert search(f"/fhir/Patient?identifier={b.MRN}|RSA-1") == ["srcA"]
    assert search("/fhir/Patient?identifier=RSB-9") == ["srcB"]
    assert search("/fhir/Patient?identifier:text=medical record") == ["other", "srcA", "srcB"]
    assert search("/fhir/Patient?gender=female") == ["other"]
    assert search("/fhir/Patient?phone=0812-1") == ["srcA"]
    assert search("/fhir/Patient?active=true&gender:not=female") == ["gold", "srcA", "srcB"]


@pytest.mark.usefixtures("clinic")
def test_string(search: Search) -> None:
    assert search("/fhir/Patient?family=santos") == ["gold", "srcA", "srcB"]
    assert search("/fhir/Patient?family=SANTOSO") == ["gold", "srcA"]
    assert search("/fhir/Patient?name=perez") == ["other"]  # accents and case ignored
    assert search("/fhir/Patient?given=ana") == ["other"]
    assert search("/fhir/Patient?family:exact=Santoso") == ["gold", "srcA"]
    assert search("/fhir/Patient?family:exact=santoso") == []
    assert search("/fhir/Patient?family:contains=ntosa") == ["srcB"]
    assert search("/fhir/Patient?family:contains=%25") == []  # LIKE wildcards are escaped
    assert search("/fhir/Patient?address-city=jak") == ["other"]
    assert search("/fhir/Patient?address=bandung&family=santosa") == ["srcB"]


@pytest.mark.usefixtures("clinic")
def test_date_prefixes(search: Search) -> None:
    day = "/fhir/Observation?date="
    assert search(day + "2024-03-01") == ["obsA1", "obsA2"]
    assert search(day + "eq2024-03") == ["obsA1", "obsA2"]
    assert search(day + "2024") == ["obsA1", "obsA2", "obsB1", "obsB2"]
    assert search(day + "ne2024") == ["obsO1"]
    assert search(day + "lt2024-01-01") == ["obsO1"]
    assert search(day + "gt2024-03-01") == ["obsB1", "obsB2"]
    assert search(day + "ge2024-03-01") == ["obsA1", "obsA2", "obsB1", "obsB2"]
    assert search(day + "le2024-03-01") == ["obsA1", "obsA2", "obsO1"]
    assert search(day + "sa2024-03-01") == ["obsB1", "obsB2"]
    assert search(day + "eb2024-03-01") == ["obsO1"]
    assert search(day + "ap2024-06-14") == ["obsB1", "obsB2"]
    # 10:00+07:00 is 03:00Z
    assert search(day + "2024-06-15T03:00:00Z") == ["obsB1"]
    assert search(day + "ge2024-06-15&date=lt2024-06-16") == ["obsB1", "obsB2"]
    # A month-precision birthDate is inside the year, but not inside one day of it.
    assert search("/fhir/Patient?birthdate=1980") == ["gold", "srcA", "srcB"]
    assert search("/fhir/Patient?birthdate=1980-05-17") == ["gold", "srcA"]
    assert search("/fhir/Patient?birthdate=ge1990") == ["other"]
    # Period: the encounter spans 08:00–12:00.
    assert search("/fhir/Encounter?date=2024-03-01") == ["encA"]
    assert search("/fhir/Encounter?date=gt2024-03-01T10:00:00Z") == ["encA"]
    assert search("/fhir/Encounter?date=eq2024-03-01T10:00:00Z") == []


@pytest.mark.usefixtures("clinic")
def test_last_updated_and_id(search: Search) -> None:
    assert search("/fhir/Patient?_id=srcA,other") == ["other", "srcA"]
    assert search("/fhir/Patient?_lastUpdated=gt2000-01-01") == ["gold", "other", "srcA", "srcB"]
    assert search("/fhir/Patient?_lastUpdated=lt2000-01-01") == []
    assert search("/fhir/Observation?patient._lastUpdated=gt2000-01-01&code=8462-4") == ["obsA2"]
    assert search("/fhir/Observation?patient._id=srcB") == ["obsB1", "obsB2"]
    assert search("/fhir/Patient?_has:Observation:patient:_lastUpdated=lt2000-01-01") == []


@pytest.mark.usefixtures("clinic")
def test_reference_and_golden_compartment(search: Search) -> None:
    assert search("/fhir/Observation?subject=Patient/srcA") == ["obsA1", "obsA2"]
    assert search("/fhir/Observation?subject:Patient=srcA") == ["obsA1", "obsA2"]
    assert search("/fhir/Observation?patient=srcB") == ["obsB1", "obsB2"]
    assert search("/fhir/Observation?subject:Device=srcA") == []
    assert search("/fhir/Observation?encounter=encA") == ["obsA1"]
    assert search("/fhir/Observation?performer=Practitioner/dr1") == ["obsA1"]
    # The golden Patient covers every linked source.
    assert search("/fhir/Observation?patient=gold") == ["obsA1", "obsA2", "obsB1", "obsB2"]
    assert search("/fhir/Observation?subject=Patient/gold&code=8480-6") == ["obsA1", "obsB1"]
    assert search("/fhir/Condition?patient=gold") == ["condB"]
    assert search("/fhir/Encounter?patient=gold") == ["encA"]
    assert search("/fhir/Observation?encounter:missing=true&patient=srcA") == ["obsA2"]
    assert search("/fhir/Observation?encounter:missing=false") == ["obsA1"]


@pytest.mark.usefixtures("clinic")
def test_chaining_and_has(search: Search) -> None:
    assert search(f"/fhir/Observation?subject:Patient.identifier={b.MRN}|RSA-1") == ["obsA1", "obsA2"]
    assert search("/fhir/Observation?patient.family=perez") == ["obsO1"]
    assert search("/fhir/Observation?subject.gender=female") == ["obsO1"]
    # A chain that finds the golden Patient brings its sources' records along.
    assert search(f"/fhir/Observation?patient.identifier={b.NIK}|3201010101010001&code=8480-6") == [
        "obsA1",
        "obsB1",
    ]
    assert search("/fhir/Encounter?location.name=poli") == ["encA"]
    assert search("/fhir/Patient?_has:Observation:patient:code=2345-7") == ["srcB"]
    assert search("/fhir/Patient?_has:Observation:patient:status=amended") == ["other"]
    assert search("/fhir/Practitioner?_has:Observation:performer:patient=srcA") == ["dr1"]


@pytest.mark.usefixtures("clinic")
def test_quantity_number_and_composite(search: Search) -> None:
    q = "/fhir/Observation?value-quantity="
    assert search(q + "118") == ["obsA1"]
    assert search(q + "118.0") == ["obsA1"]
    assert search(q + "141") == []  # 141 means [140.5, 141.5)
    assert search(q + "142") == ["obsB1"]
    assert search(q + "gt120") == ["obsB1", "obsO1"]
    assert search(q + "ge125") == ["obsB1", "obsO1"]
    assert search(q + "lt10") == ["obsB2"]
    assert search(q + "le78") == ["obsA2", "obsB2"]
    assert search(q + "ne118&code=8480-6") == ["obsB1", "obsO1"]
    assert search(q + "ap130") == ["obsA1", "obsB1", "obsO1"]
    assert search(q + "5.4|http://unitsofmeasure.org|mmol/L") == ["obsB2"]
    assert search(q + "5.4||mmol/L") == ["obsB2"]
    assert search(q + "5.4|http://unitsofmeasure.org|mg/dL") == []
    assert search(q + "sa100") == ["obsA1", "obsB1", "obsO1"]
    assert search(q + "eb100") == ["obsA2", "obsB2"]
    cvq = "/fhir/Observation?code-value-quantity="
    assert search(cvq + "http://loinc.org|8480-6$gt120") == ["obsB1", "obsO1"]
    assert search(cvq + "8462-4$lt80,2345-7$gt5") == ["obsA2", "obsB2"]


@pytest.mark.usefixtures("clinic")
def test_uri(search: Search, put: Callable[..., None]) -> None:
    prof = "http://example.org/fhir/StructureDefinition/vital"
    obs = b.observation("obsP", "other")
    obs["meta"] = {"profile": [prof + "-signs"]}
    put(obs)
    assert search(f"/fhir/Observation?_profile={prof}-signs") == ["obsP"]
    assert search(f"/fhir/Observation?_profile={prof}") == []
    assert search(f"/fhir/Observation?_profile:below={prof}") == ["obsP"]
    assert search(f"/fhir/Observation?_profile:above={prof}-signs/extra") == ["obsP"]


def _entries(client: TestClient, auth: dict[str, str], url: str) -> dict[str, Any]:
    r = client.get(url, headers=auth)
    assert r.status_code == 200, r.text
    return dict(r.json())


@pytest.mark.usefixtures("clinic")
def test_include_revinclude(client: TestClient, auth: dict[str, str]) -> None:
    bundle = _entries(
        client,
        auth,
        "/fhir/Observation?_id=obsA1&_include=Observation:patient&_include=Observation:performer",
    )
    assert match_ids(bundle) == ["obsA1"]
    assert included_keys(bundle) == {"Patient/srcA", "Practitioner/dr1"}
    bundle = _entries(client, auth, "/fhir/Observation?_id=obsA1&_include=Observation:subject:Practitioner")
    assert included_keys(bundle) == set()
    bundle = _entries(client, auth, "/fhir/Observation?_id=obsA1&_include=*")
    assert included_keys(bundle) == {"Patient/srcA", "Practitioner/dr1", "Encounter/encA"}
    bundle = _entries(client, auth, "/fhir/Observation?_id=obsA1&_revinclude=Provenance:target")
    assert included_keys(bundle) == {"Provenance/prov1"}
    # :iterate follows the included Encounter on to its Location.
    bundle = _entries(
        client,
        auth,
        "/fhir/Observation?_id=obsA1&_include=Observation:encounter&_include:iterate=Encounter:location",
    )
    assert included_keys(bundle) == {"Encounter/encA", "Location/loc1"}
    bundle = _entries(
        client, auth, "/fhir/Observation?_id=obsA1&_include=Observation:encounter&_include=Encounter:location"
    )
    assert included_keys(bundle) == {"Encounter/encA"}
    # revinclude on a golden Patient brings what points at its sources.
    bundle = _entries(client, auth, "/fhir/Patient?_id=gold&_revinclude=Condition:patient")
    assert included_keys(bundle) == {"Condition/condB"}
    bundle = _entries(
        client,
        auth,
        "/fhir/Patient?_id=srcA&_revinclude:iterate=Observation:patient&_revinclude:iterate=Provenance:target",
    )
    assert included_keys(bundle) == {"Observation/obsA1", "Observation/obsA2", "Provenance/prov1"}


@pytest.mark.usefixtures("clinic")
def test_sort(client: TestClient, auth: dict[str, str]) -> None:
    def ids(url: str) -> list[str]:
        return match_ids(_entries(client, auth, url))

    assert ids("/fhir/Observation?_sort=date") == ["obsO1", "obsA1", "obsA2", "obsB2", "obsB1"]
    # Descending sorts on the end of each value's range: the whole day of 15 June ends after 03:00Z.
    assert ids("/fhir/Observation?_sort=-date") == ["obsB2", "obsB1", "obsA1", "obsA2", "obsO1"]
    assert ids("/fhir/Observation?_sort=-date,-_id") == ["obsB2", "obsB1", "obsA2", "obsA1", "obsO1"]
    assert ids("/fhir/Observation?_sort=status,-value-quantity") == [
        "obsO1",
        "obsB1",
        "obsA1",
        "obsA2",
        "obsB2",
    ]
    assert ids("/fhir/Patient?_sort=family,given,_id") == ["other", "srcB", "gold", "srcA"]
    assert client.get("/fhir/Patient?_sort=nonsense", headers=auth).status_code == 400


@pytest.mark.usefixtures("clinic")
def test_paging_is_stable_while_data_is_added(
    client: TestClient, auth: dict[str, str], put: Callable[..., None]
) -> None:
    for sort in ("", "&_sort=-date", "&_sort=value-quantity", "&_sort=-_lastUpdated"):
        url: str | None = f"/fhir/Observation?_count=2{sort}"
        seen: list[str] = []
        added = 0
        while url:
            page = _entries(client, auth, url)
            seen += match_ids(page)
            assert len(page.get("entry", [])) <= 2
            # Resources arrive between pages, sorting before and after the cursor.
            put(b.observation(f"new{sort[-4:]}{added}a", "other", value=1, effective="2020-01-01"))
            put(b.observation(f"zz{sort[-4:]}{added}", "other", value=999, effective="2030-01-01"))
            added += 1
            url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
        assert len(seen) == len(set(seen)), seen  # nothing repeated
        assert {"obsA1", "obsA2", "obsB1", "obsB2", "obsO1"} <= set(seen)  # nothing skipped


def _all_pages(client: TestClient, auth: dict[str, str], url: str) -> list[list[str]]:
    pages: list[list[str]] = []
    next_url: str | None = url
    while next_url:
        page = _entries(client, auth, next_url)
        pages.append(match_ids(page))
        next_url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    return pages


@pytest.mark.usefixtures("clinic")
def test_golden_patient_pages_walk_its_sources_in_id_order(
    client: TestClient, auth: dict[str, str], put: Callable[..., None], engine: Engine
) -> None:
    """A patient criterion drives the page (its sources' references walked in id order): pages of 2
    neither skip nor repeat, in either direction, with a resource that references two of the golden
    Patient's sources counted once and a deleted one left out."""
    put(
        *(
            b.observation(f"obsG{i:02d}", ("srcA", "srcB")[i % 2], code=("8480-6", "8462-4")[i % 3 == 0])
            for i in range(9)
        )
    )
    put(
        b.provenance("provAB", "Patient/srcA")
        | {"target": [{"reference": "Patient/srcA"}, {"reference": "Patient/srcB"}]}
    )
    with session_scope(engine) as session:
        resources.delete(session, "Observation", "obsG04")
    systolic = ["obsA1", "obsB1", *(f"obsG{i:02d}" for i in range(9) if i % 3 and i != 4)]
    pages = _all_pages(client, auth, "/fhir/Observation?patient=gold&code=8480-6&_count=2")
    assert [i for page in pages for i in page] == sorted(systolic)
    assert all(len(page) == 2 for page in pages[:-1])
    pages = _all_pages(client, auth, "/fhir/Observation?patient=gold&code=8480-6&_count=2&_sort=-_id")
    assert [i for page in pages for i in page] == sorted(systolic, reverse=True)
    assert _all_pages(client, auth, "/fhir/Provenance?patient=gold") == [["provAB"]]
    assert _all_pages(client, auth, "/fhir/Observation?subject:Patient=gold&_count=50&code=8462-4")[0] == [
        "obsA2",
        *(f"obsG{i:02d}" for i in range(9) if i % 3 == 0),
    ]


@pytest.mark.usefixtures("clinic")
def test_count_total_summary_elements(client: TestClient, auth: dict[str, str]) -> None:
    page = _entries(client, auth, "/fhir/Observation?_count=2&_total=accurate")
    assert page["total"] == 5 and len(match_ids(page)) == 2
    assert "total" not in _entries(client, auth, "/fhir/Observation?_count=2")
    assert _entries(client, auth, "/fhir/Observation?_count=10")["total"] == 5
    count = _entries(client, auth, "/fhir/Observation?_summary=count&code=8480-6")
    assert count["total"] == 3 and "entry" not in count
    assert _entries(client, auth, "/fhir/Observation?_count=0")["total"] == 5
    summary = _entries(client, auth, "/fhir/Patient?_id=srcA&_summary=true")["entry"][0]["resource"]
    assert "name" in summary and "link" in summary and "address" in summary
    assert any(t["code"] == "SUBSETTED" for t in summary["meta"]["tag"])
    obs = _entries(client, auth, "/fhir/Observation?_id=obsA1&_summary=true")["entry"][0]["resource"]
    assert "valueQuantity" in obs and "effectiveDateTime" in obs
    elements = _entries(client, auth, "/fhir/Observation?_id=obsA1&_elements=status,value")["entry"][0][
        "resource"
    ]
    assert set(elements) == {"resourceType", "id", "meta", "status", "valueQuantity"}
    text = _entries(client, auth, "/fhir/Observation?_id=obsA1&_summary=data")["entry"][0]["resource"]
    assert "code" in text
    assert client.get("/fhir/Observation?_total=maybe", headers=auth).status_code == 400


@pytest.mark.usefixtures("clinic")
def test_post_search(client: TestClient, auth: dict[str, str]) -> None:
    r = client.post(
        "/fhir/Observation/_search",
        content="patient=gold&code=8480-6",
        headers={**auth, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200 and sorted(match_ids(r.json())) == ["obsA1", "obsB1"]
    r = client.post("/fhir/Observation/_search", json={"code": "x"}, headers=auth)
    assert r.status_code == 400


@pytest.mark.usefixtures("clinic")
def test_unknown_parameters_and_errors(client: TestClient, auth: dict[str, str]) -> None:
    r = client.get("/fhir/Observation?code=8480-6&colour=blue", headers=auth)
    assert r.status_code == 200
    outcome = [e for e in r.json()["entry"] if e["search"]["mode"] == "outcome"]
    assert len(outcome) == 1 and "colour" in outcome[0]["resource"]["issue"][0]["diagnostics"]
    assert sorted(match_ids(r.json())) == ["obsA1", "obsB1", "obsO1"]
    strict = client.get("/fhir/Observation?colour=blue", headers={**auth, "Prefer": "handling=strict"})
    assert strict.status_code == 400 and strict.json()["resourceType"] == "OperationOutcome"
    for bad in (
        "date=2024-13-45",
        "value-quantity=abc",
        "code:exact=x",
        "subject.name.family=x",
        "_count=ten",
        "encounter:missing=maybe",
    ):
        r = client.get(f"/fhir/Observation?{bad}", headers=auth)
        assert r.status_code == 400, bad
        assert r.json()["resourceType"] == "OperationOutcome"
    assert client.get("/fhir/Observation?_cursor=!!!", headers=auth).status_code == 400


def test_number(search: Search, put: Callable[..., None]) -> None:
    def risk(rid: str, probability: float) -> dict[str, Any]:
        return {
            "resourceType": "RiskAssessment",
            "id": rid,
            "status": "final",
            "subject": {"reference": "Patient/p1"},
            "prediction": [{"probabilityDecimal": probability}],
        }

    put(b.patient("p1"), risk("r1", 0.25), risk("r2", 0.8), risk("r3", 0.805))
    assert search("/fhir/RiskAssessment?probability=0.8") == ["r2", "r3"]  # 0.8 means [0.75, 0.85)
    assert search("/fhir/RiskAssessment?probability=0.80") == ["r2"]  # [0.795, 0.805)
    assert search("/fhir/RiskAssessment?probability=gt0.5") == ["r2", "r3"]
    assert search("/fhir/RiskAssessment?probability=le0.25") == ["r1"]
    assert search("/fhir/RiskAssessment?probability=ne0.25&patient=p1") == ["r2", "r3"]
    assert search("/fhir/RiskAssessment?probability:missing=false") == ["r1", "r2", "r3"]


def test_of_type_and_reference_identifier(search: Search, put: Callable[..., None]) -> None:
    v2 = "http://terminology.hl7.org/CodeSystem/v2-0203"
    pat = b.patient("p1", nik="3201")
    pat["identifier"].append(
        {"type": {"coding": [{"system": v2, "code": "MR"}]}, "system": b.MRN, "value": "RM-77"}
    )
    obs = b.observation("o1", "p1")
    obs["performer"] = [{"identifier": {"system": "https://fhir.kemkes.go.id/id/nakes", "value": "N-5"}}]
    put(pat, obs, b.patient("p2", mrn="RM-77"))
    assert search(f"/fhir/Patient?identifier:of-type={v2}|MR|RM-77") == ["p1"]
    assert search(f"/fhir/Patient?identifier:of-type={v2}|PI|RM-77") == []
    assert search("/fhir/Patient?identifier=RM-77") == ["p1", "p2"]
    assert search("/fhir/Observation?performer:identifier=https://fhir.kemkes.go.id/id/nakes|N-5") == ["o1"]
    assert search("/fhir/Observation?performer:identifier=N-5") == ["o1"]
    assert search("/fhir/Observation?performer:identifier=N-6") == []


def test_aliased_parameters_find_what_their_own_rows_found(
    search: Search, put: Callable[..., None], client: TestClient, auth: dict[str, str]
) -> None:
    """``patient``, ``phonetic`` … are not written as rows of their own but read the rows of the
    parameter that holds the same values (``search_params.stored_as``): they match what their own rows
    matched, and a restriction to Patient targets still holds. (``combo-code`` keeps rows of its own;
    checked here beside them.)"""
    panel = b.observation("bp", "p1", code="85354-9", display="Blood pressure panel", value=None)
    panel["component"] = [
        {"code": {"coding": [{"system": b.LOINC, "code": "8480-6"}]}, "valueQuantity": {"value": 120}},
        {"code": {"coding": [{"system": b.LOINC, "code": "8462-4"}]}, "valueQuantity": {"value": 80}},
    ]
    on_device = b.observation("dev-obs", "p1", code="2345-7")
    on_device["subject"] = {"reference": "Device/p1"}  # same id, another type: not the patient's
    appointment = {
        "resourceType": "Appointment",
        "id": "ap1",
        "status": "booked",
        "participant": [
            {"actor": {"reference": "Patient/p1"}, "status": "accepted"},
            {"actor": {"reference": "Practitioner/dr9"}, "status": "accepted"},
        ],
    }
    put(
        b.patient("p1", family="Santoso"),
        panel,
        on_device,
        b.observation("plain", "p1", code="8480-6"),
        b.observation("other", "p2", code="2345-7"),
        b.provenance("prov-p", "Patient/p1"),
        b.provenance("prov-o", "Observation/plain"),
        appointment,
    )
    # patient = subject where the subject is a Patient.
    assert search("/fhir/Observation?patient=p1") == ["bp", "plain"]
    assert search("/fhir/Observation?patient=Patient/p1") == ["bp", "plain"]
    assert search("/fhir/Observation?patient=Device/p1") == []
    assert search("/fhir/Observation?subject=Device/p1") == ["dev-obs"]
    assert search("/fhir/Observation?subject=p1") == ["bp", "dev-obs", "plain"]
    assert search("/fhir/Observation?patient:missing=true") == ["dev-obs"]
    assert search("/fhir/Observation?patient:missing=false") == ["bp", "other", "plain"]
    assert search("/fhir/Observation?patient.family=santoso") == ["bp", "plain"]
    assert search("/fhir/Patient?_has:Observation:patient:code=85354-9") == ["p1"]
    assert search("/fhir/Patient?_has:Observation:patient:code=2345-7") == []  # on Device/p1, p2 unknown
    assert search("/fhir/Provenance?patient=p1") == ["prov-p"]
    assert search("/fhir/Provenance?target=Patient/p1") == ["prov-p"]
    assert search("/fhir/Appointment?patient=p1") == ["ap1"]
    assert search("/fhir/Appointment?practitioner=dr9") == ["ap1"]
    assert search("/fhir/Appointment?practitioner=p1") == []
    assert search("/fhir/Appointment?location=dr9") == []
    bundle = _entries(client, auth, "/fhir/Observation?_id=dev-obs,bp&_include=Observation:patient")
    assert included_keys(bundle) == {"Patient/p1"}  # not Device/p1
    bundle = _entries(client, auth, "/fhir/Patient?_id=p1&_revinclude=Observation:patient")
    assert included_keys(bundle) == {"Observation/bp", "Observation/plain"}
    # combo-code = code or a component's code.
    assert search("/fhir/Observation?combo-code=85354-9") == ["bp"]
    assert search("/fhir/Observation?combo-code=8480-6") == ["bp", "plain"]
    assert search(f"/fhir/Observation?combo-code={b.LOINC}|8462-4") == ["bp"]
    assert search("/fhir/Observation?combo-code=2345-7,8462-4") == ["bp", "dev-obs", "other"]
    assert search("/fhir/Observation?combo-code:not=8480-6") == ["dev-obs", "other"]
    assert search("/fhir/Observation?combo-code:text=blood pressure panel") == ["bp"]
    assert search("/fhir/Observation?code=8480-6") == ["plain"]
    assert search("/fhir/Observation?component-code=8480-6") == ["bp"]
    ids = match_ids(_entries(client, auth, "/fhir/Observation?_sort=combo-code,_id"))
    assert ids == ["dev-obs", "other", "bp", "plain"]  # 2345-7, 2345-7, 8462-4 (the least of bp's), 8480-6
    # phonetic = name.
    assert search("/fhir/Patient?phonetic=santos") == ["p1"]
