"""Ministry statistics: the aggregate queries on a large fact table, and the upkeep's share of the
processing CPU.

Queries (PostgreSQL): a scratch database gets 1,000,000 encounters, 1,000,000 diagnoses, 2,000,000 lab
observations and 500,000 immunisations of 600,000 source Patients (500,000 people) over 2025–2026, written
straight into ``stats_fact`` / ``stats_person`` (what the write hook would have written). Timed through
``hub.stats.query.evaluate`` with suppression, as the route runs it: weekly diagnoses of A90 by province,
and the year's immunisation coverage of one vaccine by province (p50/p95 of repeated runs).

Upkeep (SQLite or ``--url``): ADT^A03 messages with a diagnosis and a lab result through
``pipeline.process_batch``, the CPU spent in ``hub.stats.upkeep.apply`` against the whole.

    python -m bench stats [--pg postgresql+psycopg://127.0.0.1/test] [--scale 1.0] [--runs 40] [-n 300]
                          [--url URL] [--rounds 3]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from bench.pipeline_bench import _SYLLABLES, _timed
from bench.pipeline_bench import _message as _oru
from hub import pipeline
from hub.config import Settings
from hub.db import make_engine, processing_engine, session_scope
from hub.ingest.service import Intake
from hub.stats import upkeep
from hub.stats.config import StatsConfig
from hub.stats.periods import parse_periods
from hub.stats.query import Request, evaluate, indicator
from hub.stats.regions import regions
from hub.store.schema import scratch_database, upgrade

DEFAULT_PG = "postgresql+psycopg://127.0.0.1:5432/test"
_ICD = ["A90", "A91", "J18.9", "I10", "E11.9", "B05", "A09", "K29.7", "J06.9", "N39.0"]
_LOINC = ["94558-4", "5196-1", "32207-3", "11011-4", "20507-0"]
_CVX = ["03", "08", "10", "20", "110", "120", "19", "21"]


def _fill(url: str, scale: float) -> None:
    engine = create_engine(url)
    people = int(600_000 * scale)
    goldens = int(500_000 * scale)
    encounters = int(1_000_000 * scale)
    labs = int(2_000_000 * scale)
    shots = int(500_000 * scale)
    regencies = sorted(c for c in regions().names if len(c) == 4)

    def arr(xs: list[str]) -> str:
        return "ARRAY[" + ",".join(f"'{x}'" for x in xs) + "]"

    def person(k: str) -> str:
        """The person columns of source Patient number ``k`` (as stats_person has them)."""
        regency = f"({arr(regencies)})[1 + ({k}) % {len(regencies)}]"
        return (
            f"'g' || (({k}) % {goldens}), CASE WHEN ({k}) % 2 = 0 THEN 'female' ELSE 'male' END,"
            f" date '1950-01-01' + CAST(CAST({k} AS bigint) * 7919 % 27000 AS integer), left({regency}, 2),"
            f" {regency}, {regency} || '01'"
        )

    person_columns = "golden_id, sex, birth_date, province, regency, district"
    with engine.begin() as conn:
        conn.execute(
            text(
                f"INSERT INTO stats_person (patient_id, {person_columns})"
                f" SELECT 'p' || i, {person('i')} FROM generate_series(0, {people - 1}) AS i"
            )
        )
        conn.execute(
            text(
                "INSERT INTO stats_fact (resource_type, resource_id, kind, patient_id, facility, started,"
                f" ended, code, category, chapter, {person_columns})"
                f" SELECT 'Encounter', 'e' || i, 'encounter', 'p' || (i * 7 % {people}), 'F' || (i % 300),"
                " date '2025-01-01' + (i % 730), date '2025-01-01' + (i % 730) + (i % 5),"
                f" CASE WHEN i % 4 = 0 THEN 'IMP' ELSE 'AMB' END, '', '', {person(f'i * 7 % {people}')}"
                f" FROM generate_series(0, {encounters - 1}) AS i"
            )
        )
        conn.execute(
            text(
                "INSERT INTO stats_fact (resource_type, resource_id, kind, patient_id, facility, started,"
                f" code, category, chapter, {person_columns})"
                f" SELECT 'Condition', 'c' || i, 'condition', 'p' || (i * 7 % {people}), 'F' || (i % 300),"
                f" date '2025-01-01' + (i % 730), c, left(c, 3), CASE WHEN c < 'C' THEN 'I' ELSE 'X' END,"
                f" {person(f'i * 7 % {people}')}"
                f" FROM (SELECT i, ({arr(_ICD)})[1 + (i * 13) % {len(_ICD)}] AS c"
                f" FROM generate_series(0, {encounters - 1}) AS i) AS s"
            )
        )
        conn.execute(
            text(
                "INSERT INTO stats_fact (resource_type, resource_id, kind, patient_id, facility, started,"
                f" code, category, chapter, positive, {person_columns})"
                f" SELECT 'Observation', 'o' || i, 'lab', 'p' || (i * 11 % {people}), 'F' || (i % 300),"
                f" date '2025-01-01' + (i % 730), ({arr(_LOINC)})[1 + i % {len(_LOINC)}], '', '', i % 5 = 0,"
                f" {person(f'i * 11 % {people}')}"
                f" FROM generate_series(0, {labs - 1}) AS i"
            )
        )
        conn.execute(
            text(
                "INSERT INTO stats_fact (resource_type, resource_id, kind, patient_id, facility, started,"
                f" code, category, chapter, dose, {person_columns})"
                f" SELECT 'Immunization', 'i' || i, 'immunization', 'p' || (i * 17 % {people}),"
                f" 'F' || (i % 300), date '2025-01-01' + (i % 730), ({arr(_CVX)})[1 + i % {len(_CVX)}],"
                f" '', '', 1 + i % 3, {person(f'i * 17 % {people}')}"
                f" FROM generate_series(0, {shots - 1}) AS i"
            )
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE stats_fact"))
        conn.execute(text("VACUUM ANALYZE stats_person"))
    engine.dispose()


def _time_query(url: str, runs: int) -> list[tuple[str, float, float, int]]:
    engine = make_engine(url)
    config = StatsConfig()
    cases = [
        ("diagnoses A90 by province, week 2026W10", "diagnoses", "2026W10", ["province"], ["A90"]),
        (
            "diagnoses A90 by period and province, 4 weeks",
            "diagnoses",
            "2026W10,2026W11,2026W12,2026W13",
            ["period", "province"],
            ["A90"],
        ),
        (
            "immunisation coverage CVX 03 by province, 2026",
            "immunization-coverage",
            "2026",
            ["province"],
            ["03"],
        ),
        ("lab positivity 94558-4 by province, 202603", "lab-positivity", "202603", ["province"], ["94558-4"]),
    ]
    out = []
    with engine.connect() as conn:
        for label, name, period, by, codes in cases:
            req = Request(indicator(name), parse_periods(period), by, codes)
            evaluate(conn, req, config)  # warm
            times = []
            rows = 0
            for _ in range(runs):
                start = time.perf_counter()
                result = evaluate(conn, req, config)
                times.append((time.perf_counter() - start) * 1000)
                rows = len(result.rows)
            times.sort()
            p95 = times[min(len(times) - 1, round(0.95 * (len(times) - 1)))]
            out.append((label, statistics.median(times), p95, rows))
    engine.dispose()
    return out


def _message(i: int, rnd: random.Random) -> str:
    def name() -> str:
        return "".join(rnd.choice(_SYLLABLES) for _ in range(3)).capitalize()

    regency = rnd.choice(["3171", "3273", "3374", "3578", "5171"])
    day = 1 + i % 27
    lines = [
        f"MSH|^~\\&|SIMRS|RS_BENCH|HUB|KEMKES|202603{day:02d}120000+0700||ADT^A03^ADT_A03|S{i}|P|2.5.1",
        f"EVN|A03|202603{day:02d}120000+0700",
        f"PID|1||MRN{i}^^^RS_BENCH^MR||{name()}^{name()}||19{rnd.randint(40, 99)}{rnd.randint(1, 12):02d}"
        f"{rnd.randint(1, 28):02d}|{rnd.choice('MF')}|||"
        f"Jl. Uji {i}^^{regency}^{regency[:2]}^^^H^^{regency}01",
        f"PV1|1|I|W1^01^A||||||||||||||||V{i}^^^RS_BENCH^VN|||||||||||||||||||||||||202603{day:02d}080000|"
        f"202603{day:02d}110000",
        f"DG1|1||{rnd.choice(_ICD)}^Diagnosis^I10||202603{day:02d}",
        f"OBX|1|CWE|94558-4^SARS-CoV-2^LN||260373001^Detected^SCT||||||F|||202603{day:02d}",
    ]
    return "\r".join(lines) + "\r"


def _upkeep(n: int, url: str, kind: str = "adt", hook: bool = True) -> tuple[float, float]:
    """CPU ms per message processed, and of it in ``upkeep.apply``; ``hook=False``: without the statistics
    write hook at all (the rows it holds for the batch's end are part of the difference)."""
    from hub.store import resources

    if not hook:
        resources._write_hooks.remove(upkeep.on_write)
    try:
        return _upkeep_run(n, url, kind, hook)
    finally:
        if not hook:
            resources.register_write_hook(upkeep.on_write)


def _upkeep_run(n: int, url: str, kind: str, hook: bool) -> tuple[float, float]:
    if url.startswith("postgresql"):  # a database of its own per run: the messages would be duplicates
        with scratch_database(url, "hub_bench_upkeep") as scratch:
            return _upkeep_in(n, scratch, kind, hook)
    return _upkeep_in(n, url, kind, hook)


def _upkeep_in(n: int, url: str, kind: str, hook: bool) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        url = url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        engine = make_engine(url)
        intake = Intake(engine, Settings(var_dir=Path(tmp)))
        worker = processing_engine(engine)
        rnd = random.Random(5)
        make = _message if kind == "adt" else _oru
        ids = [intake.accept(make(i, rnd).encode()).message_id for i in range(n)]
        regions()  # the region table loads once per process, not per message
        cpu = time.process_time()
        with _timed(upkeep, "apply") as spent:
            for start in range(0, n, 20):
                with session_scope(worker) as session:
                    outcomes = pipeline.process_batch(session, [i for i in ids[start : start + 20] if i])
                    assert all(o.state == "processed" for o in outcomes), outcomes
        cpu = time.process_time() - cpu
        with worker.connect() as conn:
            facts = conn.execute(text("SELECT count(*) FROM stats_fact")).scalar()
        # Every message leaves facts behind with the hook, none without it.
        assert ((facts or 0) >= 2 * n) if hook else (facts == 0), facts
        worker.dispose()
        engine.dispose()
    return cpu / n * 1000, spent[0] / n * 1000


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench stats")
    parser.add_argument("--pg", default=DEFAULT_PG, help="PostgreSQL server for the query benchmark")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the 1M/2M rows")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("-n", type=int, default=300, help="messages for the upkeep measurement")
    parser.add_argument("--url", default="", help="database for the upkeep measurement (default SQLite)")
    parser.add_argument("--rounds", type=int, default=3, help="alternated runs with and without the upkeep")
    parser.add_argument("--skip-queries", action="store_true")
    parser.add_argument("--skip-upkeep", action="store_true")
    args, _ = parser.parse_known_args(argv)
    status = 0
    kinds = {"adt": "ADT^A03 (encounter, diagnosis, lab result)", "oru": "ORU^R01 (10 lab results)"}
    for kind, label in [] if args.skip_upkeep else list(kinds.items()):
        with_hook, without = [], []
        spent = 0.0
        for _round in range(args.rounds):  # alternated, the best of each: the machine is shared
            without.append(_upkeep(args.n, args.url, kind, hook=False)[0])
            total, spent = _upkeep(args.n, args.url, kind, hook=True)
            with_hook.append(total)
        best, base = min(with_hook), min(without)
        added = 100 * (best - base) / base
        print(
            f"stats upkeep: {args.n} {label}: {best:.2f} ms CPU per message with the statistics facts,"
            f" {base:.2f} without: +{added:.1f} % (upkeep.apply itself {spent:.3f} ms)"
        )
        status = max(status, 0 if added <= 5 else 1)
    if args.skip_queries:
        return status
    try:
        probe = create_engine(args.pg)
        with probe.connect():
            pass
        probe.dispose()
    except Exception as exc:  # any connection failure: the query benchmark is skipped
        print(f"stats queries: skipped, PostgreSQL at {args.pg} is not reachable ({type(exc).__name__})")
        return status
    with scratch_database(args.pg, "hub_bench_stats") as url:
        upgrade(url)
        start = time.perf_counter()
        _fill(url, args.scale)
        print(
            f"stats queries (PostgreSQL, {int(1_000_000 * args.scale):,} encounters and diagnoses,"
            f" {int(2_000_000 * args.scale):,} lab observations, {int(500_000 * args.scale):,} immunisations;"
            f" filled in {time.perf_counter() - start:.0f} s), {args.runs} runs each:"
        )
        for label, p50, p95, rows in _time_query(url, args.runs):
            print(f"  {label}: p50 {p50:.1f} ms, p95 {p95:.1f} ms ({rows} rows)")
            if p95 > 100:
                status = 1
    return status
