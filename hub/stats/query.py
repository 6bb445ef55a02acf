"""The indicators and the aggregate query behind ``GET /stats/{indicator}``, the MeasureReport and the
DHIS2 data values: one GROUP BY over ``stats_fact`` joined to ``stats_person`` per request, then
suppression (``hub.stats.suppression``)."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    case,
    func,
    literal,
    literal_column,
    or_,
    select,
)

from hub.errors import BadRequest, NotFound
from hub.stats.config import Band, StatsConfig
from hub.stats.models import StatsFact
from hub.stats.periods import Period
from hub.stats.regions import UNKNOWN, load_population, regions
from hub.stats.suppression import Cell, round_to, suppress
from hub.stats.upkeep import CHAPTERS

ALL_DIMS = ("period", "facility", "province", "regency", "district", "sex", "age", "code")
PERSON_DIMS = ("period", "province", "regency", "district", "sex", "age")
INPATIENT = ("IMP", "ACUTE", "NONAC")


@dataclass(frozen=True, slots=True)
class Indicator:
    id: str
    title: str
    title_id: str  # Indonesian
    unit: str
    kind: str  # the fact kind
    measure: str  # people | events | bed-days | alos | coverage | positivity
    codes: str  # what ``code`` takes
    dims: tuple[str, ...] = ALL_DIMS
    on_end: bool = False  # dated by the encounter's end (discharges)
    classes: tuple[str, ...] = ()  # encounter classes counted (empty: all)
    default_by: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "title_id": self.title_id,
            "unit": self.unit,
            "counts": {"events": "events", "people": "people"}.get(self.measure, self.measure),
            "codes": self.codes,
            "dimensions": list(self.dims),
        }


_ENC = "encounter class (v3 ActCode: AMB, IMP, EMER, …)"
_ICD = "ICD-10 code (A91), 3-character category (A90) or chapter (I … XXII)"
INDICATORS: dict[str, Indicator] = {
    i.id: i
    for i in (
        Indicator("encounters", "Encounters", "Kunjungan", "encounters", "encounter", "events", _ENC),
        Indicator(
            "admissions",
            "Admissions",
            "Rawat inap masuk",
            "admissions",
            "encounter",
            "events",
            _ENC,
            classes=INPATIENT,
        ),
        Indicator(
            "discharges",
            "People discharged",
            "Pasien keluar",
            "people",
            "encounter",
            "people",
            _ENC,
            on_end=True,
            classes=INPATIENT,
        ),
        Indicator(
            "bed-days",
            "Bed-days of the stays ended",
            "Hari rawat",
            "days",
            "encounter",
            "bed-days",
            _ENC,
            on_end=True,
            classes=INPATIENT,
        ),
        Indicator(
            "alos",
            "Average length of stay",
            "Rata-rata lama dirawat (AvLOS)",
            "days",
            "encounter",
            "alos",
            _ENC,
            on_end=True,
            classes=INPATIENT,
        ),
        Indicator(
            "diagnoses", "People diagnosed", "Orang terdiagnosis", "people", "condition", "people", _ICD
        ),
        Indicator(
            "notifiable",
            "Notifiable conditions (people)",
            "Penyakit potensial KLB/wabah",
            "people",
            "condition",
            "people",
            _ICD + ", among the configured notifiable conditions",
            default_by=("code", "period"),
        ),
        Indicator(
            "immunizations",
            "Vaccine doses given",
            "Dosis imunisasi",
            "doses",
            "immunization",
            "events",
            "CVX vaccine code",
            dims=(*ALL_DIMS, "dose"),
        ),
        Indicator(
            "immunization-coverage",
            "Immunisation coverage",
            "Cakupan imunisasi",
            "%",
            "immunization",
            "coverage",
            "CVX vaccine code",
            dims=("period", "province", "regency", "sex", "age", "code"),
        ),
        Indicator(
            "lab-tests",
            "People tested",
            "Orang diperiksa laboratorium",
            "people",
            "lab",
            "people",
            "LOINC code",
        ),
        Indicator(
            "lab-positivity",
            "Positivity of the people tested",
            "Positivity rate",
            "%",
            "lab",
            "positivity",
            "LOINC code",
        ),
        Indicator("deaths", "Deaths", "Kematian", "people", "death", "people", "(none)", dims=PERSON_DIMS),
    )
}


def indicator(name: str) -> Indicator:
    found = INDICATORS.get(name)
    if found is None:
        raise NotFound(f"indicator {name!r} does not exist; GET /stats lists them")
    return found


@dataclass(slots=True)
class Request:
    indicator: Indicator
    periods: list[Period]
    by: list[str]
    codes: list[str] = field(default_factory=list)
    province: str | None = None
    regency: str | None = None
    district: str | None = None
    facility: str | None = None
    age: str | None = None  # one configured band


def parse_by(ind: Indicator, value: str | None) -> list[str]:
    by = (
        [d.strip() for d in (value or "").split(",") if d.strip()]
        if value is not None
        else list(ind.default_by)
    )
    unknown = [d for d in by if d not in ind.dims]
    if unknown:
        raise BadRequest(f"indicator {ind.id} has no dimension {', '.join(unknown)} ({', '.join(ind.dims)})")
    return list(dict.fromkeys(by))


_REGION = {"province": 2, "regency": 4, "district": 6}


def check_region(level: str, value: str | None) -> str | None:
    if value is None or value == "":
        return None
    code = value.replace(".", "")
    if code != UNKNOWN and (len(code) != _REGION[level] or not code.isdigit()):
        raise BadRequest(f"{level} is a {_REGION[level]}-digit Kemendagri code")
    return code


F = StatsFact.__table__


def _age_years(dialect: str) -> ColumnElement[Any]:
    if dialect == "postgresql":
        return literal_column("date_part('year', age(stats_fact.started, stats_fact.birth_date))")
    return literal_column(
        "((CAST(strftime('%Y', stats_fact.started) AS INTEGER) - CAST(strftime('%Y', stats_fact.birth_date)"
        " AS INTEGER)) - (strftime('%m-%d', stats_fact.started) < strftime('%m-%d', stats_fact.birth_date)))"
    )


def _band_expr(dialect: str, bands: tuple[Band, ...]) -> ColumnElement[Any]:
    years = _age_years(dialect)
    whens: list[tuple[Any, Any]] = [(F.c.birth_date.is_(None), literal(UNKNOWN))]
    for band in bands:
        cond = years >= band.low if band.high is None else and_(years >= band.low, years <= band.high)
        whens.append((cond, literal(band.label)))
    return case(*whens, else_=literal(UNKNOWN))


def _los(dialect: str) -> ColumnElement[Any]:
    if dialect == "postgresql":
        diff: ColumnElement[Any] = literal_column("(stats_fact.ended - stats_fact.started)")
    else:
        diff = literal_column("CAST(julianday(stats_fact.ended) - julianday(stats_fact.started) AS INTEGER)")
    return case((diff > 0, diff), else_=literal(1))


_CATEGORY = re.compile(r"^[A-Z]\d\d$")


def _code_filter(ind: Indicator, codes: list[str], config: StatsConfig) -> ColumnElement[bool] | None:
    """The ``code`` filter. Every code comparison names its category too (a condition's first three
    characters, "" for other kinds), so the (kind, category, code, started) index serves it."""
    clauses: list[ColumnElement[bool]] = []
    if ind.kind == "condition":
        for raw in codes:
            code = raw.strip().upper()
            if code in CHAPTERS:
                clauses.append(F.c.chapter == code)
            elif _CATEGORY.match(code):
                clauses.append(F.c.category == code)
            else:
                variants = {code, code.replace(".", "")}
                if "." not in code and len(code) > 3:
                    variants.add(code[:3] + "." + code[3:])
                clauses.append(
                    and_(F.c.category == code.replace(".", "")[:3], F.c.code.in_(sorted(variants)))
                )
        condition = or_(*clauses) if clauses else None
        if ind.id == "notifiable":
            listed = or_(
                F.c.category.in_(sorted({c.replace(".", "")[:3] for c in config.notifiable if len(c) == 3})),
                and_(
                    F.c.category.in_(
                        sorted({c.replace(".", "")[:3] for c in config.notifiable if len(c) != 3})
                    ),
                    F.c.code.in_([c for c in config.notifiable if len(c) != 3]),
                ),
            )
            condition = listed if condition is None else and_(listed, condition)
        return condition
    if codes:
        return and_(F.c.category == "", F.c.code.in_([c.strip() for c in codes]))
    return None


@dataclass(slots=True)
class Result:
    indicator: Indicator
    periods: list[Period]
    by: list[str]
    rows: list[dict[str, Any]]
    total: dict[str, Any]
    suppression: dict[str, Any]


def _dim_expr(dim: str, dialect: str, config: StatsConfig) -> ColumnElement[Any]:
    if dim == "facility":
        return F.c.facility
    if dim in ("province", "regency", "district", "sex"):
        return F.c[dim]
    if dim == "age":
        return _band_expr(dialect, config.bands)
    if dim == "code":
        return F.c.code
    if dim == "dose":
        return F.c.dose
    raise BadRequest(f"no dimension {dim}")


def _aggregates(ind: Indicator, dialect: str) -> list[ColumnElement[Any]]:
    person = F.c.golden_id
    if ind.measure == "events":
        return [func.count()]
    if ind.measure in ("people", "coverage"):
        return [func.count(person.distinct())]
    if ind.measure in ("bed-days", "alos"):
        return [func.count(), func.sum(_los(dialect))]
    if ind.measure == "positivity":
        return [func.count(person.distinct()), func.count(case((F.c.positive.is_(True), person)).distinct())]
    raise AssertionError(ind.measure)


def _where(
    req: Request, periods: list[Period], config: StatsConfig, dialect: str
) -> list[ColumnElement[bool]]:
    ind = req.indicator
    when = F.c.ended if ind.on_end else F.c.started
    clauses: list[ColumnElement[bool]] = [F.c.kind == ind.kind]
    clauses.append(or_(*[and_(when >= p.start, when < p.end) for p in periods]))
    if ind.classes:
        clauses.append(and_(F.c.category == "", F.c.code.in_(ind.classes)))
    code = _code_filter(ind, req.codes, config)
    if code is not None:
        clauses.append(code)
    for level in ("province", "regency", "district"):
        value = getattr(req, level)
        if value:
            clauses.append(F.c[level] == value)
    if req.facility:
        clauses.append(F.c.facility == req.facility)
    if req.age:
        clauses.append(_band_expr(dialect, config.bands) == req.age)
    return clauses


# Dimensions a person has one value of (the golden record's): cells of these alone share no one.
_PARTITIONS = {"province", "regency", "district", "sex"}


def _summable(ind: Indicator, dims: list[str]) -> bool:
    """Whether the total is the sum of the cells: events and days always are; people are when no person
    can be in two cells."""
    return ind.measure in ("events", "bed-days", "alos") or set(dims) <= _PARTITIONS


def _period_expr(req: Request) -> ColumnElement[Any]:
    when = F.c.ended if req.indicator.on_end else F.c.started
    return case(*[(and_(when >= p.start, when < p.end), literal(p.code)) for p in req.periods])


def _overlapping(periods: list[Period]) -> bool:
    spans = sorted((p.start, p.end) for p in periods)
    return any(later[0] < earlier[1] for earlier, later in itertools.pairwise(spans))


def _run(
    conn: Connection, req: Request, periods: list[Period], dims: list[str], config: StatsConfig
) -> tuple[list[tuple[tuple[Any, ...], tuple[Any, ...]]], tuple[Any, ...] | None]:
    """The cells (dimension values, aggregates) of one statement over ``periods`` (the periods themselves
    a dimension through a CASE when they do not overlap); without dimensions, the total instead."""
    dialect = conn.dialect.name
    exprs = [
        (_period_expr(req) if d == "period" else _dim_expr(d, dialect, config)).label(f"d{i}")
        for i, d in enumerate(dims)
    ]
    aggs = _aggregates(req.indicator, dialect)
    stmt = select(*exprs, *aggs).where(*_where(req, periods, config, dialect))
    if not exprs:
        row = conn.execute(stmt).first()
        return [], tuple(row) if row is not None else (0,) * len(aggs)
    keys: list[ColumnElement[Any]] = [literal_column(f"d{i}") for i in range(len(exprs))]
    found = conn.execute(stmt.group_by(*keys)).all()
    return [(tuple(r)[: len(dims)], tuple(r)[len(dims) :]) for r in found], None


def evaluate(conn: Connection, req: Request, config: StatsConfig, *, suppressed: bool = True) -> Result:
    ind = req.indicator
    dims = [d for d in req.by if d != "period"]
    key_dims = (["period"] if "period" in req.by else []) + dims
    total_aggs: tuple[Any, ...] | None
    if "period" in req.by and _overlapping(req.periods):  # a week and its month: one statement each
        raw: list[tuple[tuple[Any, ...], tuple[Any, ...]]] = []
        for period in req.periods:
            found, _t = _run(conn, req, [period], dims, config)
            raw += [((period.code, *key), aggs) for key, aggs in found]
        total_aggs = None
    else:
        raw, total_aggs = _run(conn, req, req.periods, key_dims, config)
    overlapping = "period" in req.by and _overlapping(req.periods)
    if total_aggs is None and not overlapping and _summable(ind, key_dims):
        width = len(_aggregates(ind, conn.dialect.name))
        total_aggs = tuple(sum(int(a[i] or 0) for _k, a in raw) for i in range(width)) if raw else None
    if total_aggs is None:
        total_aggs = _run(conn, req, req.periods, [], config)[1] or (0,)
    raw = _complete(raw, key_dims, req, len(_aggregates(ind, conn.dialect.name)))
    # Cells in the order of the dimensions (periods as asked).
    order = {p.code: i for i, p in enumerate(req.periods)}
    raw.sort(
        key=lambda kv: tuple(
            (order.get(v, 0), "") if k == "period" else (0, str(v))
            for k, v in zip(key_dims, kv[0], strict=True)
        )
    )
    population = load_population(config.population) if ind.measure == "coverage" else None
    cells: list[Cell] = []
    for key, aggs in raw:
        values = dict(zip(key_dims, key, strict=True))
        cell = Cell(key, _counts(ind, aggs))
        cell.extra = {"values": values, "aggs": aggs}
        cells.append(cell)
    threshold = config.threshold if suppressed else 0
    total_counts = _counts(ind, total_aggs)
    total_hidden = suppress(cells, len(key_dims), threshold, total_counts) if suppressed else False
    rounding = config.rounding if suppressed else 0
    rows = []
    for cell in cells:
        row: dict[str, Any] = {}
        for dim, value in cell.extra["values"].items():
            row[dim] = value if value is not None else UNKNOWN
            if dim in ("province", "regency", "district"):
                row[f"{dim}_name"] = regions().name(str(value))
        if cell.suppressed:
            row["value"] = None
            row["suppressed"] = True
        else:
            row.update(
                _value(ind, cell.extra["aggs"], cell.extra["values"], req, config, population, rounding)
            )
        rows.append(row)
    total: dict[str, Any]
    if total_hidden:
        total = {"value": None, "suppressed": True}
    else:
        total = _value(ind, total_aggs, {}, req, config, population, rounding)
    info: dict[str, Any] = {"applied": suppressed, "threshold": config.threshold if suppressed else None}
    if suppressed:
        info.update(
            {
                "complementary": True,
                "rounding": config.rounding or None,
                "suppressed_cells": sum(1 for c in cells if c.suppressed),
            }
        )
    return Result(ind, req.periods, key_dims, rows, total, info)


MAX_GRID = 20000


def _complete(
    raw: list[tuple[tuple[Any, ...], tuple[Any, ...]]], dims: list[str], req: Request, width: int
) -> list[tuple[tuple[Any, ...], tuple[Any, ...]]]:
    """Every combination of the values seen on each dimension (the requested periods all), the missing
    ones as zeros: a published table shows its zeros, and suppression can rely on complete lines."""
    if not dims:
        return raw
    axes: list[list[Any]] = []
    for i, dim in enumerate(dims):
        seen = list(dict.fromkeys(k[i] for k, _ in raw))
        if dim == "period":
            seen = [p.code for p in req.periods]
        axes.append(seen)
    size = 1
    for axis in axes:
        size *= max(len(axis), 1)
    if size > MAX_GRID or not raw:
        return raw
    present = {k for k, _ in raw}
    out = list(raw)
    zero = (0,) * width
    for key in itertools.product(*axes):
        if key not in present:
            out.append((key, zero))
    return out


def _counts(ind: Indicator, aggs: tuple[Any, ...]) -> tuple[int, ...]:
    if ind.measure == "positivity":
        return (int(aggs[0] or 0), int(aggs[1] or 0))
    return (int(aggs[0] or 0),)


def denominator(values: dict[str, Any], req: Request, config: StatsConfig, population: Any) -> int | None:
    region = values.get("regency") or values.get("province") or req.regency or req.province or "0"
    if region == UNKNOWN or req.district or values.get("district"):
        return None
    sex = values.get("sex")
    if sex not in (None, "male", "female"):
        return None
    base: int | None = population.of(str(region), sex)
    if base is None:
        return None
    band = values.get("age") or req.age
    if band:
        if band == UNKNOWN or band not in config.shares:
            return None
        return round(base * config.shares[band])
    return int(base)


def _value(
    ind: Indicator,
    aggs: tuple[Any, ...],
    values: dict[str, Any],
    req: Request,
    config: StatsConfig,
    population: Any,
    rounding: int,
) -> dict[str, Any]:
    n = int(aggs[0] or 0)
    if ind.measure in ("people", "events"):
        return {"value": round_to(n, rounding)}
    if ind.measure == "bed-days":
        return {"value": round_to(int(aggs[1] or 0), rounding)}
    if ind.measure == "alos":
        return {"value": round(float(aggs[1] or 0) / n, 2) if n else None}
    if ind.measure == "positivity":
        return {"value": round(100.0 * int(aggs[1] or 0) / n, 1) if n else None}
    denom = denominator(values, req, config, population)
    return {
        "value": round(100.0 * n / denom, 2) if denom else None,
        "numerator": round_to(n, rounding),
        "denominator": denom,
    }


def to_json(result: Result) -> dict[str, Any]:
    return {
        "indicator": result.indicator.id,
        "unit": result.indicator.unit,
        "periods": [p.code for p in result.periods],
        "by": result.by,
        "suppression": result.suppression,
        "rows": result.rows,
        "total": result.total,
    }


def csv_columns(result: Result) -> list[str]:
    columns: list[str] = []
    for dim in result.by:
        columns.append(dim)
        if dim in ("province", "regency", "district"):
            columns.append(f"{dim}_name")
    columns.append("value")
    if result.indicator.measure == "coverage":
        columns += ["numerator", "denominator"]
    columns.append("suppressed")
    return columns


__all__ = ["INDICATORS", "Request", "evaluate", "indicator"]
