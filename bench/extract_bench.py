"""Search-index extraction cost per message: ``search_params.extract_rows`` over every resource the
mapping makes of a message (with the ``meta`` the store adds), on one core, without the store. The
pipeline spends this inside its search-index step (``bench pipeline`` reports it per message, with the
caches the rest of the work leaves cold); here it is alone, so an A/B pair of the extraction does not
drown in the noise of the database writes.

    .venv/bin/python -m bench extract [-n 2000] [--repeat 3]

The ORU^R01 messages are the pipeline benchmark's (10 OBX, a distinct synthetic patient each); the
other families are the mapping benchmark's fixtures with their ids varied. CPU µs per message is the
best of ``--repeat`` passes (the machine is shared: the best pass is the least disturbed one).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from typing import Any

from bench.mapping_bench import FAMILIES, _messages
from bench.pipeline_bench import _message
from hub import hl7
from hub.mapping import SenderContext, map_message
from hub.store.search_params import extract_rows

PIPELINE_ORU = "ORU^R01 (pipeline bench)"


def _resources(family: str, n: int) -> list[list[dict[str, Any]]]:
    """The mapped resources of ``n`` messages of ``family`` as the store indexes them (with the ``meta``
    it adds: ``hub.store.resources``), one list per message."""
    ctx = SenderContext(facility="RSUD_SEHAT")
    if family == PIPELINE_ORU:
        rnd = random.Random(7)
        texts = [_message(i, rnd) for i in range(n)]
    else:
        texts = _messages(FAMILIES[family], n)
    return [[_stored(r) for r in map_message(hl7.parse(text), ctx).resources] for text in texts]


def _stored(resource: dict[str, Any]) -> dict[str, Any]:
    meta = {**(resource.get("meta") or {}), "versionId": "1", "lastUpdated": "2026-11-01T01:30:00.000Z"}
    stored = {"resourceType": resource["resourceType"], "id": resource["id"], "meta": meta}
    stored.update({k: v for k, v in resource.items() if k not in ("resourceType", "id", "meta")})
    return stored


def measure(messages: list[list[dict[str, Any]]], repeat: int) -> dict[str, Any]:
    best = float("inf")
    rows = 0
    for _ in range(repeat):
        rows = 0
        start = time.process_time()
        for resources in messages:
            for resource in resources:
                for kind_rows in extract_rows(resource).values():
                    rows += len(kind_rows)
        best = min(best, time.process_time() - start)
    n = len(messages)
    return {
        "us_per_message": best / n * 1e6,
        "resources_per_message": sum(len(m) for m in messages) / n,
        "rows_per_message": rows / n,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench extract")
    parser.add_argument("-n", type=int, default=2000, help="messages per family (default 2000)")
    parser.add_argument("--repeat", type=int, default=3, help="passes; the best is reported (default 3)")
    parser.add_argument("--families", default="", help="comma-separated family names (default: all)")
    # `python -m bench` hands every module the same options: the other benchmarks' are ignored here.
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    families = [PIPELINE_ORU, *FAMILIES]
    if args.families:
        families = [f for f in families if any(f.startswith(w) for w in args.families.split(","))]
    print(f"extract_rows on one core, {args.n} messages per family, best of {args.repeat} passes")
    for family in families:
        figures = measure(_resources(family, args.n), args.repeat)
        print(
            f"{family:26s} {figures['us_per_message']:7.0f} µs CPU per message"
            f"  ({figures['resources_per_message']:.0f} resources, {figures['rows_per_message']:.0f} rows)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
