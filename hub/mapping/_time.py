"""HL7 v2 TS/DTM/DT values to FHIR date, dateTime and instant, at every precision and with any offset.

HL7 v2.5.1 2A.3.22: ``YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]``; real feeds also send ``+ZZ``,
``+HH:MM`` and ISO-looking values. A value with a time and no offset is read in the sender's time zone
(never the server's), as the V2-to-FHIR IG asks (TS → dateTime "shall include the time zone").
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo

_TS = re.compile(
    r"^\s*(\d{4})-?(\d{2})?-?(\d{2})?[T ]?(\d{2})?:?(\d{2})?:?(\d{2})?(?:[.,](\d{1,9}))?"
    r"\s*(Z|[+-]\d{2}(?::?\d{2})?)?\s*$"
)


class TimeFormatError(ValueError):
    """A TS/DTM/DT value that is not a date or time."""


@lru_cache(maxsize=16)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _offset_text(offset: str) -> str:
    if offset == "Z":
        return "Z"
    sign, digits = offset[0], offset[1:].replace(":", "")
    hh, mm = digits[:2], digits[2:4] or "00"
    if int(hh) > 14 or int(mm) > 59:
        raise TimeFormatError(f"offset {offset!r} is out of range")
    return f"{sign}{hh}:{mm}"


@lru_cache(maxsize=4096)
def _local_offset(zone: str, y: int, mo: int, d: int, h: int, mi: int) -> str:
    off = datetime(y, mo, d, h, mi, tzinfo=_zone(zone)).utcoffset()
    assert off is not None
    total = int(off.total_seconds()) // 60
    sign = "+" if total >= 0 else "-"
    total = abs(total)
    return f"{sign}{total // 60:02d}:{total % 60:02d}"


def split_ts(value: str) -> tuple[str, ...]:
    """The parts of a TS: (year, month, day, hour, minute, second, fraction, offset), "" when absent."""
    parts = _split_plain(value)
    if parts is None:
        m = _TS.match(value)
        if m is None:
            raise TimeFormatError(f"{value!r} is not an HL7 date/time")
        parts = m.groups("")
    _check_ts(value, parts)
    return parts


def _split_plain(value: str) -> tuple[str, ...] | None:
    """The parts of the shape nearly every sender uses, ``YYYY[MM[DD[HH[MM[SS]]]]][+/-ZZZZ]`` in ASCII
    digits, without the regular expression (the same groups it would give); None for any other shape.
    Every message brings new timestamps, so this runs a few times per message."""
    digits, offset = value, ""
    if len(value) > 5 and value[-5] in "+-":
        digits, offset = value[:-5], value[-5:]
        if not (offset[1:].isdigit() and offset.isascii()):
            return None
    if len(digits) not in (4, 6, 8, 10, 12, 14) or not (digits.isdigit() and digits.isascii()):
        return None
    if offset[:1] == "-" and len(digits) < 8:  # the pattern reads YYYY-MM / YYYYMM-DD as dashed dates
        return None
    return (digits[:4], digits[4:6], digits[6:8], digits[8:10], digits[10:12], digits[12:14], "", offset)


def _check_ts(value: str, parts: tuple[str, ...]) -> None:
    y, mo, d, h, mi, s = parts[:6]
    # Precision must be contiguous: a minute without an hour is not a TS.
    seen_gap = False
    for p in (mo, d, h, mi, s):
        if not p:
            seen_gap = True
        elif seen_gap:
            raise TimeFormatError(f"{value!r} is not an HL7 date/time")
    if parts[6] and not s:
        raise TimeFormatError(f"{value!r} has a fraction without seconds")
    try:
        datetime(int(y), int(mo or 1), int(d or 1), int(h or 0), int(mi or 0), int(s or 0))
    except ValueError as exc:
        raise TimeFormatError(f"{value!r} is not a valid date/time: {exc}") from None
    if int(h or 0) > 23:
        raise TimeFormatError(f"{value!r} has an hour over 23")


@lru_cache(maxsize=8192)
def to_date(value: str) -> str:
    """FHIR ``date`` (YYYY, YYYY-MM or YYYY-MM-DD); any time and offset are dropped."""
    y, mo, d, *_ = split_ts(value)
    return "-".join(p for p in (y, mo, d) if p)


@lru_cache(maxsize=8192)  # a message repeats its timestamps (OBR-7 in every OBX); a feed repeats minutes
def to_datetime(value: str, zone: str) -> str:
    """FHIR ``dateTime``. Date-only precisions stay dates (FHIR allows no offset there); a value with
    a time gets seconds (FHIR requires them) and an offset: its own, else the sender's zone's."""
    return _datetime_text(split_ts(value), zone)


def _datetime_text(parts: tuple[str, ...], zone: str) -> str:
    y, mo, d, h, mi, s, frac, off = parts
    if not h:
        return "-".join(p for p in (y, mo, d) if p)
    time = f"{h}:{mi or '00'}:{s or '00'}" + (f".{frac}" if frac else "")
    offset = _offset_text(off) if off else _local_offset(zone, int(y), int(mo), int(d), int(h), int(mi or 0))
    return f"{y}-{mo}-{d}T{time}{offset}"


@lru_cache(maxsize=8192)
def to_instant(value: str, zone: str) -> str:
    """FHIR ``instant``: a dateTime padded to the second (a bare date is midnight in the sender's zone)."""
    y, mo, d, h, mi, s, frac, off = split_ts(value)
    return _datetime_text((y, mo or "01", d or "01", h or "00", mi or "00", s or "00", frac, off), zone)
