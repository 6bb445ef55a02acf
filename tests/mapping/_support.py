"""Helpers for the mapping tests: map a fixture file the way the pipeline does."""

from __future__ import annotations

from pathlib import Path

from hub import hl7
from hub.mapping import MappingResult, SenderContext, map_message

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "fixtures"
HL7_DIR = FIXTURES / "hl7"
EXPECTED_DIR = FIXTURES / "expected"
FACILITY = "RSUD_SEHAT"


def map_text(text: str, facility: str = FACILITY, overlay: str | None = None, **ctx: object) -> MappingResult:
    raw = text.encode("utf-8")
    header = hl7.peek_header(raw)
    message = hl7.parse(hl7.decode(raw, header))
    return map_message(message, SenderContext(facility=facility, overlay=overlay, **ctx))  # type: ignore[arg-type]


def read(path: Path) -> str:
    """A fixture's text with its CR segment ends intact."""
    return path.read_bytes().decode("utf-8")


def map_file(path: Path, facility: str = FACILITY, overlay: str | None = None) -> MappingResult:
    return map_text(read(path), facility, overlay)


def by_type(result: MappingResult, resource_type: str) -> list[dict[str, object]]:
    return [r for r in result.resources if r["resourceType"] == resource_type]
