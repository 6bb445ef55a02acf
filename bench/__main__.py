"""``python -m bench [NAME…] [--option value…]`` (``make bench``): run the hub's benchmarks.

Each NAME is a module ``bench/<name>_bench.py`` with ``main(argv)`` (or ``main()``) returning an exit status
or None; without a NAME every module that
exists runs in turn (those not written yet are skipped). Options after the names go to each module.
"""

from __future__ import annotations

import importlib
import inspect
import sys

BENCHES = (
    "intake",
    "accept",
    "pipeline",
    "mapping",
    "extract",
    "fhir",
    "mpi",
    "export",
    "fuzz",
    "schemathesis",
    "audit",
    "stats",
)


def main(argv: list[str]) -> int:
    split = next((i for i, a in enumerate(argv) if a.startswith("-")), len(argv))
    names, options = argv[:split], argv[split:]
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHES)}", file=sys.stderr
        )
        return 2
    status = 0
    for name in names or BENCHES:
        try:
            module = importlib.import_module(f"bench.{name}_bench")
        except ModuleNotFoundError as exc:
            if exc.name == f"bench.{name}_bench":
                print(f"== {name}: not written yet, skipped")
                continue
            raise
        print(f"== {name}", flush=True)
        takes_args = bool(inspect.signature(module.main).parameters)
        result = module.main(options) if takes_args else module.main()
        status = max(status, int(result or 0))
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
