"""HL7 v2 → FHIR R4 mapping: the schema of the mapping files, their loader, the engine and its functions.

The pipeline calls :func:`map_message`; it returns plain dicts (the hot path never builds pydantic
models) and the unmapped report. The maps live in ``mappings/`` (see :func:`configure`); sender overlays
in ``mappings/senders/<name>/``. The MPI computes source Patient ids with :func:`patient_id`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub.hl7 import Message
from hub.mapping._engine import cancelled_events, finish, replaced_participants, run
from hub.mapping._ids import patient_id, resource_id
from hub.mapping._loader import MappingFileError, Problem, check_all, clear_cache, load_maps, stale_problems

__all__ = [
    "MappingFileError",
    "MappingResult",
    "Problem",
    "SenderContext",
    "check_mappings",
    "configure",
    "map_message",
    "mappings_dir",
    "patient_id",
    "resource_id",
]

# The repository's mappings/ (an editable install); the hub's settings point elsewhere with configure().
_mappings_dir = Path(__file__).resolve().parents[2] / "mappings"


def configure(directory: Path) -> None:
    """Use the maps under ``directory`` from now on (``Settings.mappings_dir``)."""
    global _mappings_dir
    _mappings_dir = Path(directory)
    clear_cache()


def mappings_dir() -> Path:
    return _mappings_dir


def check_mappings(directory: Path | None = None) -> list[Problem]:
    """Every fault in the base maps and every overlay (file and line), for ``hub mappings check``."""
    clear_cache()
    return check_all(directory or _mappings_dir)


@dataclass(frozen=True, slots=True)
class SenderContext:
    """What the maps need to know about the sender of one message."""

    facility: str
    overlay: str | None = None
    time_zone: str = "Asia/Jakarta"
    message_id: int | None = None
    charset: str | None = None  # the sender's character set for messages without MSH-18


@dataclass(slots=True)
class MappingResult:
    resources: list[dict[str, Any]] = field(default_factory=list)
    # Every segment and non-empty field the maps did not use: {"segment", "index", "field", "name", "value"}
    unmapped: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Identity instructions for the MPI, from ADT merge/link messages, e.g.
    # {"type": "merge", "survivor": "<Patient id>", "retired": "<Patient id>"} (A40/A34),
    # {"type": "change-identifier", "patient": "<Patient id>", "old": {system, value}, "new": {system, value}}
    # (A47), {"type": "unlink", "patients": [id, id]} (A37).
    actions: list[dict[str, Any]] = field(default_factory=list)
    # Fields sent as "" (explicit null: clear the receiver's value), as {"resource", "element", "path"}.
    nulls: list[dict[str, Any]] = field(default_factory=list)
    # An ADT trigger that cancels an earlier event (A13 the A03 discharge, A12 the A02 transfer …), as
    # {"resource": "Encounter/<id>", "event": "ADT^A03"}: the store sets aside what the latest earlier
    # message of that event contributed to the resource (hub.store.contributions).
    cancels: list[dict[str, str]] = field(default_factory=list)
    # An ADT trigger that changes one kind of participant (A54 the attending doctor, A61 the consulting
    # doctor), as {"resource": "Encounter/<id>", "participant": "ATND"}: the earlier messages'
    # participants of that type give way to this message's.
    replaces: list[dict[str, str]] = field(default_factory=list)


def map_message(message: Message, ctx: SenderContext) -> MappingResult:
    """Map one tokenized message. A message type without a message map of its own is mapped by its
    segments (``messages/_default.yaml``; the unmapped report and the warnings say so). Raises
    :class:`MappingError` (code ``no-map``) when nothing in the message maps, so the message is kept as
    failed and can be replayed once a map exists."""
    maps = load_maps(_mappings_dir, ctx.overlay)
    rt, message_type = run(message, ctx, maps)
    mm = maps.messages.get(message_type) or maps.fallback
    resources, actions, unmapped, nulls = finish(rt, message_type, mm.actions if mm is not None else [])
    warnings = rt.warnings
    stale = stale_problems(_mappings_dir, ctx.overlay)
    if stale:
        warnings.append(f"edited mapping files are faulty, the last good maps were used: {stale[0]}")
    return MappingResult(
        resources=resources,
        unmapped=unmapped,
        warnings=warnings,
        actions=actions,
        nulls=nulls,
        cancels=cancelled_events(rt, message_type),
        replaces=replaced_participants(rt, message_type),
    )
