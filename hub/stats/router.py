"""The statistics routes: ``/stats`` (JSON or CSV), ``/stats/dhis2/dataValueSets``, the FHIR ``Measure``
and ``$evaluate-measure``, and the dashboard page (``/stats/page``, a public shell; its data comes through
the API with the user's token)."""

from __future__ import annotations

import csv
import io
from datetime import date
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from hub.auth import Principal, require_permission
from hub.errors import BadRequest, Forbidden, NotFound
from hub.fhir_api.sessions import read_connection
from hub.stats import dhis2
from hub.stats.config import StatsConfig, load_config
from hub.stats.measure import evaluate_measure, measure, measures
from hub.stats.periods import date_range, parse_periods
from hub.stats.query import INDICATORS, check_region, csv_columns, evaluate, indicator, parse_by, to_json
from hub.stats.query import Request as StatsRequest

# Who may read the statistics: the one place to change it.
STATS_ACCESS = require_permission("stats")
# Who may ask for unsuppressed figures.
UNSUPPRESSED_ROLES = ("admin",)

STATIC = Path(__file__).resolve().parent / "static"

router = APIRouter()
page_router = APIRouter()


def _config(request: Request) -> StatsConfig:
    return load_config(request.app.state.settings.stats_config)


def _json(body: Any, media_type: str = "application/json") -> Response:
    return Response(orjson.dumps(body), media_type=media_type)


def _suppressed(principal: Principal, suppression: str | None) -> bool:
    if suppression in (None, "", "on"):
        return True
    if suppression not in ("off", "none"):
        raise BadRequest("suppression is on or off")
    if principal.role not in UNSUPPRESSED_ROLES:
        raise Forbidden(f"role {principal.role} receives suppressed figures only")
    return False


@page_router.get("/stats/page", include_in_schema=False)
def stats_page() -> Response:
    return Response((STATIC / "page.html").read_bytes(), media_type="text/html; charset=utf-8")


@page_router.get("/stats/static/{name}", include_in_schema=False)
def stats_static(name: str) -> Response:
    files = {"chart.umd.min.js": "text/javascript", "CHARTJS-LICENSE.md": "text/plain"}
    if name not in files:
        raise NotFound(f"{name} is not a file of the dashboard")
    return Response(
        (STATIC / name).read_bytes(),
        media_type=files[name] + "; charset=utf-8",
        headers={"Cache-Control": "public, max-age=86400"},
    )


@router.get("/stats")
def stats_list(principal: Principal = Depends(STATS_ACCESS)) -> Response:
    return _json({"indicators": [i.describe() for i in INDICATORS.values()]})


@router.get("/stats/dhis2/dataValueSets")
def stats_dhis2(
    request: Request,
    dataSet: str = Query(...),
    period: str = Query(...),
    orgUnit: str | None = Query(default=None),
    principal: Principal = Depends(STATS_ACCESS),
) -> Response:
    with read_connection(request) as conn:
        return _json(dhis2.data_value_set(conn, _config(request), dataSet, period, orgUnit))


@router.get("/stats/{name}")
def stats_indicator(
    request: Request,
    name: str,
    period: str = Query(...),
    by: str | None = Query(default=None),
    code: str | None = Query(default=None),
    province: str | None = Query(default=None),
    regency: str | None = Query(default=None),
    district: str | None = Query(default=None),
    facility: str | None = Query(default=None),
    age: str | None = Query(default=None),
    suppression: str | None = Query(default=None),
    format: str | None = Query(default=None),
    principal: Principal = Depends(STATS_ACCESS),
) -> Response:
    ind = indicator(name)
    config = _config(request)
    if age is not None:
        config.band(age)
    req = StatsRequest(
        ind,
        parse_periods(period),
        parse_by(ind, by),
        [c for c in (code or "").split(",") if c.strip()],
        check_region("province", province),
        check_region("regency", regency),
        check_region("district", district),
        facility or None,
        age,
    )
    with read_connection(request) as conn:
        result = evaluate(conn, req, config, suppressed=_suppressed(principal, suppression))
    if format == "csv" or "text/csv" in request.headers.get("accept", ""):
        out = io.StringIO()
        columns = csv_columns(result)
        writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in result.rows:
            writer.writerow({c: _cell(row.get(c)) for c in columns})
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8")
    return _json(to_json(result))


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return value


fhir_router = APIRouter()


@fhir_router.get("/fhir/Measure")
def measure_search(principal: Principal = Depends(STATS_ACCESS)) -> Response:
    entries = [{"fullUrl": f"Measure/{m['id']}", "resource": m} for m in measures()]
    bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(entries), "entry": entries}
    return _json(bundle, "application/fhir+json")


@fhir_router.get("/fhir/Measure/{name}")
def measure_read(name: str, principal: Principal = Depends(STATS_ACCESS)) -> Response:
    return _json(measure(indicator(name)), "application/fhir+json")


@fhir_router.get("/fhir/Measure/{name}/$evaluate-measure")
def measure_evaluate(
    request: Request,
    name: str,
    periodStart: str = Query(...),
    periodEnd: str = Query(...),
    reportType: str = Query(default="summary"),
    code: str | None = Query(default=None),
    suppression: str | None = Query(default=None),
    principal: Principal = Depends(STATS_ACCESS),
) -> Response:
    ind = indicator(name)
    if reportType != "summary":
        raise BadRequest("reportType summary is the one supported (the hub publishes aggregates only)")
    try:
        period = date_range(date.fromisoformat(periodStart[:10]), date.fromisoformat(periodEnd[:10]))
    except ValueError as exc:
        raise BadRequest("periodStart and periodEnd are dates (YYYY-MM-DD)") from exc
    codes = [c for c in (code or "").split(",") if c.strip()]
    with read_connection(request) as conn:
        report = evaluate_measure(
            conn, ind, period, _config(request), codes, suppressed=_suppressed(principal, suppression)
        )
    return _json(report, "application/fhir+json")
