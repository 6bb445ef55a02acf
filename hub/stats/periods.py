"""DHIS2 period codes as date ranges [start, end): day ``20260302``, ISO week ``2026W10``, epidemiological
week Sunday–Saturday ``2026SunW10`` (week 1 holds 4 January, as SKDR and the MMWR count), month
``202603``, quarter ``2026Q1``, year ``2026``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta

from hub.errors import BadRequest


@dataclass(frozen=True, slots=True)
class Period:
    code: str
    start: date
    end: date  # exclusive


_DAY = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
_WEEK = re.compile(r"^(\d{4})W(\d{1,2})$")
_SUNWEEK = re.compile(r"^(\d{4})SunW(\d{1,2})$")
_MONTH = re.compile(r"^(\d{4})(\d{2})$")
_QUARTER = re.compile(r"^(\d{4})Q([1-4])$")
_YEAR = re.compile(r"^(\d{4})$")


def _month_start(year: int, month: int) -> date:
    return date(year + (month - 1) // 12, (month - 1) % 12 + 1, 1)


def epi_week_start(year: int) -> date:
    """The Sunday that starts epidemiological week 1 of ``year``: the Sunday on or before 4 January."""
    jan4 = date(year, 1, 4)
    return jan4 - timedelta(days=(jan4.weekday() + 1) % 7)


def parse_period(code: str) -> Period:
    code = code.strip()
    try:
        if m := _DAY.match(code):
            start = date(int(m[1]), int(m[2]), int(m[3]))
            return Period(code, start, start + timedelta(days=1))
        if m := _WEEK.match(code):
            start = date.fromisocalendar(int(m[1]), int(m[2]), 1)
            return Period(code, start, start + timedelta(days=7))
        if m := _SUNWEEK.match(code):
            year, week = int(m[1]), int(m[2])
            if not 1 <= week <= 53 or (week == 53 and epi_week_start(year + 1) <= _sunweek(year, 53)):
                raise ValueError("no such week")
            start = _sunweek(year, week)
            return Period(code, start, start + timedelta(days=7))
        if m := _MONTH.match(code):
            year, month = int(m[1]), int(m[2])
            if not 1 <= month <= 12:
                raise ValueError("no such month")
            return Period(code, date(year, month, 1), _month_start(year, month + 1))
        if m := _QUARTER.match(code):
            year, q = int(m[1]), int(m[2])
            return Period(code, _month_start(year, 3 * q - 2), _month_start(year, 3 * q + 1))
        if m := _YEAR.match(code):
            year = int(m[1])
            return Period(code, date(year, 1, 1), date(year + 1, 1, 1))
    except ValueError as exc:
        raise BadRequest(f"period {code!r} is not a valid date ({exc})") from exc
    raise BadRequest(
        f"period {code!r} is not a DHIS2 period code (20260302, 2026W10, 2026SunW10, 202603, 2026Q1, 2026)"
    )


def _sunweek(year: int, week: int) -> date:
    return epi_week_start(year) + timedelta(days=7 * (week - 1))


def parse_periods(value: str) -> list[Period]:
    codes = [c for c in value.split(",") if c.strip()]
    if not codes:
        raise BadRequest("period is required (DHIS2 period codes, comma separated)")
    if len(codes) > 60:
        raise BadRequest("at most 60 periods per request")
    return [parse_period(c) for c in codes]


def date_range(start: date, end_inclusive: date) -> Period:
    if end_inclusive < start:
        raise BadRequest("periodEnd is before periodStart")
    return Period(
        f"{start.isoformat()}/{end_inclusive.isoformat()}", start, end_inclusive + timedelta(days=1)
    )
