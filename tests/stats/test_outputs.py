"""The FHIR Measure / MeasureReport and the DHIS2 dataValueSets outputs, with their suppression."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from hub.config import Settings
from hub.stats import dhis2
from hub.stats.config import load_config
from tests.stats.conftest import Population

DAR = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"


def test_measures(stats_client: TestClient, role: Callable[[str], dict[str, str]]) -> None:
    h = role("ministry")
    bundle = stats_client.get("/fhir/Measure", headers=h).json()
    assert bundle["total"] == 12
    m = stats_client.get("/fhir/Measure/diagnoses", headers=h).json()
    assert m["resourceType"] == "Measure" and m["status"] == "active"
    assert {s["code"]["coding"][0]["code"] for s in m["group"][0]["stratifier"]} >= {"province", "sex", "age"}
    assert stats_client.get("/fhir/Measure/none", headers=h).status_code == 404


def test_evaluate_measure(
    stats_client: TestClient, role: Callable[[str], dict[str, str]], population: Population
) -> None:
    params = {"periodStart": "2026-03-02", "periodEnd": "2026-03-08", "reportType": "summary", "code": "A90"}
    admin = stats_client.get(
        "/fhir/Measure/diagnoses/$evaluate-measure",
        params={**params, "suppression": "off"},
        headers=role("admin"),
    ).json()
    open_json = stats_client.get(
        "/stats/diagnoses",
        params={"period": "2026W10", "code": "A90", "by": "province", "suppression": "off"},
        headers=role("admin"),
    ).json()
    assert admin["resourceType"] == "MeasureReport" and admin["type"] == "summary"
    assert admin["period"] == {"start": "2026-03-02", "end": "2026-03-08"}
    group = admin["group"][0]
    assert group["population"][0]["count"] == open_json["total"]["value"]
    by_province = next(s for s in group["stratifier"] if s["code"][0]["coding"][0]["code"] == "province")
    counts = {s["value"]["text"]: s["population"][0].get("count") for s in by_province["stratum"]}
    assert counts == {r["province"]: r["value"] for r in open_json["rows"]}
    ministry = stats_client.get(
        "/fhir/Measure/diagnoses/$evaluate-measure", params=params, headers=role("ministry")
    )
    assert ministry.status_code == 200
    strata = [s for st in ministry.json()["group"][0]["stratifier"] for s in st["stratum"]]
    masked = [s for s in strata if "count" not in s["population"][0]]
    assert masked, "the population has small cells"
    for s in masked:
        assert s["population"][0]["_count"]["extension"][0] == {"url": DAR, "valueCode": "masked"}
    assert all(
        s["population"][0]["count"] == 0 or s["population"][0]["count"] >= 10
        for s in strata
        if "count" in s["population"][0]
    )
    bad = stats_client.get(
        "/fhir/Measure/diagnoses/$evaluate-measure",
        params={**params, "periodEnd": "x"},
        headers=role("ministry"),
    )
    assert bad.status_code == 400


MAPPING = {
    "suppression": {"threshold": 5},
    "dhis2": {
        "orgUnits": {"level": "province", "map": {"31": "ouJakarta", "32": "ouJabar", "33": "ouJateng"}},
        "dataSets": {
            "SKDR": {
                "dataElements": [
                    {
                        "indicator": "notifiable",
                        "code": "A90",
                        "dataElement": "deDengue",
                        "by": "sex",
                        "categoryOptionCombos": {"female": "cocF", "male": "cocM"},
                    },
                    {"indicator": "diagnoses", "code": "I10", "dataElement": "deHypertension"},
                ]
            }
        },
    },
}


@pytest.fixture
def mapped(stats_settings: Settings, tmp_path: Path) -> Settings:
    path = tmp_path / "stats.yaml"
    path.write_text(yaml.safe_dump(MAPPING))
    stats_settings.stats_config = path
    return stats_settings


def test_dhis2_data_value_sets(
    mapped: Settings,
    stats_client: TestClient,
    role: Callable[[str], dict[str, str]],
    population: Population,
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r = stats_client.get(
        "/stats/dhis2/dataValueSets",
        params={"dataSet": "SKDR", "period": "2026W11"},
        headers=role("ministry"),
    )
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["dataSet"] == "SKDR" and doc["period"] == "2026W11"
    open_ = stats_client.get(
        "/stats/notifiable",
        params={"period": "2026W11", "code": "A90", "by": "province,sex", "suppression": "off"},
        headers=role("admin"),
    ).json()
    truth = {(r["province"], r["sex"]): r["value"] for r in open_["rows"]}
    units = {"ouJakarta": "31", "ouJabar": "32", "ouJateng": "33"}
    sexes = {"cocF": "female", "cocM": "male"}
    dengue = [v for v in doc["dataValues"] if v["dataElement"] == "deDengue"]
    assert dengue
    for v in dengue:
        assert int(v["value"]) == truth[(units[v["orgUnit"]], sexes[v["categoryOptionCombo"]])]
        assert int(v["value"]) == 0 or int(v["value"]) >= 5
    assert all(int(v["value"]) >= 5 or int(v["value"]) == 0 for v in doc["dataValues"])
    one = stats_client.get(
        "/stats/dhis2/dataValueSets",
        params={"dataSet": "SKDR", "period": "2026W11", "orgUnit": "ouJakarta"},
        headers=role("ministry"),
    ).json()
    assert one["orgUnit"] == "ouJakarta" and {v["orgUnit"] for v in one["dataValues"]} <= {"ouJakarta"}
    assert (
        stats_client.get(
            "/stats/dhis2/dataValueSets",
            params={"dataSet": "X", "period": "2026W11"},
            headers=role("ministry"),
        ).status_code
        == 404
    )

    # The push: the same document, to api/dataValueSets, with the credentials.
    sent: dict[str, Any] = {}

    def fake_post(url: str, json: dict[str, Any], auth: tuple[str, str], timeout: float) -> httpx.Response:
        sent.update(url=url, body=json, auth=auth)
        return httpx.Response(
            200, json={"status": "SUCCESS", "importCount": {"imported": len(json["dataValues"])}}
        )

    monkeypatch.setattr(dhis2.httpx, "post", fake_post)
    with engine.connect() as conn:
        built = dhis2.data_value_set(conn, load_config(mapped.stats_config), "SKDR", "2026W11")
    answer = dhis2.push("https://dhis2.example/", "hub", "secret", built)
    assert sent["url"] == "https://dhis2.example/api/dataValueSets"
    assert sent["auth"] == ("hub", "secret") and "suppressed" not in sent["body"]
    assert answer["status"] == "SUCCESS"
