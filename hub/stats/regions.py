"""The Kemendagri region table (2025: provinces, regencies, districts) and its population by sex, shipped in
``hub/stats/data`` (MIT licence, see ``data/LICENSE.txt`` and ``data/SOURCE.txt``), and the resolution of a
FHIR address to its region codes."""

from __future__ import annotations

import csv
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"
REGIONS_FILE = DATA / "regions-2025.csv"
POPULATION_FILE = DATA / "population-2025.csv"
UNKNOWN = "unknown"

# SATUSEHAT's address extension: sub-extensions province, city, district, village with Kemendagri codes.
ADMINISTRATIVE_CODE = "https://fhir.kemkes.go.id/r4/StructureDefinition/administrativeCode"

_PREFIXES = (
    "provinsi ",
    "kabupaten administrasi ",
    "kota administrasi ",
    "kabupaten ",
    "kab. ",
    "kab ",
    "kota ",
    "kecamatan ",
    "kec. ",
)
_ALIASES = {
    "dki jakarta": "31",
    "jakarta": "31",
    "dki": "31",
    "diy": "34",
    "di yogyakarta": "34",
    "yogyakarta": "34",
}


def _norm(name: str) -> str:
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower().strip()
    text = re.sub(r"\s+", " ", text)
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if text.startswith(prefix):
                text, changed = text[len(prefix) :], True
    return text


def _kind(name: str) -> str:
    lowered = name.strip().lower()
    if lowered.startswith("kota"):
        return "kota"
    if lowered.startswith(("kabupaten", "kab.", "kab ")):
        return "kabupaten"
    return ""


@dataclass(frozen=True, slots=True)
class Regions:
    names: dict[str, str]  # code -> name (provinces, regencies, districts)
    by_name: dict[tuple[str, str], list[str]]  # (level, normalised name) -> codes

    def name(self, code: str | None) -> str | None:
        if not code or code == UNKNOWN:
            return None
        return self.names.get(code)

    def find(self, level: str, name: str, within: str | None = None) -> str | None:
        """The code of the region of ``level`` called ``name`` (inside ``within`` when given); None when
        unknown or ambiguous."""
        key = _norm(name)
        if level == "province" and key in _ALIASES:
            return _ALIASES[key]
        codes = self.by_name.get((level, key), [])
        if within:
            codes = [c for c in codes if c.startswith(within)]
        if len(codes) > 1 and _kind(name):  # Kota Bandung and Kabupaten Bandung
            codes = [c for c in codes if _kind(self.names[c]) == _kind(name)]
        return codes[0] if len(codes) == 1 else None


@lru_cache(maxsize=1)
def regions() -> Regions:
    names: dict[str, str] = {}
    by_name: dict[tuple[str, str], list[str]] = {}
    with REGIONS_FILE.open(encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            names[row["code"]] = row["name"]
            by_name.setdefault((row["level"], _norm(row["name"])), []).append(row["code"])
    return Regions(names, by_name)


@dataclass(frozen=True, slots=True)
class Population:
    """Population by region code ("0" the country, 2-digit provinces, 4-digit regencies) and sex."""

    counts: dict[str, dict[str, int]]  # code -> {"male", "female", "total"}

    def of(self, code: str | None, sex: str | None = None) -> int | None:
        row = self.counts.get(code or "0")
        if row is None:
            return None
        return row.get(sex or "total")


def load_population(path: Path | None = None) -> Population:
    return _population(str(path or POPULATION_FILE))


@lru_cache(maxsize=4)
def _population(path: str) -> Population:
    counts: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            counts[row["code"]] = {
                "male": int(row["male"]),
                "female": int(row["female"]),
                "total": int(row["total"]),
            }
    return Population(counts)


_DIGITS = re.compile(r"^\d+$")


def _code(value: Any, length: int) -> str | None:
    if not isinstance(value, str):
        return None
    digits = value.replace(".", "").strip()
    if _DIGITS.match(digits) and len(digits) == length and digits in regions().names:
        return digits
    return None


def _extension_codes(address: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for ext in address.get("extension") or []:
        if not isinstance(ext, dict) or not str(ext.get("url", "")).endswith("administrativeCode"):
            continue
        for sub in ext.get("extension") or []:
            if isinstance(sub, dict) and isinstance(sub.get("valueCode"), str):
                out[str(sub.get("url"))] = sub["valueCode"]
    return out


def resolve_address(address: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(province, regency, district) Kemendagri codes of one FHIR Address, each None when unknown:
    the administrativeCode extension first, then codes or names in district/city/state."""
    ext = _extension_codes(address)
    district = _code(ext.get("district"), 6) or _code(address.get("district"), 6)
    regency = _code(ext.get("city"), 4) or _code(address.get("city"), 4) or _code(address.get("district"), 4)
    province = _code(ext.get("province"), 2) or _code(address.get("state"), 2)
    table = regions()
    if province is None and isinstance(address.get("state"), str):
        province = table.find("province", address["state"])
    if regency is None and isinstance(address.get("city"), str):
        regency = table.find("regency", address["city"], within=province)
    if district is None and isinstance(address.get("district"), str):
        district = table.find("district", address["district"], within=regency or province)
    # The finer code decides the coarser ones.
    if district:
        regency = district[:4]
    if regency:
        province = regency[:2]
    return province, regency, district


def home_address(addresses: Any) -> Mapping[str, Any] | None:
    if not isinstance(addresses, list):
        return None
    candidates = [a for a in addresses if isinstance(a, dict)]
    for use in ("home", None, "temp"):
        for a in candidates:
            if a.get("use") == use or (use is None and a.get("use") not in ("old", "billing", "work")):
                return a
    return candidates[0] if candidates else None
