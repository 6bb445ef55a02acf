"""HL7 v2 → FHIR R4 mapping: the schema of the mapping files, their loader, the engine and its functions.

The pipeline calls :func:`map_message`; it returns plain dicts (the hot path never builds pydantic
models) and the unmapped report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hub.errors import MappingError
from hub.hl7 import Message


@dataclass(frozen=True, slots=True)
class SenderContext:
    """What the maps need to know about the sender of one message."""

    facility: str
    overlay: str | None = None
    time_zone: str = "Asia/Jakarta"
    message_id: int | None = None


@dataclass(slots=True)
class MappingResult:
    resources: list[dict[str, Any]] = field(default_factory=list)
    # Every segment and non-empty field the maps did not use: {"segment", "index", "field", "name", "value"}
    unmapped: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Identity instructions for the MPI, from ADT merge/link messages, e.g.
    # {"type": "merge", "survivor": "<Patient id>", "retired": "<Patient id>"} (A40/A34),
    # {"type": "change-identifier", ...} (A47), {"type": "unlink", "patients": [id, id]} (A37).
    actions: list[dict[str, Any]] = field(default_factory=list)


def map_message(message: Message, ctx: SenderContext) -> MappingResult:
    """Map one tokenized message. Raises :class:`MappingError` (code ``no-map``) for a message type
    that has no map, so the message is kept as failed and can be replayed once a map exists."""
    mtype = message.get("MSH-9.1") + "^" + message.get("MSH-9.2")
    raise MappingError(f"no map for message type {mtype}", code="no-map")
