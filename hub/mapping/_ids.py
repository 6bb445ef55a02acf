"""Deterministic resource ids: uuid5 of the resource type, the assigning authority (or identifier system)
and the business identifier, so a replay or a duplicate message upserts instead of duplicating.
"""

from __future__ import annotations

import hashlib
import uuid

# Fixed namespace of the hub's ids; changing it would re-key every stored resource.
NAMESPACE = uuid.UUID("6c1f3a52-3f0e-5b0c-9d3e-2a7b4f1e8c11")


_NS_BYTES = NAMESPACE.bytes
_sha1 = hashlib.sha1
# Version 5 in the 13th hex digit; the RFC 4122 variant (10xx) in the 17th (as uuid.UUID(version=5)).
_KEEP = ~((0xF000 << 64) | (0xC000 << 48))
_SET = (0x5000 << 64) | (0x8000 << 48)


def resource_id(resource_type: str, *parts: str) -> str:
    """uuid5 over the resource type and the key parts (joined with a separator no HL7 value carries
    once unescaped into a key: the unit separator). Same value as ``uuid.uuid5``, computed without
    building UUID objects (this runs a dozen times per message)."""
    digest = _sha1(_NS_BYTES + "\x1f".join((resource_type, *parts)).encode()).digest()
    h = "%032x" % ((int.from_bytes(digest[:16]) & _KEEP) | _SET)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def patient_id(facility: str, identifier: str, authority: str) -> str:
    """The id of a sender's source Patient: ("Patient", sending facility, PID-3 first identifier and its
    assigning authority). The MPI computes the same id for MRG-1 identifiers and lookups."""
    return resource_id("Patient", facility.strip(), authority.strip(), identifier.strip())
