"""FHIR: a ``Measure`` per indicator and ``$evaluate-measure`` as a summary ``MeasureReport`` with one
stratifier per dimension (as IHE mADX does), suppressed counts left out with a data-absent-reason."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from hub.stats.config import StatsConfig
from hub.stats.periods import Period
from hub.stats.query import INDICATORS, Indicator, Request, evaluate

BASE = "https://hub.kemkes.go.id/fhir/Measure/"
POPULATION = "http://terminology.hl7.org/CodeSystem/measure-population"
DATA_ABSENT = "http://hl7.org/fhir/StructureDefinition/data-absent-reason"
DIMENSION_SYSTEM = "https://hub.kemkes.go.id/fhir/CodeSystem/stats-dimension"


def measure(ind: Indicator) -> dict[str, Any]:
    rate = ind.measure in ("coverage", "positivity", "alos")
    return {
        "resourceType": "Measure",
        "id": ind.id,
        "url": BASE + ind.id,
        "name": ind.id.replace("-", "_"),
        "title": ind.title,
        "status": "active",
        "description": f"{ind.title} ({ind.title_id}); unit: {ind.unit}; code: {ind.codes}",
        "scoring": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/measure-scoring",
                    "code": "proportion" if rate else "cohort",
                }
            ]
        },
        "group": [
            {
                "population": [{"code": _code("initial-population"), "criteria": _criteria(ind)}],
                "stratifier": [
                    {
                        "code": {"coding": [{"system": DIMENSION_SYSTEM, "code": d}], "text": d},
                        "criteria": _criteria(ind),
                    }
                    for d in ind.dims
                    if d != "period"
                ],
            }
        ],
    }


def _criteria(ind: Indicator) -> dict[str, str]:
    return {"language": "text/plain", "expression": f"hub.stats indicator {ind.id}"}


def _code(code: str) -> dict[str, Any]:
    return {"coding": [{"system": POPULATION, "code": code}]}


def _count(value: Any, suppressed: bool) -> dict[str, Any]:
    population: dict[str, Any] = {"code": _code("initial-population")}
    if suppressed or value is None:
        population["_count"] = {"extension": [{"url": DATA_ABSENT, "valueCode": "masked"}]}
    else:
        population["count"] = int(value)
    return population


def evaluate_measure(
    conn: Connection,
    ind: Indicator,
    period: Period,
    config: StatsConfig,
    codes: list[str],
    *,
    suppressed: bool = True,
) -> dict[str, Any]:
    total = evaluate(conn, Request(ind, [period], [], codes), config, suppressed=suppressed)
    counted = ind.measure in ("people", "events", "bed-days")
    group: dict[str, Any] = {
        "population": [
            _count(
                total.total.get("value") if counted else total.total.get("numerator"),
                bool(total.total.get("suppressed")),
            )
        ]
    }
    if not counted:
        group["measureScore"] = {"value": total.total.get("value"), "unit": ind.unit}
    stratifiers = []
    for dim in ind.dims:
        if dim == "period":
            continue
        result = evaluate(conn, Request(ind, [period], [dim], codes), config, suppressed=suppressed)
        strata = []
        for row in result.rows:
            stratum: dict[str, Any] = {"value": {"text": str(row[dim])}}
            if counted or row.get("suppressed"):
                stratum["population"] = [_count(row.get("value"), bool(row.get("suppressed")))]
            else:
                stratum["measureScore"] = {"value": row.get("value")}
            strata.append(stratum)
        stratifiers.append(
            {
                "code": [{"coding": [{"system": DIMENSION_SYSTEM, "code": dim}], "text": dim}],
                "stratum": strata,
            }
        )
    group["stratifier"] = stratifiers
    return {
        "resourceType": "MeasureReport",
        "status": "complete",
        "type": "summary",
        "measure": BASE + ind.id,
        "date": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "period": {"start": period.start.isoformat(), "end": _last_day(period)},
        "group": [group],
        "extension": [
            {
                "url": "https://hub.kemkes.go.id/fhir/StructureDefinition/stats-suppression",
                "valueString": "applied" if suppressed else "none",
            }
        ],
    }


def _last_day(period: Period) -> str:
    from datetime import timedelta

    return (period.end - timedelta(days=1)).isoformat()


def measures() -> list[dict[str, Any]]:
    return [measure(i) for i in INDICATORS.values()]
