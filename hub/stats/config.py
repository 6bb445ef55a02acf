"""The statistics settings: a YAML file (``HUB_STATS_CONFIG``) over these defaults.

```yaml
suppression: {threshold: 10, rounding: 0}     # rounding: publish counts rounded to this base (0: exact)
age_bands: ["<1", "1-4", "5-14", "15-49", "50+"]
age_shares: {"<1": 0.016, ...}                # share of the population in each band (coverage denominators)
notifiable: [A00, A01, A90, A91, B05, ...]    # ICD-10 codes or 3-character categories
population: /path/to/population.csv           # code,level,name,male,female,total (default: the shipped table)
dhis2: {...}                                  # see hub.stats.dhis2
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from hub.errors import BadRequest

DEFAULT_BANDS = ("<1", "1-4", "5-14", "15-49", "50+")
# Share of Indonesia's population in each default band (rounded, from the 2020 census age structure); a
# deployment that has its own projections sets ``age_shares`` (or a population file per band).
DEFAULT_SHARES = {"<1": 0.016, "1-4": 0.064, "5-14": 0.165, "15-49": 0.522, "50+": 0.233}
# SKDR (early warning) priority conditions: cholera, typhoid, diarrhoea, shigellosis, dengue, measles,
# diphtheria, pertussis, tetanus, neonatal tetanus, acute flaccid paralysis / polio, rabies, malaria,
# anthrax, leptospirosis, avian influenza / COVID-19, chikungunya, hepatitis A, meningitis.
DEFAULT_NOTIFIABLE = (
    "A00",
    "A01",
    "A09",
    "A03",
    "A90",
    "A91",
    "B05",
    "A36",
    "A37",
    "A35",
    "A33",
    "A80",
    "A82",
    "B50",
    "B51",
    "B52",
    "B53",
    "B54",
    "A22",
    "A27",
    "J09",
    "U07",
    "A92",
    "B15",
    "A39",
)

_BAND = re.compile(r"^(<\s*(\d+)|(\d+)\s*-\s*(\d+)|(\d+)\s*\+)$")


@dataclass(frozen=True, slots=True)
class Band:
    label: str
    low: int  # years, inclusive
    high: int | None  # years, inclusive; None: open


def parse_band(label: str) -> Band:
    m = _BAND.match(label.strip())
    if m is None:
        raise ValueError(f"age band {label!r}: write <N, N-M or N+")
    if m[2] is not None:
        return Band(label, 0, int(m[2]) - 1)
    if m[3] is not None:
        return Band(label, int(m[3]), int(m[4]))
    return Band(label, int(m[5]), None)


@dataclass(frozen=True, slots=True)
class StatsConfig:
    threshold: int = 10
    rounding: int = 0
    bands: tuple[Band, ...] = tuple(parse_band(b) for b in DEFAULT_BANDS)
    shares: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SHARES))
    notifiable: tuple[str, ...] = DEFAULT_NOTIFIABLE
    population: Path | None = None
    dhis2: dict[str, Any] = field(default_factory=dict)

    def band(self, label: str) -> Band:
        for band in self.bands:
            if band.label == label:
                return band
        raise BadRequest(f"age band {label!r} is not configured ({', '.join(b.label for b in self.bands)})")


def load_config(path: Path | None) -> StatsConfig:
    return _load(str(path) if path else "")


@lru_cache(maxsize=4)
def _load(path: str) -> StatsConfig:
    if not path:
        return StatsConfig()
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    suppression = data.get("suppression") or {}
    bands = tuple(parse_band(str(b)) for b in data.get("age_bands") or DEFAULT_BANDS)
    shares = {str(k): float(v) for k, v in (data.get("age_shares") or DEFAULT_SHARES).items()}
    population = data.get("population")
    return StatsConfig(
        threshold=int(suppression.get("threshold", 10)),
        rounding=int(suppression.get("rounding", 0)),
        bands=bands,
        shares=shares,
        notifiable=tuple(str(c).upper() for c in data.get("notifiable") or DEFAULT_NOTIFIABLE),
        population=Path(population) if population else None,
        dhis2=dict(data.get("dhis2") or {}),
    )
