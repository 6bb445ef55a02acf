"""Processing cost without transport: store N ORU^R01 (10 OBX, a distinct synthetic patient each) through
intake, then time ``pipeline.process_batch`` in batches — parse, map, MPI, resources, versions, search
index, Provenance. Reports CPU ms per message and messages/s for one worker, and the same without the
identity step (``resolve_identities``: the MPI's matching and its golden-record writes), which a helper
tunes on its own, and the CPU of the search-index extraction (``search_params.extract_rows``) alone.

It also splits off the time spent in the database driver: the statements (every call that goes through
SQLAlchemy's cursor events, the store's driver-level inserts included) and the commits. On SQLite that is
the database engine's own work (B-tree inserts, writing the dirtied pages to the WAL), which no change in
the Python above it removes; PostgreSQL's ``COPY`` of index rows runs outside those events and its server
work in another process, so there the split shows the client's waits only.

    python -m bench pipeline [-n 500] [--batch 20] [--url postgresql+psycopg://…/scratch_db] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event

from hub import pipeline
from hub.config import Settings
from hub.db import make_engine, processing_engine, session_scope
from hub.ingest.service import Intake
from hub.store import search_index
from hub.store.schema import upgrade

_SYLLABLES = ["ba", "di", "ka", "lo", "ma", "ni", "pu", "ra", "si", "tu", "wa", "yo", "ha", "je", "ko"]


def _message(i: int, rnd: random.Random) -> str:
    def name() -> str:
        return "".join(rnd.choice(_SYLLABLES) for _ in range(3)).capitalize()

    birth = f"19{rnd.randint(40, 99)}{rnd.randint(1, 12):02d}{rnd.randint(1, 28):02d}"
    lines = [
        f"MSH|^~\\&|LIS|LAB_BENCH|HUB|KEMKES|20261101083000+0700||ORU^R01^ORU_R01|B{i}|P|2.5.1",
        f"PID|1||MRN{i}^^^LAB_BENCH^MR||{name()}^{name()}||{birth}|{rnd.choice('MF')}",
        f"OBR|1|ORD{i}|FIL{i}|24323-8^Comprehensive metabolic panel^LN|||20261101070000+0700",
    ]
    for k in range(1, 11):
        value = round(rnd.uniform(1, 99), 1)
        lines.append(f"OBX|{k}|NM|{2000 + k}-{k % 10}^Analyte {k}^LN||{value}|mg/dL|1.0-99.0|N|||F")
    return "\r".join(lines) + "\r"


@contextmanager
def _timed(owner: Any, name: str) -> Iterator[list[float]]:
    """CPU seconds spent in ``owner.name`` (a module's function, called through the module), gathered
    while the block runs."""
    spent = [0.0]
    original: Callable[..., Any] = getattr(owner, name)

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            spent[0] += time.process_time() - start

    setattr(owner, name, timed)
    try:
        yield spent
    finally:
        setattr(owner, name, original)


@contextmanager
def _statement_time(engine: Engine) -> Iterator[list[float]]:
    """CPU and wall seconds spent inside the driver's execute calls on ``engine`` while the block runs."""
    spent = [0.0, 0.0]
    started: list[tuple[float, float]] = []

    def before(*_: Any) -> None:
        started.append((time.process_time(), time.perf_counter()))

    def after(*_: Any) -> None:
        cpu, wall = started.pop()
        spent[0] += time.process_time() - cpu
        spent[1] += time.perf_counter() - wall

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield spent
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench pipeline")
    parser.add_argument("-n", type=int, default=500)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--url", default="", help="database URL (default: a temporary SQLite file)")
    parser.add_argument("--profile", action="store_true", help="print the top of a cProfile by own time")
    args, _ = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        engine = make_engine(url)
        intake = Intake(engine, Settings(var_dir=Path(tmp)))
        worker_engine = processing_engine(engine)  # what the workers use: commits that skip the fsync
        rnd = random.Random(7)
        ids = [intake.accept(_message(i, rnd).encode()).message_id for i in range(args.n)]
        profiler = cProfile.Profile() if args.profile else None
        cpu, wall = time.process_time(), time.perf_counter()
        if profiler:
            profiler.enable()
        states: dict[str, int] = {}
        commit = [0.0, 0.0]  # CPU, wall
        with (
            _timed(pipeline, "resolve_identities") as identity,
            _timed(search_index, "extract_rows") as extract,
            _statement_time(worker_engine) as statements,
        ):
            for start in range(0, len(ids), args.batch):
                with session_scope(worker_engine) as session:
                    for outcome in pipeline.process_batch(
                        session, [i for i in ids[start : start + args.batch] if i]
                    ):
                        states[outcome.state] = states.get(outcome.state, 0) + 1
                    # what is left of the block is the commit (session_scope's exit)
                    commit[0] -= time.process_time()
                    commit[1] -= time.perf_counter()
                commit[0] += time.process_time()
                commit[1] += time.perf_counter()
        if profiler:
            profiler.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        worker_engine.dispose()
        engine.dispose()
    print(
        f"pipeline ({'PostgreSQL' if url.startswith('postgresql') else 'SQLite'}): {args.n} ORU^R01, "
        f"batches of {args.batch}: {cpu / args.n * 1000:.1f} ms CPU per message, "
        f"{args.n / wall:.0f} msgs/s wall (one worker), outcomes {states}"
    )
    rest = (cpu - identity[0]) / args.n * 1000
    print(
        f"  identity (MPI) {identity[0] / args.n * 1000:.1f} ms CPU per message; without it "
        f"{rest:.1f} ms CPU per message = {1000 / rest:.0f} msgs/s per core"
    )
    print(f"  search-index extraction {extract[0] / args.n * 1e6:.0f} µs CPU per message")
    per = 1000 / args.n
    print(
        f"  in the database driver: statements {statements[0] * per:.1f} ms CPU ({statements[1] * per:.1f} wall),"
        f" commits {commit[0] * per:.1f} ms CPU ({commit[1] * per:.1f} wall) per message;"
        f" the rest {(cpu - statements[0] - commit[0]) * per:.1f} ms CPU"
    )
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return 0 if states.get("processed") == args.n else 1
