"""Pure scoring of two patients: normalisation, comparison and the match decision.

Owns everything the MPI knows about *whether two Patient records are the same person*, and nothing about
storage: the service hands in FHIR Patient dicts and gets back a :class:`MatchResult`. Scoring follows
Fellegi–Sunter: each field comparison yields an agreement level whose weight is log2(m/u) (m: probability
of the level among true matches, u: among non-matches), the weights add up, and two thresholds split the
sum into match / possible / no-match. On top of the sum sit the deterministic rules of the national
design: an agreeing NIK decides unless demographics flatly contradict it; placeholder identities
(newborns "Bayi Ny. …", "Unknown", "Tn. X") and records with two different valid NIKs never auto-link;
person identifiers other than the NIK (BPJS, passport) are strong evidence but never a match on their own.
"""

from __future__ import annotations

import math
import random
import re
import unicodedata
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Final, Literal

import jellyfish
from rapidfuzz.distance import OSA, JaroWinkler, Levenshtein
from rapidfuzz.fuzz import token_set_ratio, token_sort_ratio

__all__ = [
    "NIK_CONFLICT",
    "NIK_SYSTEM",
    "Comparison",
    "Features",
    "MatchConfig",
    "MatchResult",
    "NikInfo",
    "Outcome",
    "blocking_keys",
    "compare",
    "estimate_weights",
    "features",
    "is_placeholder",
    "levels",
    "name_tokens",
    "normalise_phone",
    "parse_nik",
    "worth_comparing",
]

NIK_SYSTEM: Final = "https://fhir.kemkes.go.id/id/nik"
Outcome = Literal["match", "possible", "no-match"]

# Kemendagri province codes (the first two NIK digits), including the 2022 Papua provinces.
_PROVINCES: Final = frozenset(
    [
        11,
        12,
        13,
        14,
        15,
        16,
        17,
        18,
        19,
        21,
        31,
        32,
        33,
        34,
        35,
        36,
        51,
        52,
        53,
        61,
        62,
        63,
        64,
        65,
        71,
        72,
        73,
        74,
        75,
        76,
        81,
        82,
        91,
        92,
        93,
        94,
        95,
        96,
    ]
)

# Titles and honorifics dropped before comparing names: Tn./Ny./Nn./An./Sdr., religious and academic titles.
_HONORIFICS: Final = frozenset(
    [
        "tn",
        "tuan",
        "ny",
        "nyonya",
        "nn",
        "nona",
        "an",
        "anak",
        "sdr",
        "sdri",
        "saudara",
        "saudari",
        "bpk",
        "bapak",
        "ibu",
        "bu",
        "pak",
        "mr",
        "mrs",
        "ms",
        "miss",
        "dr",
        "drg",
        "dra",
        "drs",
        "ir",
        "prof",
        "h",
        "hj",
        "haji",
        "hajjah",
        "kh",
        "ust",
        "ustadz",
        "ustadzah",
        "raden",
        "rd",
        "rr",
        "ra",
        "mas",
        "mbak",
        "skm",
        "sked",
        "skom",
        "sh",
        "se",
        "st",
        "spd",
        "spd",
        "ssi",
        "ssos",
        "sag",
        "mm",
        "mh",
        "mkes",
        "mpd",
        "amd",
        "amkep",
        "skep",
        "apt",
        "mba",
    ]
)
# Spelling variants collapsed to one canonical token (Indonesian transliterations of Arabic names).
_CANONICAL: Final = {
    **dict.fromkeys(
        [
            "muhammad",
            "muhamad",
            "muhammed",
            "muhamed",
            "mohammad",
            "mohamad",
            "mohammed",
            "mohamed",
            "mochammad",
            "mochamad",
            "mokhammad",
            "mukhammad",
            "moch",
            "moh",
            "mohd",
            "muh",
            "mhd",
            "md",
            "mch",
        ],
        "muhammad",
    ),
    **dict.fromkeys(["abdul", "abd", "abdoel"], "abdul"),
    **dict.fromkeys(["achmad", "ahmad", "akhmad", "ahmat"], "ahmad"),
    **dict.fromkeys(["nur", "noor", "nuur"], "nur"),
    **dict.fromkeys(["siti", "sitti"], "siti"),
}
# Tokens so frequent in Indonesian names that sharing one says little (they never make a partial agree).
_COMMON_TOKENS: Final = frozenset(
    [
        "muhammad",
        "siti",
        "nur",
        "sri",
        "dewi",
        "ahmad",
        "abdul",
        "putri",
        "putra",
        "wati",
        "ayu",
        "agus",
        "budi",
        "eka",
        "dwi",
        "tri",
        "indah",
        "rahmat",
        "nurul",
        "dian",
        "ratna",
    ]
)

_DEFAULT_PLACEHOLDERS: Final = (
    r"^(bayi|by)\b",  # newborn registered under the mother's name: "Bayi Ny. Sari", "By. Ny. Sari"
    r"^(unknown|tidak dikenal|tanpa nama|anonim|anonymous|mr x|tn x|ny x|nn x|an x|x)$",
    r"^(tn|ny|nn|an|mr|mrs)\s*x\b",
    r"^(pasien|patient)\s*(tanpa|unknown|\d+)",
)


# Compiled once: features() runs for every new or changed source, and the re module's own cache costs a
# lookup per call.
_SEPARATORS: Final = re.compile(r"[\s.\-]")
_DOUBLED: Final = re.compile(r"(.)\1+")
_LETTERS: Final = re.compile(r"[a-z]+")
_ALNUM: Final = re.compile(r"[a-z0-9]+")
_NON_DIGITS: Final = re.compile(r"\D")
_DATE: Final = re.compile(r"^(\d{4})-(\d{2})-(\d{2})")
_SPACES_DOTS: Final = re.compile(r"[\s.]")
_SPACES: Final = re.compile(r"\s")


@lru_cache(maxsize=16)
def _patterns(placeholders: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p) for p in placeholders)


@dataclass(frozen=True, slots=True)
class MatchConfig:
    """Thresholds and rules; weights are log2(m/u) per agreement level and can be retuned per deployment."""

    match_threshold: float = 16.0
    possible_threshold: float = 8.0
    # A match needs this much weight from demographics alone: identifiers never carry a match by themselves.
    min_demographic_weight: float = 8.0
    # The twin/namesake gate: without a name and a birth date that both agree, an automatic link needs an
    # agreeing BPJS/passport too. Off: the score alone decides (pure Fellegi–Sunter).
    twin_gate: bool = True
    placeholders: tuple[str, ...] = _DEFAULT_PLACEHOLDERS
    weights: dict[str, dict[str, float]] = field(
        default_factory=lambda: {
            "name": {
                "exact": 9.0,
                "close": 7.0,
                "fuzzy": 3.5,
                "subset": 3.5,  # one name is the other less some tokens: "Rizki" / "Rizki Pratama"
                "partial": 1.5,  # a rare token shared, another different: siblings look like this
                "disagree": -6.0,
            },
            "birthDate": {
                "exact": 8.0,
                "transposed": 4.5,
                "typo": 3.5,
                "part": 1.0,  # two of year, month, day agree; the third is simply different
                "year": 0.5,
                "disagree": -7.0,
            },
            "gender": {"agree": 0.5, "disagree": -4.0},
            # A street address or postal code shared by two different people is a household: rare among
            # random pairs (hence these weights), common among relatives, whom the twin gate below (not a
            # low weight) keeps apart. A district is not: a hospital's patients come from a few.
            "locality": {"district": 3.0, "city": 2.0, "province": 0.3, "disagree": -1.0},
            "postalCode": {"agree": 5.0, "disagree": -1.0},
            "line": {"agree": 7.0, "partial": 3.0, "disagree": -1.0},
            "telecom": {"agree": 5.0, "disagree": -0.5},
            # A national person number (BPJS, passport) agrees by chance about never; one typo away is nearly
            # as rare. Still never a match on its own: see min_demographic_weight.
            "identifier": {"agree": 12.0, "close": 7.0, "disagree": -4.0},
            "nik": {"agree": 12.0, "close": 4.0, "disagree": -10.0},
        }
    )

    def weight(self, field_: str, level: str) -> float:
        return self.weights.get(field_, {}).get(level, 0.0)


@dataclass(frozen=True, slots=True)
class NikInfo:
    """A structurally valid NIK: region codes and the birth date encoded in digits 7–12."""

    nik: str
    province: str
    city: str
    district: str
    birth_day: int
    birth_month: int
    birth_yy: int
    female: bool


def parse_nik(value: str) -> NikInfo | None:
    """The NIK's parts when ``value`` is 16 digits with a known province, non-zero city and district
    codes, a possible day (women: day + 40) and month, and a non-zero serial; else None (kept as given,
    never used for deterministic matching)."""
    digits = _SEPARATORS.sub("", value or "")
    if len(digits) != 16 or not digits.isdigit():
        return None
    if int(digits[:2]) not in _PROVINCES or digits[2:4] == "00" or digits[4:6] == "00":
        return None
    day, month, yy = int(digits[6:8]), int(digits[8:10]), int(digits[10:12])
    female = day > 40
    if female:
        day -= 40
    if not (1 <= day <= 31 and 1 <= month <= 12) or digits[12:] == "0000":
        return None
    return NikInfo(digits, digits[:2], digits[:4], digits[:6], day, month, yy, female)


def _ascii(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()


def _canonical_token(token: str) -> str:
    token = _CANONICAL.get(token, token)
    if token in _CANONICAL.values():
        return token
    if any(marker in token for marker in ("oe", "dj", "tj")):
        # Old spelling: its j is today's y, its dj today's j (Tjahjono = Cahyono, Djoko = Joko).
        token = token.replace("dj", "J").replace("tj", "c").replace("nj", "ny").replace("sj", "sy")
        token = token.replace("j", "y").replace("J", "j").replace("oe", "u")
    token = token.replace("ch", "kh")
    return _DOUBLED.sub(r"\1", token)  # doubled letters: Muhammmad, Anggi/Angi


def name_tokens(text: str) -> list[str]:
    """Canonical name tokens: lower-case ASCII, no punctuation, honorifics and titles removed,
    Muhammad/Moh./Mohd. and friends collapsed, old spelling modernised, doubled letters single."""
    text = _ascii(text)
    text = text.split(",")[0] if "," in text and len(text.split(",")[0].split()) > 0 else text
    raw = _LETTERS.findall(text.replace(".", " ").replace("'", ""))
    return [_canonical_token(t) for t in raw if t not in _HONORIFICS]


def is_placeholder(text: str, config: MatchConfig | None = None) -> bool:
    """Whether a name is a placeholder identity (newborn under the mother's name, unknown patient)."""
    config = config or MatchConfig()
    plain = " ".join(_ALNUM.findall(_ascii(text)))
    if not plain:
        return True
    return any(p.search(plain) for p in _patterns(config.placeholders))


def normalise_phone(value: str) -> str | None:
    """Indonesian numbers to the national form: +62 / 62 / 0062 prefixes become 0; None when too short."""
    digits = _NON_DIGITS.sub("", value or "")
    if digits.startswith("0062"):
        digits = digits[4:]
    elif digits.startswith("62") and len(digits) >= 10:
        digits = digits[2:]
    digits = digits.lstrip("0")
    if len(digits) < 7:
        return None
    return "0" + digits


@dataclass(frozen=True, slots=True)
class Features:
    """The comparable content of one Patient."""

    tokens: tuple[str, ...]
    placeholder: bool
    birth_date: tuple[int, int, int] | None  # (year, month, day)
    gender: str | None
    nik: NikInfo | None
    nik_raw: str | None
    # {system: value} for person identifiers other than the NIK and MRNs (BPJS, passport, ...)
    person_ids: dict[str, str]
    phones: frozenset[str]
    province: str | None
    city: str | None
    district: str | None
    city_text: str | None
    postal_code: str | None
    line: str | None


_PERSON_ID_TYPES: Final = frozenset({"SN", "PPN", "SS", "DL", "NI", "NH", "JHN", "PEN", "CZ"})


def _codes(value: Any) -> list[str]:
    out: list[str] = []
    if isinstance(value, dict):
        for coding in value.get("coding") or []:
            if isinstance(coding, dict) and coding.get("code"):
                out.append(str(coding["code"]))
    return out


def _identifier_kind(ident: dict[str, Any]) -> str:
    system = str(ident.get("system") or "")
    types = _codes(ident.get("type"))
    if system == NIK_SYSTEM or "NNIDN" in types:
        return "nik"
    if "MR" in types or "PI" in types:
        return "mrn"
    lowered = system.lower()
    if "bpjs" in lowered or "passport" in lowered or "paspor" in lowered:
        return "person"
    if any(t in _PERSON_ID_TYPES for t in types):
        return "person"
    return "mrn"  # an unqualified sender identifier: local to its sender


def _parse_date(value: Any) -> tuple[int, int, int] | None:
    m = _DATE.match(str(value or ""))
    if m is None:
        return None
    y, mo, d = int(m.group(1)), int(m.group(2)), int(m.group(3))
    if not (1 <= mo <= 12 and 1 <= d <= 31):
        return None
    return (y, mo, d)


_REGION_PARTS: Final = ("province", "city", "district", "village")


def _address_codes(address: dict[str, Any]) -> dict[str, str]:
    """Kemendagri region codes from an Address: SATUSEHAT's administrativeCode extension (sub-extensions
    province/city/district/village) or any extension whose url ends with one of those names."""
    found: dict[str, str] = {}

    def walk(exts: Any) -> None:
        for ext in exts or []:
            if not isinstance(ext, dict):
                continue
            tail = str(ext.get("url", "")).rstrip("/").rsplit("/", 1)[-1]
            value = ext.get("valueCode") or ext.get("valueString")
            if tail in _REGION_PARTS and value:
                found[tail] = _NON_DIGITS.sub("", str(value))
            walk(ext.get("extension"))

    walk(address.get("extension"))
    return {k: v for k, v in found.items() if v}


def features(patient: dict[str, Any], config: MatchConfig | None = None) -> Features:
    """Extract the comparable features of a FHIR Patient dict."""
    config = config or MatchConfig()
    names = [n for n in patient.get("name") or [] if isinstance(n, dict)]
    official = next(
        (n for n in names if n.get("use") in (None, "official", "usual")), names[0] if names else {}
    )
    text = str(official.get("text") or "")
    if not text:
        given = " ".join(str(g) for g in official.get("given") or [])
        text = " ".join(p for p in (" ".join(str(p) for p in official.get("prefix") or []), given) if p)
        text = f"{text} {official.get('family') or ''}".strip()
    placeholder = is_placeholder(text, config)
    tokens = tuple(name_tokens(text))

    nik_raw: str | None = None
    nik: NikInfo | None = None
    person_ids: dict[str, str] = {}
    for ident in patient.get("identifier") or []:
        if not isinstance(ident, dict) or not ident.get("value"):
            continue
        kind = _identifier_kind(ident)
        value = str(ident["value"]).strip()
        if kind == "nik" and nik_raw is None:
            nik_raw = _NON_DIGITS.sub("", value) or value
            nik = parse_nik(value)
        elif kind == "person":
            system = str(ident.get("system") or "|".join(_codes(ident.get("type"))))
            person_ids.setdefault(system, _SEPARATORS.sub("", value).upper())

    phones = frozenset(
        p
        for t in patient.get("telecom") or []
        if isinstance(t, dict) and t.get("system") in (None, "phone", "sms")
        for p in [normalise_phone(str(t.get("value") or ""))]
        if p
    )
    addresses = [a for a in patient.get("address") or [] if isinstance(a, dict)]
    home = next((a for a in addresses if a.get("use") in (None, "home")), addresses[0] if addresses else {})
    codes = _address_codes(home)
    # XAD-9 (county/parish code, FHIR address.district) carries the Kemendagri code where senders have one.
    coded_district = _SPACES_DOTS.sub("", str(home.get("district") or ""))
    if "district" not in codes and coded_district.isdigit() and len(coded_district) == 6:
        codes["district"] = coded_district
    district = codes.get("district") or (codes["village"][:6] if "village" in codes else None)
    city = codes.get("city") or (district[:4] if district else None)
    province = codes.get("province") or (city[:2] if city else None)
    line = " ".join(_ascii(str(x)) for x in home.get("line") or []).strip() or None
    city_text = (
        _ascii(str(home.get("city") or ("" if coded_district.isdigit() else coded_district))).strip() or None
    )
    postal = _SPACES.sub("", str(home.get("postalCode") or "")) or None
    gender = patient.get("gender")
    return Features(
        tokens=tokens,
        placeholder=placeholder,
        birth_date=_parse_date(patient.get("birthDate")),
        gender=gender if gender in ("male", "female") else None,
        nik=nik,
        nik_raw=nik_raw,
        person_ids=person_ids,
        phones=phones,
        province=province,
        city=city,
        district=district,
        city_text=city_text,
        postal_code=postal,
        line=line,
    )


def _token_key(token: str) -> str:
    return str(jellyfish.soundex(token)) if token else ""


def blocking_keys(f: Features) -> set[str]:
    """Keys under which candidates are looked up. Each key is narrow (a name token with most of the birth
    date, or with the place), and there are several, so that two records of one person share at least one
    key unless nearly every field is mistyped, while a block stays small with millions of patients. Common
    name tokens (Muhammad, Siti) are left out of name keys; placeholders get no name keys at all."""
    keys: set[str] = set()
    if f.nik is not None:
        keys.add(f"nik:{f.nik.nik}")
    elif f.nik_raw and len(f.nik_raw) >= 8:
        keys.add(f"nik:{f.nik_raw}")
    for system, value in f.person_ids.items():
        keys.add(f"id:{system}|{value}")
    for phone in f.phones:
        keys.add(f"tel:{phone}")
    rare = [t for t in f.tokens if t not in _COMMON_TOKENS and len(t) > 1] or [t for t in f.tokens if t]
    codes = [] if f.placeholder else sorted({_token_key(t) for t in rare})
    place = f.district or f.postal_code or f.city_text
    if f.birth_date is not None:
        y, m, d = f.birth_date
        md = f"{min(m, d):02d}{max(m, d):02d}"  # day and month in either order: transpositions
        for k in codes:
            keys.add(f"nyd:{k}|{y // 10}|{md}")  # token + decade + day/month: last-digit year typos
            if place:
                keys.add(f"nyp:{k}|{y}|{place}")  # token + year + place: day or month typos
        for i, a in enumerate(codes):
            for b in codes[i + 1 : i + 4]:
                keys.add(f"n2y:{a}|{b}|{y}")  # two tokens + year: day or month typos
                keys.add(f"n2d:{a}|{b}|{md}")  # two tokens + day/month: any year typo
        if len(codes) == 1:  # a mononym has no second token to lean on
            keys.add(f"ny:{codes[0]}|{y}")
            keys.add(f"nmd:{codes[0]}|{md}")
        if place:
            keys.add(f"dp:{y:04d}{m:02d}{d:02d}|{place}")  # full date + place: a changed name
    elif codes:
        keys.add("n:" + "|".join(codes) + (f"|{place}" if place else ""))
    return keys


# Keys that identify by themselves (a national or person number, a phone, the full birth date at one
# place): one of them shared is reason enough to compare. Name keys are built to overlap several times
# for two records of one person.
_IDENTIFYING_KEYS: Final = ("nik:", "id:", "tel:", "dp:")


def worth_comparing(shared: Mapping[str, Collection[str]], cap: int = 8) -> list[str]:
    """The candidates (``shared``: candidate → the blocking keys it shares with the new record) to score.

    All of them while there are at most ``cap``: a small index, or a rare name. In a crowded index, the
    candidates that share two keys or more, or an identifying key, and then, up to ``cap``, those sharing
    one name key, the rarest key first: a record of the same person nearly always shares several keys
    (one per name token and date or place part that survived the typos), while a common family name
    brings hundreds of namesakes that share just one. Each comparison costs a parse and a score, so this
    keeps a decision's time bounded at millions of patients."""
    if len(shared) <= cap:
        return sorted(shared)
    strong = sorted(
        c
        for c, keys in shared.items()
        if len(keys) >= 2 or any(k.startswith(_IDENTIFYING_KEYS) for k in keys)
    )
    room = cap - len(strong)
    if room <= 0:
        return strong
    block_size: dict[str, int] = {}
    for keys in shared.values():
        for key in keys:
            block_size[key] = block_size.get(key, 0) + 1
    chosen = set(strong)
    weak = sorted((block_size[next(iter(keys))], c) for c, keys in shared.items() if c not in chosen)
    return strong + sorted(c for _, c in weak[:room])


@dataclass(frozen=True, slots=True)
class Comparison:
    field: str
    level: str  # an agreement level of MatchConfig.weights[field], or "missing"
    weight: float
    note: str = ""  # why the level was set aside (a NIK conflict's evidence), for the steward

    @property
    def agrees(self) -> bool:
        return self.weight > 0


@dataclass(frozen=True, slots=True)
class MatchResult:
    outcome: Outcome
    weight: float
    comparisons: tuple[Comparison, ...]
    reason: str  # which rule decided: "nik", "score", "placeholder", "nik-contradiction", "nik-differs", ...

    @property
    def grade(self) -> str:
        """The FHIR match-grade code (http://hl7.org/fhir/match-grade)."""
        if self.outcome == "match":
            return "certain" if self.reason == "nik" else "probable"
        if self.outcome == "possible":
            return "possible"
        return "certainly-not"

    def probability(self, config: MatchConfig | None = None) -> float:
        """The weight as a 0..1 score (logistic around the possible threshold), for Bundle search.score."""
        config = config or MatchConfig()
        if self.reason == "nik" and self.outcome == "match":
            return 1.0
        x = (self.weight - (config.match_threshold + config.possible_threshold) / 2) / 2.0
        return round(1.0 / (1.0 + float(2.0 ** (-x))), 4)

    def fields(self) -> dict[str, list[str]]:
        return {
            "agree": [c.field for c in self.comparisons if c.weight > 0],
            "disagree": [c.field for c in self.comparisons if c.weight < 0],
        }


def _compare_names(a: tuple[str, ...], b: tuple[str, ...]) -> str | None:
    if not a or not b:
        return None
    ja, jb = "".join(a), "".join(b)
    if ja == jb or "".join(sorted(a)) == "".join(sorted(b)):
        return "exact"  # also "Nur Hayati" = "Nurhayati" and swapped given/family
    sa, sb = " ".join(a), " ".join(b)
    sort_sim = token_sort_ratio(sa, sb) / 100.0
    concat_sim = JaroWinkler.normalized_similarity(ja, jb)
    if max(sort_sim, concat_sim) >= 0.92:
        return "close"
    # An initial stands for a token: "M. Rizki" = "Muhammad Rizki".
    shorter, longer = (a, b) if len(a) <= len(b) else (b, a)
    matched = 0
    for t in shorter:
        if any(
            u == t
            or (len(t) == 1 and u.startswith(t))
            or (len(u) == 1 and t.startswith(u))
            or JaroWinkler.normalized_similarity(t, u) >= 0.9
            for u in longer
        ):
            matched += 1
    if matched == len(shorter) and len(shorter) == len(longer):
        return "close"
    if max(sort_sim, concat_sim) >= 0.85:
        return "fuzzy"
    if matched == len(shorter):
        # Every token of the shorter name is in the longer one (mononym vs. full name): partial evidence,
        # unless all it shares is a name everybody has.
        # A name with tokens left out is not a different name: siblings and twins differ in a token that both
        # records have, which is "partial" below.
        rare_shared = [t for t in shorter if t not in _COMMON_TOKENS and len(t) > 1]
        return "fuzzy" if rare_shared and len(shorter) >= 2 else ("subset" if rare_shared else "disagree")
    # One rare token shared (the family name of a sibling, or one name of a person known by another):
    # partial evidence, which alone never carries an automatic link.
    if any(
        t not in _COMMON_TOKENS and len(t) > 2 and JaroWinkler.normalized_similarity(t, u) >= 0.92
        for t in a
        for u in b
    ):
        return "partial"
    return "disagree"


def _compare_dates(a: tuple[int, int, int] | None, b: tuple[int, int, int] | None) -> str | None:
    if a is None or b is None:
        return None
    if a == b:
        return "exact"
    (ya, ma, da), (yb, mb, db) = a, b
    if ya == yb and ma == db and da == mb:
        return "transposed"
    same = (ya == yb) + (ma == mb) + (da == db)
    if same == 2:
        if ya != yb:
            # A year typo: one digit wrong or two digits swapped; otherwise a different year.
            sy, ty = f"{ya:04d}", f"{yb:04d}"
            if Levenshtein.distance(sy, ty) == 1 or sorted(sy) == sorted(ty):
                return "typo"
            return "year"
        diff_a, diff_b = (ma, mb) if ma != mb else (da, db)
        sa, sb = f"{diff_a:02d}", f"{diff_b:02d}"
        if Levenshtein.distance(sa, sb) == 1 or sa == sb[::-1]:
            return "typo"
        return "typo" if abs(diff_a - diff_b) <= 1 else "part"
    return "disagree"


def _compare_locality(a: Features, b: Features) -> str | None:
    if a.district and b.district and a.district == b.district:
        return "district"
    if a.city and b.city:
        if a.city == b.city:
            return "city"
        return "province" if a.province == b.province else "disagree"
    if a.province and b.province and a.province != b.province:
        return "disagree"
    if a.city_text and b.city_text:
        return "city" if JaroWinkler.normalized_similarity(a.city_text, b.city_text) >= 0.92 else "disagree"
    return None


def _compare_line(a: str | None, b: str | None) -> str | None:
    if not a or not b:
        return None
    sim = token_set_ratio(a, b) / 100.0
    if sim >= 0.9:
        return "agree"
    return "partial" if sim >= 0.7 else "disagree"


def _compare_ids(a: str, b: str) -> str:
    if a == b:
        return "agree"
    if len(a) == len(b) and (Levenshtein.distance(a, b) == 1 or _one_swap(a, b)):
        return "close"
    return "disagree"


def _one_swap(a: str, b: str) -> bool:
    diff = [i for i in range(len(a)) if a[i] != b[i]]
    return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]


def _typo_not_sequence(a: Features, b: Features) -> bool:
    """Whether two records carry a person identifier that differs by one typo which consecutive numbers
    cannot produce: numbers less than 10 apart differ in their last digit only (without a carry), so a
    changed digit elsewhere or two swapped digits is a typo, not the next number issued."""
    for system, value in a.person_ids.items():
        other = b.person_ids.get(system)
        if other is None or other == value or _compare_ids(value, other) != "close":
            continue
        if not (value.isdecimal() and other.isdecimal() and abs(int(value) - int(other)) < 10):
            return True
    return False


# Frequent Indonesian given names, one spelling each, that lie a typo apart from another of them ("Sari"
# / "Sri", "Dedi" / "Dodi", "Rina" / "Rini"): two different ones of these are two names, not a typo.
_GIVEN_NAMES: Final = frozenset(
    _canonical_token(n)
    for n in [
        "adi",
        "andi",
        "ani",
        "ana",
        "ari",
        "arif",
        "asri",
        "budi",
        "bagus",
        "dedi",
        "dodi",
        "deni",
        "dani",
        "doni",
        "dian",
        "dina",
        "dini",
        "diah",
        "dewi",
        "eka",
        "eko",
        "eni",
        "evi",
        "edi",
        "fitri",
        "hadi",
        "hani",
        "heni",
        "hana",
        "indah",
        "intan",
        "irma",
        "iwan",
        "joko",
        "lia",
        "lina",
        "lisa",
        "nia",
        "nina",
        "nana",
        "rina",
        "rini",
        "rani",
        "reni",
        "rita",
        "ria",
        "rudi",
        "sari",
        "sri",
        "santi",
        "sinta",
        "siti",
        "tina",
        "tini",
        "tuti",
        "titi",
        "toni",
        "tono",
        "wati",
        "yati",
        "yani",
        "yuni",
        "yanti",
        "yeni",
        "yudi",
        "yuda",
    ]
)


def _counterpart(token: str, others: tuple[str, ...]) -> bool:
    """Whether ``token`` stands for one of ``others``: equal, an initial of it, or a typo of it: one letter
    changed, dropped, added or two swapped (two in a name of seven letters or more). Names one letter
    apart cannot be told from a typo unless both are known given names ("Sari" / "Sri", "Dedi" /
    "Dodi": two names); names further apart ("Hasan" / "Husen", "Nur" / "Nurul") can. (Names written
    together, "Nur Hayati" / "Nurhayati", compare as exact before this.)"""
    known = token in _GIVEN_NAMES
    return any(
        u == token
        or (len(token) == 1 and u.startswith(token))
        or (len(u) == 1 and token.startswith(u))
        or (
            OSA.distance(token, u) <= (2 if max(len(u), len(token)) >= 7 else 1)
            and not (known and u in _GIVEN_NAMES)
        )
        for u in others
    )


def _given_token(tokens: tuple[str, ...]) -> str:
    """The given name: the first token that is not one nearly everybody carries (else the first)."""
    return next((t for t in tokens if t not in _COMMON_TOKENS), tokens[0] if tokens else "")


def _different_given_name(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Whether the two names differ in the given name, each having one the other lacks ("Wulan Nasution" /
    "Ani Nasution", "Muhammad Hasan" / "Muhammad Husein"): how twins and siblings differ. Not a name with
    a token left out, nor one whose family name was mistyped. The given name
    is the first token after those both names start with that nearly everybody carries (Muhammad, Siti)."""
    i = 0
    while i < min(len(a), len(b)) and a[i] == b[i] and a[i] in _COMMON_TOKENS:
        i += 1
    if i >= len(a) or i >= len(b):
        return False
    return not _counterpart(a[i], b) and not _counterpart(b[i], a)


_NAME_NOT_DIFFERENT: Final = frozenset({"exact", "close", "fuzzy", "subset"})
_DEMOGRAPHIC: Final = frozenset({"name", "birthDate", "gender", "locality", "postalCode", "line", "telecom"})


def levels(a: Features, b: Features) -> list[tuple[str, str | None]]:
    """The agreement level of each compared field (None: missing on one side)."""
    out: list[tuple[str, str | None]] = [
        ("name", _compare_names(a.tokens, b.tokens)),
        ("birthDate", _compare_dates(a.birth_date, b.birth_date)),
        (
            "gender",
            None if not (a.gender and b.gender) else ("agree" if a.gender == b.gender else "disagree"),
        ),
        ("locality", _compare_locality(a, b)),
        (
            "postalCode",
            None
            if not (a.postal_code and b.postal_code)
            else ("agree" if a.postal_code == b.postal_code else "disagree"),
        ),
        ("line", _compare_line(a.line, b.line)),
        (
            "telecom",
            None if not (a.phones and b.phones) else ("agree" if a.phones & b.phones else "disagree"),
        ),
    ]
    id_levels = [_compare_ids(v, b.person_ids[s]) for s, v in a.person_ids.items() if s in b.person_ids]
    if id_levels:
        best = "agree" if "agree" in id_levels else ("close" if "close" in id_levels else "disagree")
        out.append(("identifier", best))
    nik_level: str | None = None
    if a.nik is not None and b.nik is not None:
        nik_level = _compare_ids(a.nik.nik, b.nik.nik)
    elif a.nik_raw and b.nik_raw and a.nik_raw == b.nik_raw:
        nik_level = "close"  # the same invalid NIK: some evidence, never deterministic
    if nik_level is not None:
        out.append(("nik", nik_level))

    return out


NIK_CONFLICT: Final = "NIK conflict"


def _nik_conflict(a: Features, b: Features, by_field: Mapping[str, str | None]) -> str | None:
    """Why two records that carry the same valid NIK are nevertheless not shown to be one person, or None.

    In Indonesia a household head's or a parent's NIK, or the family card (KK) number, typed into the NIK
    field is a common data-entry error, and newborns are registered under the mother's NIK: an agreeing
    NIK is evidence, not proof. It is not taken as proof when the two records disagree on who they are:
    - birth dates years apart (two years or more), unless the year differs by one typed digit in two
      records whose day and month are the NIK's own (digits 7–10) and whose names and sex agree;
    - a different given name (each name has one the other lacks: how relatives differ) beside a sex, a
      birth date or a rest of the name that does not agree either;
    - the name and the birth date or the sex flatly disagree, or the birth date and the sex do."""
    name, birth, gender = by_field.get("name"), by_field.get("birthDate"), by_field.get("gender")
    other_given = name not in (None, "exact") and _different_given_name(a.tokens, b.tokens)
    nik = a.nik
    if a.birth_date is not None and b.birth_date is not None and nik is not None:
        gap = abs(a.birth_date[0] - b.birth_date[0])
        if gap >= 2:
            typo = (
                birth == "typo"
                and a.birth_date[1:] == b.birth_date[1:] == (nik.birth_month, nik.birth_day)
                and gender != "disagree"
                and name in ("exact", "close", "fuzzy")
                and not other_given
            )
            if not typo:
                return f"birth dates {gap} years apart"
    if other_given and (
        gender == "disagree"
        or name in ("partial", "disagree")
        or birth not in ("exact", "transposed", "typo")
    ):
        return "different given names" + (" and sex" if gender == "disagree" else "")
    if name == "disagree" and (birth == "disagree" or gender == "disagree"):
        return "name and " + ("birth date" if birth == "disagree" else "sex") + " disagree"
    if birth == "disagree" and gender == "disagree":
        return "birth date and sex disagree"
    return None


def compare(
    a: Features, b: Features, config: MatchConfig | None = None, *, nik_suspect: bool = False
) -> MatchResult:
    """Score two patients and decide: match (auto-link), possible (review) or no-match.

    ``nik_suspect``: the NIK the two share is already carried by several different people (see
    :func:`hub.mpi.service.find_candidates`); it then counts for nothing, as if neither record had it."""
    config = config or MatchConfig()
    levels_ = levels(a, b)
    nik_level = dict(levels_).get("nik")
    by_field = {f: lvl for f, lvl in levels_}
    note = ""
    suspect = nik_suspect and nik_level == "agree" and not (a.placeholder or b.placeholder)
    if suspect:
        note = "suspect NIK: carried by several different people"
    elif nik_level == "agree" and not (a.placeholder or b.placeholder):
        note = _nik_conflict(a, b, by_field) or ""
    comparisons = tuple(
        Comparison(f, lvl or "missing", config.weight(f, lvl) if lvl else 0.0)
        if not (note and f == "nik")
        else Comparison(f, "suspect" if suspect else "conflict", 0.0, note)
        for f, lvl in levels_
    )
    total = round(sum(c.weight for c in comparisons), 3)
    demographic = sum(c.weight for c in comparisons if c.field in _DEMOGRAPHIC)
    by_field = {c.field: c.level for c in comparisons}

    def result(outcome: Outcome, reason: str) -> MatchResult:
        return MatchResult(outcome, total, comparisons, reason)

    if a.placeholder or b.placeholder:
        return result(
            "possible" if total >= config.possible_threshold or nik_level == "agree" else "no-match",
            "placeholder",
        )
    if note and not suspect:
        # The NIK agrees but the people do not: a steward looks at it, whatever the score says.
        return result("possible", NIK_CONFLICT)
    if nik_level == "agree" and not suspect:
        return result("match", "nik")
    if total >= config.match_threshold:
        if nik_level == "disagree":
            return result("possible", "nik-differs")
        if demographic < config.min_demographic_weight:
            return result("possible", "identifier-only")
        # Twins and siblings share the family name and differ in a given name; two spellings of one name
        # differ by typos. A token on each side without a counterpart on the other is the former, however
        # close the rest of the names.
        name_level = by_field.get("name")
        other_given = name_level != "exact" and _different_given_name(a.tokens, b.tokens)
        strong_name = name_level in ("exact", "close", "fuzzy") and not other_given
        strong_date = by_field.get("birthDate") in ("exact", "transposed", "typo")
        # A person identifier one typo away (a digit changed or two swapped) is as good as an agreeing one,
        # unless the two numbers could be consecutive (twins registered together): then only beside a name
        # that does not differ, since twins' names do.
        # Twins registered together get consecutive NIKs: two valid NIKs a few serial numbers apart beside
        # names that are not the same are two people, not a mistyped NIK.
        twin_niks = (
            nik_level == "close"
            and a.nik is not None
            and b.nik is not None
            and abs(int(a.nik.nik) - int(b.nik.nik)) < 10
            and name_level != "exact"
            and _given_token(a.tokens) != _given_token(b.tokens)
        )
        strong_name = strong_name and not twin_niks
        strong_id = by_field.get("identifier") == "agree" or (
            by_field.get("identifier") == "close"
            and ((name_level in _NAME_NOT_DIFFERENT and not other_given) or _typo_not_sequence(a, b))
        )
        if (
            config.twin_gate
            and not (strong_name and strong_date)
            and not (strong_id and (by_field.get("name") != "disagree" or strong_date))
        ):
            # Without a name and a birth date that agree, only another agreeing person identifier (BPJS,
            # passport) links automatically, and only beside the name or the birth date: twins share a
            # birth date and an address, a father and his namesake son a name and an address, but
            # neither a BPJS number.
            return result("possible", NIK_CONFLICT if suspect else "weak-demographics")
        return result("match", "score")
    if total >= config.possible_threshold:
        return result("possible", NIK_CONFLICT if suspect else "score")
    return result("no-match", "score")


def estimate_weights(
    records: Sequence[Features],
    candidate_pairs: Iterable[tuple[int, int]],
    config: MatchConfig | None = None,
    *,
    random_pairs: int = 50_000,
    seed: int = 0,
) -> MatchConfig:
    """Fellegi–Sunter weights estimated from a deployment's own unlabelled records, in the manner of
    Splink: u (how often a level occurs between different people) from random pairs; m (how often among
    the same person) from candidate pairs that agree on independent anchors — the person identifiers for
    the demographic fields, name and birth date for the identifiers. Each weight is log2(m/u), smoothed and
    clipped to ±15; levels never seen keep the configured weight. Thresholds and rules are unchanged."""
    config = config or MatchConfig()
    rng = random.Random(seed)
    n = len(records)
    u_counts: dict[str, dict[str, int]] = {}
    u_total: dict[str, int] = {}
    for _ in range(random_pairs if n > 1 else 0):
        i, j = rng.randrange(n), rng.randrange(n)
        if i == j:
            continue
        for f, lvl in levels(records[i], records[j]):
            if lvl is not None:
                u_counts.setdefault(f, {}).setdefault(lvl, 0)
                u_counts[f][lvl] += 1
                u_total[f] = u_total.get(f, 0) + 1
    m_counts: dict[str, dict[str, int]] = {}
    m_total: dict[str, int] = {}
    for i, j in candidate_pairs:
        lv = dict(levels(records[i], records[j]))
        by_id = lv.get("identifier") == "agree" or lv.get("nik") == "agree"
        by_demo = lv.get("name") == "exact" and lv.get("birthDate") == "exact"
        for f, lvl in lv.items():
            if lvl is None:
                continue
            if by_demo if f in ("identifier", "nik") else by_id:
                m_counts.setdefault(f, {}).setdefault(lvl, 0)
                m_counts[f][lvl] += 1
                m_total[f] = m_total.get(f, 0) + 1
    weights = {f: dict(lv) for f, lv in config.weights.items()}
    for f, field_weights in weights.items():
        if m_total.get(f, 0) < 30 or u_total.get(f, 0) < 30:
            continue  # too little evidence for this field: keep the configured weights
        k = len(field_weights)
        for lvl in field_weights:
            if not m_counts.get(f, {}).get(lvl) and not u_counts.get(f, {}).get(lvl):
                continue  # a level this data never shows: keep its configured weight
            m = (m_counts.get(f, {}).get(lvl, 0) + 0.5) / (m_total[f] + 0.5 * k)
            u = (u_counts.get(f, {}).get(lvl, 0) + 0.5) / (u_total[f] + 0.5 * k)
            field_weights[lvl] = round(max(-15.0, min(15.0, math.log2(m / u))), 2)
    return replace(config, weights=weights)
