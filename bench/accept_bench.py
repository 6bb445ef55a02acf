"""The intake's store step alone: ``Intake._commit`` on groups of ORU^R01 in one thread, no sockets, no
processing. Reports CPU ms per accepted message (load-independent) and messages/s, and how that splits
between the transport's thread (``Intake._prepare``: header checks, digest, patient key, the ACK) and the
committer's (``Intake._commit``, which every waiting message shares), with the committer's wall time per
commit.

    python -m bench accept [-n 2000] [--per-commit 4] [--url postgresql+psycopg://…/postgres]

``--per-commit 4`` is what 4 send-and-wait connections bring to one commit at most. With ``--url`` (an
administrative PostgreSQL URL) a scratch database is created and dropped; without it, a SQLite file.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path

from bench.intake_bench import oru
from hub.config import Settings
from hub.db import make_engine
from hub.ingest.service import Intake, _Item
from hub.store.schema import scratch_database, upgrade


@contextmanager
def _database(admin_url: str | None) -> Iterator[str]:
    if admin_url:
        with scratch_database(admin_url, "hub_accept_bench") as url:
            yield url
        return
    with tempfile.TemporaryDirectory(prefix="hub-accept-") as d:
        yield f"sqlite:///{Path(d) / 'accept.db'}"


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench accept", description=__doc__.split("\n")[0])
    ap.add_argument("-n", type=int, default=2000, help="messages (default 2000)")
    ap.add_argument("--per-commit", type=int, default=4, help="messages per commit (default 4)")
    ap.add_argument("--url", help="administrative PostgreSQL URL (default: SQLite)")
    args, _ = ap.parse_known_args(argv)  # `make bench` hands every benchmark the same options
    with _database(args.url) as url:
        upgrade(url)
        engine = make_engine(url)
        try:
            intake = Intake(engine, Settings(database_url=url), None)
            messages = [oru(i, 1000) for i in range(args.n + 1)]
            intake.accept(messages[0])  # registers the sender: not timed
            cpu, wall = time.process_time(), time.perf_counter()
            committer = [0.0, 0.0]  # CPU, wall
            commits = 0
            for start in range(1, len(messages), args.per_commit):
                items = []
                for raw in messages[start : start + args.per_commit]:
                    item = _Item(raw=raw, transport="mllp", future=Future())
                    intake._prepare(item)
                    items.append(item)
                began = time.process_time(), time.perf_counter()
                intake._commit(items)
                committer[0] += time.process_time() - began[0]
                committer[1] += time.perf_counter() - began[1]
                commits += 1
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        finally:
            engine.dispose()
    backend = "PostgreSQL" if args.url else "SQLite"
    print(
        f"accept ({backend}): {args.n} ORU^R01, {args.per_commit} a commit: "
        f"{cpu * 1000 / args.n:.3f} ms CPU per message, {args.n / wall:,.0f} msgs/s"
    )
    print(
        f"  committer {committer[0] * 1000 / args.n:.3f} ms CPU per message,"
        f" {committer[1] * 1000 / commits:.2f} ms wall per commit;"
        f" transport thread {(cpu - committer[0]) * 1000 / args.n:.3f} ms CPU per message"
    )
    return 0
