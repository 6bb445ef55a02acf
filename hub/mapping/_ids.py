"""Deterministic resource ids: uuid5 of the resource type, the assigning authority (or identifier system)
and the business identifier, so a replay or a duplicate message upserts instead of duplicating.
"""

from __future__ import annotations

import hashlib
import uuid

# Fixed namespace of the hub's ids; changing it would re-key every stored resource.
NAMESPACE = uuid.UUID("6c1f3a52-3f0e-5b0c-9d3e-2a7b4f1e8c11")


_NS_BYTES = NAMESPACE.bytes


def resource_id(resource_type: str, *parts: str) -> str:
    """uuid5 over the resource type and the key parts (joined with a separator no HL7 value carries
    once unescaped into a key: the unit separator). Same value as ``uuid.uuid5``, computed without
    building UUID objects (this runs a dozen times per message)."""
    digest = bytearray(hashlib.sha1(_NS_BYTES + "\x1f".join((resource_type, *parts)).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def patient_id(facility: str, identifier: str, authority: str) -> str:
    """The id of a sender's source Patient: ("Patient", sending facility, PID-3 first identifier and its
    assigning authority). The MPI computes the same id for MRG-1 identifiers and lookups."""
    return resource_id("Patient", facility.strip(), authority.strip(), identifier.strip())
