"""The statistics API on a synthetic population whose true counts are computed here, independently of
the hub: every indicator, JSON and CSV, suppression, corrections and merges, rebuild, access."""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine

from hub.stats import upkeep
from tests.stats.conftest import MONDAY_W10, Population, band, condition, encounter, patient, person_age

W10, W11, W12 = "2026W10", "2026W11", "2026W12"


def _week(day: date) -> str:
    return f"2026W{day.isocalendar()[1]}"


def _rows(body: dict[str, Any], *dims: str, zeros: bool = False) -> dict[tuple[Any, ...], Any]:
    """The cells of an answer by their dimensions (the zeros of the complete table left out unless asked)."""
    return {tuple(r[d] for d in dims): r["value"] for r in body["rows"] if zeros or r["value"] != 0}


def _get(client: TestClient, headers: dict[str, str], path: str, **params: str) -> dict[str, Any]:
    response = client.get(path, params=params, headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_indicator_list(stats_client: TestClient, role: Callable[[str], dict[str, str]]) -> None:
    body = _get(stats_client, role("ministry"), "/stats")
    ids = {i["id"] for i in body["indicators"]}
    assert ids >= {
        "encounters",
        "admissions",
        "discharges",
        "bed-days",
        "alos",
        "diagnoses",
        "notifiable",
        "immunizations",
        "immunization-coverage",
        "lab-tests",
        "lab-positivity",
        "deaths",
    }
    diag = next(i for i in body["indicators"] if i["id"] == "diagnoses")
    assert diag["counts"] == "people" and "province" in diag["dimensions"] and diag["unit"] == "people"


def test_access(stats_client: TestClient, role: Callable[[str], dict[str, str]]) -> None:
    assert stats_client.get("/stats").status_code == 401
    assert stats_client.get("/stats", headers=role("clinician")).status_code == 403
    assert stats_client.get("/stats", headers=role("admin")).status_code == 200
    r = stats_client.get(
        "/stats/diagnoses", params={"period": W10, "suppression": "off"}, headers=role("ministry")
    )
    assert r.status_code == 403
    assert r.json()["resourceType"] == "OperationOutcome"


def test_bad_requests_are_clear(stats_client: TestClient, role: Callable[[str], dict[str, str]]) -> None:
    h = role("ministry")
    for params, word in [
        ({"period": "2026X1"}, "period"),
        ({"period": "202613"}, "month"),
        ({"period": W10, "by": "colour"}, "dimension"),
        ({"period": W10, "province": "3"}, "2-digit"),
        ({"period": W10, "age": "2-3"}, "band"),
    ]:
        r = stats_client.get("/stats/diagnoses", params=params, headers=h)
        assert r.status_code == 400, (params, r.text)
        assert word in r.json()["issue"][0]["diagnostics"]
    assert stats_client.get("/stats/nothing", params={"period": W10}, headers=h).status_code == 404


def _truth_people(
    pop: Population,
    kind: str,
    period: tuple[date, date],
    key: Callable[..., Any],
    pred: Callable[[dict[str, Any]], bool] = lambda f: True,
    on: str = "start",
) -> Counter[Any]:
    cells: dict[Any, set[str]] = defaultdict(set)
    for p in pop.people:
        for f in p.facts:
            if f["kind"] == kind and pred(f) and period[0] <= f[on] < period[1]:
                cells[key(p, f)].add(p.golden)
    return Counter({k: len(v) for k, v in cells.items()})


def _w(code: str) -> tuple[date, date]:
    week = int(code[5:])
    start = date.fromisocalendar(2026, week, 1)
    return start, start + timedelta(days=7)


def test_diagnoses_by_province_and_sex_count_people(
    stats_client: TestClient, role: Callable[[str], dict[str, str]], population: Population
) -> None:
    body = _get(
        stats_client,
        role("admin"),
        "/stats/diagnoses",
        period=f"{W10},{W11}",
        by="period,province,sex",
        code="A90",
        suppression="off",
    )
    assert body["suppression"]["applied"] is False
    got = _rows(body, "period", "province", "sex")
    truth: Counter[Any] = Counter()
    for week in (W10, W11):
        t = _truth_people(
            population,
            "condition",
            _w(week),
            lambda p, f, w=week: (w, p.place[0], p.sex),
            lambda f: f["code"] == "A90",
        )
        truth.update(t)
    assert got == dict(truth)
    assert sum(truth.values()) > 20
    # Names beside codes.
    jakarta = next(r for r in body["rows"] if r["province"] == "31")
    assert jakarta["province_name"] == "Daerah Khusus Ibukota Jakarta"
    # Two hospitals' records of one person count once: the people count is below the source records'.
    sources = sum(
        1
        for p in population.people
        for f in p.facts
        if f["kind"] == "condition" and f["code"] == "A90" and _w(W10)[0] <= f["start"] < _w(W11)[1]
    )
    assert body["total"]["value"] == sum(truth.values()) < sources


def test_code_category_and_chapter(
    stats_client: TestClient, role: Callable[[str], dict[str, str]], population: Population
) -> None:
    h = role("admin")
    span = (_w(W10)[0], _w(W12)[1])

    def people(pred: Callable[[dict[str, Any]], bool]) -> int:
        return sum(_truth_people(population, "condition", span, lambda p, f: 0, pred).values())

    period = f"{W10},{W11},{W12}"
    a91 = _get(stats_client, h, "/stats/diagnoses", period=period, code="A91", suppression="off")["total"][
        "value"
    ]
    a9x = _get(stats_client, h, "/stats/diagnoses", period="2026Q1", code="A90,A91", suppression="off")
    chapter1 = _get(stats_client, h, "/stats/diagnoses", period="2026", code="I", suppression="off")
    chapter9 = _get(stats_client, h, "/stats/diagnoses", period="202603", code="IX", suppression="off")
    assert a91 == people(lambda f: f["code"] == "A91")
    assert a9x["total"]["value"] == people(lambda f: f["code"] in ("A90", "A91"))
    assert chapter1["total"]["value"] == people(lambda f: f["code"].startswith("A"))
    assert chapter9["total"]["value"] == people(lambda f: f["code"] == "I10") > 0


def test_age_bands_regency_district(
    stats_client: TestClient, role: Callable[[str], dict[str, str]], population: Population
) -> None:
    h = role("admin")
    body = _get(stats_client, h, "/stats/diagnoses", period=W10, by="age,regency", suppression="off")
    span = _w(W10)
    truth = _truth_people(
        population, "condition", span, lambda p, f: (band(person_age(p, f["start"])), p.place[1])
    )
    assert _rows(body, "age", "regency") == dict(truth)
    district = _get(
        stats_client, h, "/stats/diagnoses", period=W10, by="district", province="31", suppression="off"
    )
    truth_d = _truth_people(
        population, "condition", span, lambda p, f: (p.place[2],) if p.place[0] == "31" else None
    )
    truth_d.pop(None, None)
    assert _rows(district, "district") == dict(truth_d)
    assert {r["district_name"] for r in district["rows"]} <= {"Gambir", "Tebet"}


def test_encounters_admissions_discharges_bed_days_alos(
    stats_client: TestClient, role: Callable[[str], dict[str, str]], population: Population
) -> None:
    h = role("admin")
    span = (_w(W10)[0], _w(W12)[1])
    period = f"{W10},{W11},{W12}"
    encounters = [f for p in population.people for f in p.facts if f["kind"] == "encounter"]
    body = _get(stats_client, h, "/stats/encounters", period=period, by="code,facility", suppression="off")
    truth = Counter((f["class"], f["facility"]) for f in encounters if span[0] <= f["start"] < span[1])
    assert _rows(body, "code", "facility") == dict(truth)
    admissions = _get(stats_client, h, "/stats/admissions", period=period, suppression="off")["total"][
        "value"
    ]
    assert admissions == sum(1 for f in encounters if f["class"] == "IMP")
    month = (date(2026, 3, 1), date(2026, 4, 1))
    stays = [f for f in encounters if f["class"] == "IMP" and month[0] <= f["end"] < month[1]]
    discharged = _truth_people(
        population, "encounter", month, lambda p, f: 0, lambda f: f["class"] == "IMP", on="end"
    )
    got = _get(stats_client, h, "/stats/discharges", period="202603", suppression="off")["total"]["value"]
    assert got == sum(discharged.values())
    bed_days = sum((f["end"] - f["start"]).days for f in stays)
    assert (
        _get(stats_client, h, "/stats/bed-days", period="202603", suppression="off")["total"]["value"]
        == bed_days
    )
    alos = _get(stats_client, h, "/stats/alos", period="202603", suppression="off")["total"]["value"]
    assert alos == round(bed_days / len(stays), 2)


def test_immunizations_and_coverage(
    stats_client: TestClient, role: Callable[[str], dict[str, str]], population: Population
) -> None:
    h = role("admin")
    doses = _get(stats_client, h, "/stats/immunizations", period="2026Q1", by="code,dose", suppression="off")
    n_doses = sum(1 for p in population.people for f in p.facts if f["kind"] == "immunization")
    assert _rows(doses, "code", "dose") == {("03", 1): n_doses}
    cov = _get(
        stats_client,
        h,
        "/stats/immunization-coverage",
        period="2026",
        by="province,age",
        code="03",
        suppression="off",
    )
    row = next(r for r in cov["rows"] if r["province"] == "31" and r["age"] == "<1")
    vaccinated = {
        p.golden
        for p in population.people
        if p.place[0] == "31"
        and person_age(p, MONDAY_W10) < 1
        and any(f["kind"] == "immunization" for f in p.facts)
    }
    assert row["numerator"] == len(vaccinated)
    from hub.stats.regions import load_population

    jakarta = load_population().of("31")
    assert jakarta is not None
    assert row["denominator"] == round(jakarta * 0.016)
    assert row["value"] == round(100 * len(vaccinated) / row["denominator"], 2)


def test_lab_tests_and_positivity(
    stats_client: TestClient, role: Callable[[str], dict[str, str]], population: Population
) -> None:
    h = role("admin")
    tested = {p.golden for p in population.people for f in p.facts if f["kind"] == "lab"}
    positive = {p.golden for p in population.people for f in p.facts if f["kind"] == "lab" and f["positive"]}
    body = _get(stats_client, h, "/stats/lab-tests", period="2026Q1", by="code", suppression="off")
    assert _rows(body, "code") == {("94558-4",): len(tested)}
    rate = _get(stats_client, h, "/stats/lab-positivity", period="2026Q1", code="94558-4", suppression="off")
    assert rate["total"]["value"] == round(100 * len(positive) / len(tested), 1)


def test_deaths(
    stats_client: TestClient,
    role: Callable[[str], dict[str, str]],
    store: Callable[..., None],
    population: Population,
) -> None:
    dead = population.people[:12]
    items = []
    for p in dead:  # the golden and a source both say so: one death each
        for pid, golden in [(p.golden, True), (p.sources[0], False)]:
            body = patient(pid, p, golden=golden, style=1)
            body["deceasedDateTime"] = "2026-03-04T10:00:00+07:00"
            items.append(body)
    store(items)
    got = _get(
        stats_client, role("admin"), "/stats/deaths", period="2026W10", by="province", suppression="off"
    )
    assert _rows(got, "province") == dict(Counter((p.place[0],) for p in dead))


def test_csv_is_the_same_rows(
    stats_client: TestClient, role: Callable[[str], dict[str, str]], population: Population
) -> None:
    h = role("ministry")
    params = {"period": f"{W10},{W11}", "by": "period,province,sex"}
    body = _get(stats_client, h, "/stats/diagnoses", **params)
    r = stats_client.get("/stats/diagnoses", params=params, headers={**h, "Accept": "text/csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert len(rows) == len(body["rows"])
    for c, j in zip(rows, body["rows"], strict=True):
        assert (c["period"], c["province"], c["sex"]) == (j["period"], j["province"], j["sex"])
        assert c["value"] == ("" if j["value"] is None else str(j["value"]))
        assert c["suppressed"] == ("true" if j.get("suppressed") else "")


def test_ministry_receives_suppressed_figures(
    stats_client: TestClient, role: Callable[[str], dict[str, str]], population: Population
) -> None:
    body = _get(stats_client, role("ministry"), "/stats/diagnoses", period=W10, by="province,sex")
    assert body["suppression"]["applied"] is True and body["suppression"]["threshold"] == 10
    open_ = _get(
        stats_client, role("admin"), "/stats/diagnoses", period=W10, by="province,sex", suppression="off"
    )
    truth = _rows(open_, "province", "sex")
    shown = {k: v for k, v in _rows(body, "province", "sex").items() if v is not None}
    assert any(0 < v < 10 for v in truth.values())  # the population has small cells
    assert all(v == 0 or v >= 10 for v in shown.values())
    assert all(truth[k] == v for k, v in shown.items())
    cells = _rows(body, "province", "sex", zeros=True)
    assert len(cells) == len({k[0] for k in cells}) * len({k[1] for k in cells})  # complete, zeros shown
    # Complementary: every row and column of the table holds no hidden cell or at least two.
    for axis in (0, 1):
        lines: dict[Any, list[bool]] = defaultdict(list)
        for k, v in cells.items():
            lines[k[1 - axis]].append(v is None)
        assert all(sum(hid) != 1 for hid in lines.values() if len(hid) > 1), lines


def test_corrections_cancel_and_merge_change_the_counts(
    stats_client: TestClient,
    role: Callable[[str], dict[str, str]],
    store: Callable[..., None],
    population: Population,
) -> None:
    h = role("admin")

    def a90() -> int:
        return int(
            _get(stats_client, h, "/stats/diagnoses", period=W10, code="A90", suppression="off")["total"][
                "value"
            ]
        )

    def encounters() -> int:
        return int(
            _get(stats_client, h, "/stats/encounters", period=W10, suppression="off")["total"]["value"]
        )

    enc_before = encounters()
    assert a90() > 0
    # A person with dengue (A90) in W11, recorded by one hospital.
    n = next(n for n in range(len(population.people)) if n % 2 == 0 and n % 10 != 0 and n % 3 == 1)
    week = W11

    def a90w() -> int:
        body = _get(stats_client, h, "/stats/diagnoses", period=week, code="A90", suppression="off")
        return int(body["total"]["value"])

    before = a90w()
    p = population.people[n]
    source = p.sources[0]
    day = MONDAY_W10 + timedelta(days=7 + n % 7)
    # An A08 correcting the diagnosis: A90 becomes J18.
    store([condition(f"c{n}0", source, "J18", day, f"e{n}0")])
    assert a90w() == before - 1
    store([condition(f"c{n}0", source, "A90", day, f"e{n}0")])
    assert a90w() == before
    # An A11 cancelling an encounter.
    cancelled = encounter("e00", p.sources[0], MONDAY_W10, MONDAY_W10, "AMB", "RSUD-A")
    cancelled["status"] = "entered-in-error"
    cancelled["subject"] = {"reference": f"Patient/{population.people[0].sources[0]}"}
    store([cancelled])
    assert encounters() == enc_before - 1
    # A merge: person n's source relinked to the golden record of another A90 person in the same week.
    other = next(
        q for m, q in enumerate(population.people) if m != n and m % 2 == 0 and m % 10 != 0 and m % 3 == 1
    )
    moved = patient(source, p, golden=False, style=1)
    moved["link"] = [{"other": {"reference": f"Patient/{other.golden}"}, "type": "refer"}]
    store([moved])
    assert a90w() == before - 1


def test_rebuild_gives_the_same_answers(
    stats_client: TestClient, role: Callable[[str], dict[str, str]], engine: Engine, population: Population
) -> None:
    h = role("admin")
    queries = [
        ("diagnoses", "period,province,sex,age"),
        ("encounters", "code,facility"),
        ("lab-positivity", "province"),
    ]
    before = [
        _get(stats_client, h, f"/stats/{i}", period=f"{W10},{W11},{W12}", by=b, suppression="off")
        for i, b in queries
    ]
    with engine.begin() as conn:
        n = upkeep.rebuild(conn, batch=37)
    assert n > 300
    after = [
        _get(stats_client, h, f"/stats/{i}", period=f"{W10},{W11},{W12}", by=b, suppression="off")
        for i, b in queries
    ]
    assert before == after
