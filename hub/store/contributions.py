"""Resources that several messages make, and the patient a resource belongs to.

**Shared resources.** An Encounter is made by the ADT that admits the patient and again by every result
message's PV1, a ServiceRequest by the order and by each of its results, a Practitioner by every
message naming the doctor. Each message's resource is that message's *contribution*, kept in
``resource_contribution`` keyed by message; the stored resource is the merge of its contributions in
message order (the message's event time, then its id), so a sparse later message adds what it knows
instead of blanking what an earlier one said, and a replay or a message arriving late gives the same
result as the messages in order. Merging, later over earlier:

- an object is merged key by key; a scalar, and a value of a datatype (a Coding, CodeableConcept,
  Identifier, Quantity or Reference), is replaced, except that a ``status`` of ``unknown`` (what a
  message that does not know the status says) never replaces a known one;
- a list keeps the earlier items and adds the later ones: an item naming the same thing (an identifier's
  system and value, a reference, an Encounter location or participant) is merged with it, an equal item
  is not repeated.

Resources a single message owns whole (source Patients, Provenance, Observation, DiagnosticReport,
Immunization, DocumentReference, and every type not in :data:`SHARED`) are replaced whole by a
correction, as before.

**Patients.** :func:`patients_of` is the set of Patient references in a resource's Patient-compartment
search parameter (``subject``, ``patient``, ``beneficiary``, an Appointment's participants), which the
store compares before it writes a new version (``hub.store.resources.PatientConflict``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import Table
from sqlalchemy.orm import Session

from hub.store import bulk, deferred
from hub.store.models import ResourceContribution
from hub.store.search_params import REFERENCE, params_of, walk

# Types several messages make, each adding what it knows.
SHARED = frozenset(
    {
        "Account",
        "Coverage",
        "Device",
        "Encounter",
        "EpisodeOfCare",
        "Location",
        "Medication",
        "MedicationRequest",
        "Organization",
        "Practitioner",
        "PractitionerRole",
        "RelatedPerson",
        "ServiceRequest",
        "Specimen",
    }
)
# Never compared for a patient change: Patients are the MPI's (links to other Patients), a Provenance
# belongs to its one message and targets the golden record as well as the source.
_NO_PATIENT_CHECK = frozenset({"Patient", "Provenance", "AuditEvent"})
_FALLBACK_PATHS = ("subject", "patient", "beneficiary")

BASELINE = 0  # the message id of a stored resource's content from before contributions were kept


@lru_cache(maxsize=256)
def _patient_paths(resource_type: str) -> tuple[str, ...]:
    if resource_type in _NO_PATIENT_CHECK:
        return ()
    param = params_of(resource_type).get("patient")
    if param is not None and param.type == REFERENCE and "Patient" in param.targets:
        return tuple(param.paths)
    return _FALLBACK_PATHS


def patients_of(resource: dict[str, Any]) -> frozenset[str]:
    """The Patient ids ``resource`` refers to through its type's Patient-compartment parameter."""
    found: set[str] = set()
    for path in _patient_paths(str(resource.get("resourceType", ""))):
        for value in walk(resource, path):
            if isinstance(value, dict):
                ref = value.get("reference")
                if isinstance(ref, str) and ref.startswith("Patient/"):
                    found.add(ref[8:])
    return frozenset(found)


# --- merging ---------------------------------------------------------------------------------------------

_NAMED = ("location", "individual", "actor", "who", "party")


def _item_key(item: Any) -> tuple[str, ...] | None:
    """What a list item names, when it names something (else it is compared whole)."""
    if not isinstance(item, dict):
        return None
    value = item.get("value")
    if isinstance(value, str) and "system" in item:
        return ("identifier", str(item.get("system")), value)
    ref = item.get("reference")
    if isinstance(ref, str):
        return ("reference", ref)
    for name in _NAMED:
        inner = item.get(name)
        if isinstance(inner, dict) and isinstance(inner.get("reference"), str):
            return (name, inner["reference"])
    return None


# The type suffixes of FHIR R4 choice elements (``value[x]``, ``collected[x]``, ``onset[x]`` …).
_CHOICE_TYPES = [
    "Address",
    "Age",
    "Annotation",
    "Attachment",
    "Base64Binary",
    "Boolean",
    "Canonical",
    "Code",
    "CodeableConcept",
    "Coding",
    "ContactPoint",
    "Count",
    "Date",
    "DateTime",
    "Decimal",
    "Distance",
    "Dosage",
    "Duration",
    "HumanName",
    "Id",
    "Identifier",
    "Instant",
    "Integer",
    "Markdown",
    "Money",
    "Oid",
    "Period",
    "PositiveInt",
    "Quantity",
    "Range",
    "Ratio",
    "Reference",
    "SampledData",
    "Signature",
    "String",
    "Time",
    "Timing",
    "UnsignedInt",
    "Uri",
    "Url",
    "Uuid",
]
_CHOICE = re.compile(r"^([a-z][A-Za-z]*?)(" + "|".join(sorted(_CHOICE_TYPES, key=len, reverse=True)) + r")$")


def _other_choices(out: dict[str, Any], key: str, value: Any) -> list[str]:
    """The keys of ``out`` that are the same choice element as ``key`` in another type (a later
    ``collectedPeriod`` replaces an earlier ``collectedDateTime``: one element holds one type). A choice
    element holds one value, never a list: ``reasonCode`` and ``reasonReference`` are two lists of R4."""
    m = _CHOICE.match(key)
    if m is None or isinstance(value, list):
        return []
    base = m.group(1)
    return [
        k
        for k in out
        if k != key
        and k.startswith(base)
        and not isinstance(out[k], list)
        and (c := _CHOICE.match(k)) is not None
        and c.group(1) == base
    ]


def merge(earlier: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """``later`` merged over ``earlier`` (neither is changed)."""
    out = dict(earlier)
    for key, value in later.items():
        if key not in out:
            for other in _other_choices(out, key, value):
                del out[other]
            out[key] = value
        elif key == "status" and value == "unknown" and isinstance(out[key], str):
            continue
        else:
            out[key] = _merge_value(out[key], value)
    return out


# A value of a FHIR datatype is one value: a later Coding, CodeableConcept, Identifier, Quantity or
# Reference replaces the earlier one whole (merged key by key, a new code would keep the old display).
_ATOMIC = frozenset({"coding", "code", "system", "reference", "value"})


def _merge_value(earlier: Any, later: Any) -> Any:
    if isinstance(earlier, dict) and isinstance(later, dict):
        if _ATOMIC.isdisjoint(earlier) and _ATOMIC.isdisjoint(later):
            return merge(earlier, later)
        return later
    if isinstance(earlier, list) and isinstance(later, list):
        out = list(earlier)
        keys = [_item_key(x) for x in out]
        for item in later:
            key = _item_key(item)
            if key is not None and key in keys:
                at = keys.index(key)
                out[at] = _merge_value(out[at], item)
            elif item not in out:
                out.append(item)
                keys.append(key)
        return out
    return later


def merged(contributions: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The merge of ``contributions`` (in message order)."""
    out: dict[str, Any] = {}
    for body in contributions:
        out = merge(out, body)
    return out


# --- cancels ----------------------------------------------------------------------------------------------
#
# A message that cancels an earlier event of the visit (ADT A13 cancel discharge, A12 cancel transfer,
# A55 cancel change of attending doctor …; ``hub.mapping.MappingResult.cancels``) sets aside what the
# latest earlier message of that event contributed: its contribution names that message under
# ``WITHDRAWS``, and the merge leaves it out. The withdrawn contribution is kept, so a replay of the
# cancelled message changes nothing, and a replay of the cancel chooses again.

WITHDRAWS = "_withdraws"
# A message that changes one kind of participant (A54 the attending doctor, A61 the consulting doctor;
# ``MappingResult.replaces``): its contribution names the participant types under ``REPLACES``, and
# the participants of those types that earlier contributions gave are dropped when it is merged. Its
# cancel (A55, A62) withdraws it, and the earlier ones are back.
REPLACES = "_replaces_participants"
_PRIVATE = (WITHDRAWS, REPLACES)


def merged_state(state: Contributions) -> dict[str, Any]:
    """The merge of the contributions in ``state`` in message order, without those a cancel withdrew,
    each dropping the earlier participants of the types it replaces."""
    gone = {m for _, body in state.values() for m in body.get(WITHDRAWS, ())}
    out: dict[str, Any] = {}
    for mid, (_, body) in sorted(state.items(), key=lambda item: item[1][0]):
        if mid in gone:
            continue
        if WITHDRAWS in body or REPLACES in body:
            replaced = set(body.get(REPLACES, ()))
            body = {k: v for k, v in body.items() if k not in _PRIVATE}
            if replaced and isinstance(out.get("participant"), list):
                out = {**out, "participant": _without_types(out["participant"], replaced)}
                if not out["participant"]:
                    del out["participant"]
        out = merge(out, body)
    return out


def _participant_codes(participant: Any) -> set[str]:
    return {
        str(c.get("code"))
        for t in (participant.get("type") or [] if isinstance(participant, dict) else [])
        for c in (t.get("coding") or [] if isinstance(t, dict) else [])
        if isinstance(c, dict)
    }


def _without_types(participants: list[Any], codes: set[str]) -> list[Any]:
    """``participants`` without the types ``codes`` (a participant left with no type is dropped)."""
    out: list[Any] = []
    for p in participants:
        if not _participant_codes(p) & codes:
            out.append(p)
            continue
        kept = [t for t in p.get("type") or [] if not _participant_codes({"type": [t]}) & codes]
        if kept:
            out.append({**p, "type": kept})
    return out


def cancelled(session: Session, state: Contributions, message_id: int, events: set[str]) -> int | None:
    """The message whose contribution in ``state`` the cancel ``message_id`` withdraws: the latest one
    before it (message order) whose type (``ADT^A03``) is among ``events`` and that no other cancel
    withdrew already; None when there is none."""
    own = state[message_id][0]
    gone = {m for mid, (_, body) in state.items() if mid != message_id for m in body.get(WITHDRAWS, ())}
    candidates = [
        m for m, (k, _) in state.items() if m not in (message_id, BASELINE) and k < own and m not in gone
    ]
    if not candidates:
        return None
    connection = session.connection()
    sql = f"SELECT id, message_type FROM inbound_message WHERE id IN ({bulk.marks(len(candidates))})"
    rows = connection.exec_driver_sql(bulk.placeholders(connection.dialect, sql), tuple(candidates))
    matching = [int(mid) for mid, kind in rows if kind in events]
    return max(matching, key=lambda m: state[m][0]) if matching else None


# --- storage ---------------------------------------------------------------------------------------------

Key = tuple[str, str]
# message id → (sort key, body without meta)
Contributions = dict[int, tuple[str, dict[str, Any]]]


def sort_key(message_id: int, instant: str | None) -> str:
    """Message order: the event time (UTC, ``YYYYMMDDHHMMSSffffff``, zeros when unknown), then the id."""
    return f"{instant or '0' * 20}{message_id:020d}"


def read(session: Session, keys: list[Key]) -> dict[Key, Contributions]:
    """The stored contributions of ``keys`` (two plain INs, like ``resources._current_rows``). In a
    pipeline batch, contributions of these resources that are still held are written first."""
    if not keys:
        return {}
    held = deferred.held(session)
    if held is not None:
        pending = held.rows.get(TABLE.name)
        if pending and not set(keys).isdisjoint((row[0], row[1]) for row in pending):
            held.flush(session)
    connection = session.connection()
    types = sorted({t for t, _ in keys})
    ids = sorted({i for _, i in keys})
    wanted = set(keys)
    sql = (
        "SELECT resource_type, id, message_id, sort_key, content FROM resource_contribution"
        f" WHERE resource_type IN ({bulk.marks(len(types))}) AND id IN ({bulk.marks(len(ids))})"
    )
    out: dict[Key, Contributions] = {}
    rows = connection.exec_driver_sql(bulk.placeholders(connection.dialect, sql), (*types, *ids))
    for rtype, rid, message_id, key, content in rows:
        if (rtype, rid) in wanted:
            out.setdefault((rtype, rid), {})[message_id] = (key, orjson.loads(content))
    return out


TABLE: Table = ResourceContribution.__table__  # type: ignore[assignment]
_COLUMNS = ("resource_type", "id", "message_id", "sort_key", "content")
_DELETE = "DELETE FROM resource_contribution WHERE resource_type = ? AND id = ? AND message_id = ?"
_DELETE_ALL = "DELETE FROM resource_contribution WHERE resource_type = ? AND id = ?"


def write(
    session: Session,
    replaced: list[tuple[str, str, int]],
    rows: list[tuple[str, str, int, str, dict[str, Any]]],
    cleared: list[Key] = (),  # type: ignore[assignment]
) -> None:
    """Delete the contributions ``replaced`` names (type, id, message id) and every contribution of the
    resources ``cleared`` names, then insert ``rows`` (type, id, message id, sort key, body): held for
    the end of a pipeline batch (nothing reads them before a later message's :func:`read` of the same
    resource, which writes them first)."""
    connection = session.connection()
    bulk.execute_many(connection, TABLE, _DELETE_ALL, ("resource_type", "id"), list(cleared))
    bulk.execute_many(connection, TABLE, _DELETE, ("resource_type", "id", "message_id"), replaced)
    encoded = [(t, i, m, k, orjson.dumps(body)) for t, i, m, k, body in rows]
    held = deferred.held(session)
    if held is not None:
        held.hold(TABLE, _COLUMNS, encoded)
    else:
        bulk.insert_rows(connection, TABLE, _COLUMNS, encoded)
