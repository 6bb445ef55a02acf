"""HL7 v2 reference data, from hl7apy: message structures, segment field names and datatypes.

Used off the hot path: deriving MSH-9.3 when a sender leaves it out, naming fields in the unmapped report
and structural checks. Lookups are cached per (version, name).
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from types import ModuleType
from typing import Any

# Trigger events that share another event's structure (HL7 v2.5.1 ch. 3 and table 0354). Only the
# exceptions are listed; otherwise the structure is MSH-9.1 "_" MSH-9.2 when the version defines it.
_SHARED_STRUCTURES: dict[str, dict[str, str]] = {
    "ADT": {
        **dict.fromkeys(["A04", "A08", "A13"], "ADT_A01"),
        **dict.fromkeys(["A14", "A28", "A31"], "ADT_A05"),
        "A07": "ADT_A06",
        **dict.fromkeys(["A10", "A11"], "ADT_A09"),
        **dict.fromkeys(["A22", "A23", "A25", "A26", "A27", "A29", "A32", "A33"], "ADT_A21"),
        **dict.fromkeys(["A34", "A35", "A36", "A46", "A48", "A49"], "ADT_A30"),
        **dict.fromkeys(["A40", "A41", "A42"], "ADT_A39"),
        **dict.fromkeys(["A44", "A47"], "ADT_A43"),
        "A51": "ADT_A50",
        **dict.fromkeys(["A53", "A55", "A62"], "ADT_A52"),
    },
    "SIU": dict.fromkeys([f"S{n:02d}" for n in range(12, 27)], "SIU_S12"),
    "MDM": {
        **dict.fromkeys(["T01", "T03", "T05", "T07", "T09", "T11"], "MDM_T01"),
        **dict.fromkeys(["T02", "T04", "T06", "T08", "T10"], "MDM_T02"),
    },
    "ORU": {"R30": "ORU_R30", "R31": "ORU_R30", "R32": "ORU_R30"},
    "RDE": {"O25": "RDE_O11"},
}


def _module_name(version: str) -> str:
    return "hl7apy.v" + version.strip().replace(".", "_")


@lru_cache(maxsize=32)
def _version_module(version: str) -> ModuleType | None:
    for candidate in (version, version[:3], "2.5.1"):
        try:
            return importlib.import_module(_module_name(candidate))
        except ImportError:
            continue
    return None


@lru_cache(maxsize=1024)
def structure_for(message_code: str, trigger_event: str, version: str = "2.5.1") -> str:
    """MSH-9.3 for a message that left it out (v2.3 senders mostly do)."""
    shared = _SHARED_STRUCTURES.get(message_code, {}).get(trigger_event)
    if shared:
        return shared
    candidate = f"{message_code}_{trigger_event}" if trigger_event else message_code
    mod = _version_module(version)
    if mod is not None and candidate in getattr(mod, "MESSAGES", {}):
        return candidate
    return candidate


def _field_info(segment: str, field: int, version: str) -> tuple[str, str]:
    mod = _version_module(version)
    seg: Any = getattr(mod, "SEGMENTS", {}).get(segment) if mod is not None else None
    if not seg or not 1 <= field <= len(seg[1]):
        return "", ""
    info = seg[1][field - 1][1]  # (kind, _, datatype, LONG_NAME, table, length)
    return str(info[2] or ""), str(info[3] or "")


@lru_cache(maxsize=4096)
def field_name(segment: str, field: int, version: str = "2.5.1") -> str:
    """The standard's name of ``SEG-n``, e.g. "Patient Identifier List" ("" for Z-segments)."""
    name = _field_info(segment, field, version)[1]
    return name.replace("_", " ").title() if name else ""


@lru_cache(maxsize=4096)
def field_datatype(segment: str, field: int, version: str = "2.5.1") -> str:
    """The datatype of ``SEG-n``, e.g. "CX" ("" when unknown)."""
    return _field_info(segment, field, version)[0]
