"""Bulk Data export benchmark: a synthetic store (the FHIR benchmark's generator and bulk loader) on
PostgreSQL, then one system-level ``$export`` job, identified and de-identified, each run by the export
runner in a process of its own; prints resources per second and the process's peak RSS (which stays
flat whatever the export's size: rows are streamed in batches).

    python -m bench export --resources 1000000 --patients 10000     # the figure docs/performance.md quotes
    python -m bench export --resources 100000 --patients 1000       # a quick run
    python -m bench export --database-url postgresql+psycopg://…/kept --no-load
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import fhir_bench

CHILD = """
import json, resource, sys, time, uuid
from hub.config import Settings
from hub.db import make_engine, session_scope
from hub.export import jobs
url, var, deid = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
settings = Settings(database_url=url, var_dir=var)
engine = make_engine(url)
with session_scope(engine) as session:
    req = jobs.ExportRequest(level="system", owner="bench", owner_role="ministry" if deid else "admin",
                             deidentified=deid, request_url="bench")
    job_id = jobs.create_job(session, req).id
start, cpu = time.perf_counter(), time.process_time()
assert jobs.ExportRunner(engine, settings).run_pending() == 1
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
with session_scope(engine) as session:
    job = session.get(jobs.ExportJob, job_id)
    count, state = job.exported, job.state
print(json.dumps({"state": state, "resources": count, "seconds": seconds, "cpu_seconds": cpu,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_export(url: str, deidentified: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="hub-export-bench-") as var:
        out = subprocess.run(
            [sys.executable, "-c", CHILD, url, var, "1" if deidentified else "0"],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode != 0:
            raise SystemExit(f"the export run failed:\n{out.stderr}")
        size = sum(p.stat().st_size for p in Path(var, "exports").rglob("*.ndjson"))
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    figures["mib_written"] = size / 2**20
    return figures


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--resources", type=int, default=1_000_000)
    parser.add_argument("--patients", type=int, default=10_000)
    parser.add_argument("--admin-url", default=fhir_bench.PG_URL)
    parser.add_argument("--database-url", help="load into (and keep) this database instead of a fresh one")
    parser.add_argument("--no-load", action="store_true", help="export what --database-url already holds")
    args = parser.parse_args(argv)

    def measure(url: str) -> None:
        for deid in (False, True):
            f = run_export(url, deid)
            kind = "de-identified" if deid else "identified"
            print(
                f"{kind:>14}: {f['resources']:,.0f} resources in {f['seconds']:.1f} s "
                f"= {f['resources'] / f['seconds']:,.0f}/s "
                f"({f['resources'] / f['cpu_seconds']:,.0f} per second of the exporting process's CPU), "
                f"{f['mib_written']:,.0f} MiB written, "
                f"peak RSS {f['peak_rss_mib']:,.0f} MiB ({f['state']})",
                flush=True,
            )

    if args.database_url:
        if not args.no_load:
            fhir_bench.ensure_database(args.database_url)
            _load(args.database_url, args.resources, args.patients)
        measure(args.database_url)
        return 0
    with fhir_bench.pg_database(args.admin_url) as url:
        _load(url, args.resources, args.patients)
        measure(url)
    return 0


def _load(url: str, resources: int, patients: int) -> None:
    from hub.db import make_engine
    from hub.store.schema import upgrade

    upgrade(url)
    engine = make_engine(url)
    start = time.perf_counter()
    n = fhir_bench.load(engine, fhir_bench.generate(resources, patients))
    engine.dispose()
    print(f"loaded {n:,} resources in {time.perf_counter() - start:.0f} s", flush=True)
