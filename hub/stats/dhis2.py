"""DHIS2 output: a ``dataValueSets`` document from the indicators, through a configurable mapping, and the
push to a DHIS2 server's ``api/dataValueSets``.

The mapping (``dhis2`` in the statistics YAML)::

    dhis2:
      orgUnits:
        level: province            # province | regency | facility: what one org unit is
        map: {"31": "ouDKIJakarta", "32": "ouJawaBarat"}
      dataSets:
        SKDR:
          dataElements:
            - {indicator: notifiable, code: A90, dataElement: deDengue, by: sex,
               categoryOptionCombos: {female: cocFemale, male: cocMale}}
            - {indicator: diagnoses, code: B05, dataElement: deMeasles}   # default category option combo

Suppressed cells are left out (DHIS2 has no "suppressed" value) and counted in ``suppressed``.
"""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import Connection

from hub.errors import BadRequest, NotFound
from hub.stats.config import StatsConfig
from hub.stats.periods import parse_period
from hub.stats.query import Request, evaluate, indicator

DEFAULT_COC = "HllvX50cXC0"  # DHIS2's built-in "default" category option combo


def data_value_set(
    conn: Connection, config: StatsConfig, data_set: str, period: str, org_unit: str | None = None
) -> dict[str, Any]:
    mapping = config.dhis2
    sets = mapping.get("dataSets") or {}
    if data_set not in sets:
        raise NotFound(f"data set {data_set!r} is not in the DHIS2 mapping")
    units = mapping.get("orgUnits") or {}
    level = str(units.get("level", "province"))
    if level not in ("province", "regency", "facility"):
        raise BadRequest("orgUnits.level is province, regency or facility")
    unit_map = {str(k): str(v) for k, v in (units.get("map") or {}).items()}
    reverse = {v: k for k, v in unit_map.items()}
    parsed = parse_period(period)
    values: list[dict[str, Any]] = []
    suppressed = 0
    for element in sets[data_set].get("dataElements") or []:
        ind = indicator(str(element["indicator"]))
        disaggregation = element.get("by")
        by = [level] + ([str(disaggregation)] if disaggregation else [])
        codes = [str(element["code"])] if element.get("code") else []
        req = Request(ind, [parsed], by, codes)
        if org_unit is not None:
            if org_unit not in reverse:
                raise NotFound(f"org unit {org_unit!r} is not in the DHIS2 mapping")
            setattr(req, level, reverse[org_unit])
        result = evaluate(conn, req, config)
        combos = {str(k): str(v) for k, v in (element.get("categoryOptionCombos") or {}).items()}
        for row in result.rows:
            unit = unit_map.get(str(row.get(level)))
            if unit is None:
                continue
            combo = combos.get(str(row.get(str(disaggregation)))) if disaggregation else DEFAULT_COC
            if combo is None:
                continue
            if row.get("suppressed"):
                suppressed += 1
                continue
            if row.get("value") is None:
                continue
            values.append(
                {
                    "dataElement": str(element["dataElement"]),
                    "period": period,
                    "orgUnit": unit,
                    "categoryOptionCombo": combo,
                    "value": str(row["value"]),
                }
            )
    doc: dict[str, Any] = {"dataSet": data_set, "period": period}
    if org_unit is not None:
        doc["orgUnit"] = org_unit
    doc["dataValues"] = values
    doc["suppressed"] = suppressed
    return doc


def push(
    url: str, username: str, password: str, doc: dict[str, Any], timeout: float = 60.0
) -> dict[str, Any]:
    """POST the document to ``<url>/api/dataValueSets``; returns DHIS2's import summary."""
    if not url:
        raise BadRequest("no DHIS2 server: set HUB_DHIS2_URL")
    body = {k: v for k, v in doc.items() if k != "suppressed"}
    response = httpx.post(
        url.rstrip("/") + "/api/dataValueSets",
        json=body,
        auth=(username, password) if username else None,
        timeout=timeout,
    )
    if response.status_code >= 400:
        raise BadRequest(f"DHIS2 answered {response.status_code}")
    answer: dict[str, Any] = response.json() if response.content else {}
    return answer
