"""Mapping throughput per message family: tokenize + map to plain dicts on one core (no store, no
validation). Target (issue 3): ≥ 3,000 ORU^R01 messages with 10 OBX per second on one core.

    .venv/bin/python -m bench.mapping_bench [N] [--varied]
    .venv/bin/python -m bench mapping [-n N] [--varied]      # the same through `make bench`

``--varied`` also varies what differs between real results: OBX-5 numbers, the time of every timestamp
and the order numbers (by default only the control id and the patient id vary). Messages per second are
given by wall time and by CPU time: on a shared machine the CPU figure is the one-core capacity.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

from hub import hl7
from hub.mapping import SenderContext, map_message

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hl7"
FAMILIES = {
    "ORU^R01 (10 OBX)": "oru_r01_reordered.hl7",
    "ORU^R01 (10 OBX + SPM)": "oru_r01.hl7",
    "ADT^A01": "adt_a01.hl7",
    "ADT^A08": "adt_a08.hl7",
    "VXU^V04": "vxu_v04.hl7",
    "OML^O21": "oml_o21.hl7",
    "RDE^O11": "rde_o11.hl7",
    "MDM^T02": "mdm_t02.hl7",
    "SIU^S12": "siu_s12.hl7",
}


_TIMESTAMP = re.compile(r"(?<=[|^])(20\d{6})(\d{6})(?!\d)")
_ORDER = re.compile(r"\b(PO|LAB|ORD|FILL|PLAC)-(\d+)")


def _vary(text: str, i: int) -> str:
    """Message ``i`` with its own OBX-5 numbers, timestamp times and order numbers."""
    clock = f"{(i // 3600) % 24:02d}{(i // 60) % 60:02d}{i % 60:02d}"
    text = _TIMESTAMP.sub(lambda m: m.group(1) + clock, text)
    text = _ORDER.sub(lambda m: f"{m.group(1)}-{int(m.group(2)) + i}", text)
    lines = text.split("\r")
    for k, line in enumerate(lines):
        fields = line.split("|")
        if fields[0] == "OBX" and len(fields) > 5 and fields[2] == "NM":
            try:
                fields[5] = f"{float(fields[5]) + (i % 97) / 10:.1f}"
            except ValueError:
                continue
            lines[k] = "|".join(fields)
    return "\r".join(lines)


def _messages(name: str, n: int, varied: bool = False) -> list[str]:
    """``n`` distinct messages (control id and patient id vary; with ``varied`` also OBX-5 numbers,
    timestamps and order numbers) so no cache flatters the figure."""
    text = (FIXTURES / name).read_bytes().decode("utf-8")
    out = [text.replace("RM001234", f"RM{i:06d}").replace("|P|2.5.1", f"{i}|P|2.5.1", 1) for i in range(n)]
    return [_vary(t, i) for i, t in enumerate(out)] if varied else out


def measure(name: str, n: int, varied: bool = False) -> dict[str, Any]:
    messages = _messages(name, n, varied)
    ctx = SenderContext(facility="RSUD_SEHAT")
    map_message(hl7.parse(messages[0]), ctx)  # load and compile the maps outside the timing
    resources = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for text in messages:
        resources += len(map_message(hl7.parse(text), ctx).resources)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    # CPU time is the one-core figure on a shared machine; wall time includes waiting for the core.
    return {
        "messages": n,
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(n / elapsed),
        "msgs_per_cpu_s": round(n / cpu) if cpu else 0,
        "resources": resources,
    }


def run(n: int = 5000, varied: bool = False) -> dict[str, Any]:
    """Parse+map throughput per family on one core: {family: {msgs_per_s, messages, seconds, resources}}."""
    return {family: measure(name, n, varied) for family, name in FAMILIES.items()}


TARGET = 3_000  # ORU^R01 (10 OBX) parsed and mapped per second on one core (issue 3)


def _verdict(family: str, figures: dict[str, Any]) -> str:
    """The target beside each ORU^R01 (10 OBX) family, judged on CPU time (one core's capacity)."""
    if not family.startswith("ORU^R01 (10 OBX"):
        return ""
    met = "met" if figures["msgs_per_cpu_s"] >= TARGET else "NOT met"
    return f"  target ≥ {TARGET:,}/s: {met}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench mapping")
    parser.add_argument("count", nargs="?", type=int, help="messages per family (same as -n)")
    parser.add_argument("-n", type=int, default=2000, help="messages per family (default 2000)")
    parser.add_argument("--varied", action="store_true", help="also vary OBX-5, timestamps, order numbers")
    # `python -m bench` hands every module the same options: the other benchmarks' are ignored here.
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    n = args.count or args.n
    print(f"parse + map on one core, {n} messages per family{' (--varied)' if args.varied else ''}")
    for family, figures in run(n, varied=args.varied).items():
        print(
            f"{family:26s} {figures['msgs_per_s']:>7,d} msg/s wall  {figures['msgs_per_cpu_s']:>7,d} msg/s CPU"
            f"  ({figures['messages']} in {figures['seconds']} s){_verdict(family, figures)}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
