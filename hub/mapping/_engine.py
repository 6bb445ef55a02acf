"""The mapping engine: runs the compiled maps of one message over its segments and returns plain dicts.

Two passes: the first builds every resource (ids are deterministic, so they are known at once), the
second resolves References between them (subject, encounter, result, basedOn …). Every field a map reads
is marked used; the rest make the unmapped report. One Provenance per message targets every resource.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hub.errors import MappingError
from hub.hl7 import EXPLICIT_NULL, Message, Segment, unescape
from hub.hl7.reference import field_name
from hub.mapping._functions import Choice, key_id
from hub.mapping._ids import patient_id, resource_id
from hub.mapping._time import TimeFormatError, to_datetime, to_instant

Converter = Callable[[str, int, "Runtime", dict[str, Any]], Any]
Step = tuple[str, str]  # (element name, "" | "[]" | "[x]")

UNMAPPED_VALUE_MAX = 200


def parse_target(target: str) -> tuple[Step, ...]:
    steps: list[Step] = []
    for part in target.split("."):
        if part.endswith("[]"):
            steps.append((part[:-2], "[]"))
        elif part.endswith("[x]"):
            steps.append((part[:-3], "[x]"))
        else:
            steps.append((part, ""))
    return tuple(steps)


_CONTAINERS = (str, dict, list)


def is_empty(value: Any) -> bool:
    return value is None or (value.__class__ in _CONTAINERS and not value)


def put(res: dict[str, Any], f: CompiledField, value: Any) -> None:
    """``set_value`` with a fast path for one plain element (most targets)."""
    key = f.simple
    if key is not None and value.__class__ is not Choice and f.with_ is None:
        if value is not None and (value.__class__ not in _CONTAINERS or value):
            res[key] = value
        return
    set_value(res, f.steps, value, f.with_)


_PY_CHOICE = {bool: "Boolean", int: "Integer", str: "String"}


def set_value(obj: dict[str, Any], steps: tuple[Step, ...], value: Any, with_: dict[str, Any] | None) -> bool:
    """Put ``value`` at ``steps`` under ``obj``; ``[]`` appends, ``[x]`` completes a choice element's name.
    Empty values are never written, so no resource carries an empty element."""
    if is_empty(value) or (isinstance(value, Choice) and is_empty(value.value)):
        return False
    for name, kind in steps[:-1]:
        if kind == "[]":
            new: dict[str, Any] = copy.deepcopy(with_) if with_ else {}
            obj.setdefault(name, []).append(new)
            obj, with_ = new, None
        else:
            obj = obj.setdefault(name, {})
    name, kind = steps[-1]
    if kind == "[]":
        if with_ and isinstance(value, dict):
            value = {**copy.deepcopy(with_), **value}
        lst = obj.setdefault(name, [])
        if isinstance(value, list):
            lst.extend(value)
        elif value not in lst:
            lst.append(value)
    elif kind == "[x]":
        if not isinstance(value, Choice):
            inferred = _PY_CHOICE.get(type(value))
            if inferred is None:
                raise MappingError(f"{name}[x] needs a typed value (a datatype or the choice transform)")
            value = Choice(inferred, value)
        # A choice element holds one type: a later field (PID-25 birth order after PID-24, PID-29 date
        # after PID-30 flag) replaces what an earlier one set.
        for key in [k for k in obj if k.startswith(name) and k[len(name) : len(name) + 1].isupper()]:
            del obj[key]
        obj[name + value.type] = value.value
    elif isinstance(value, Choice):
        obj[name] = value.value
    else:
        obj[name] = value
    return True


@dataclass(slots=True)
class Vocab:
    name: str
    codes: dict[str, Any]
    default: Any = None
    system: str | None = None
    case_sensitive: bool = False

    def get(self, code: str) -> Any:
        key = code if self.case_sensitive else code.upper()
        found = self.codes.get(key)
        return found if found is not None else self.default

    def lookup(self, code: str) -> Any:
        """The mapped value without the default."""
        return self.codes.get(code if self.case_sensitive else code.upper())


EMPTY_VOCAB = Vocab("", {})


@dataclass(frozen=True, slots=True)
class PathRef:
    segment: str
    field: int
    component: int  # 0: the whole field
    subcomponent: int  # 0: the whole component
    text: str


def parse_ref(path: str) -> PathRef:
    name, _, rest = path.partition("-")
    nums = [int(x) for x in rest.split(".")]
    nums += [0] * (3 - len(nums))
    return PathRef(name, nums[0], nums[1], nums[2], path)


@dataclass(slots=True)
class CompiledField:
    target: str
    steps: tuple[Step, ...]
    sources: list[PathRef] = field(default_factory=list)  # path then fallbacks
    inputs: list[PathRef] = field(default_factory=list)  # paths of a multi-input function
    value: Any = None
    ref: str | None = None
    children: str | None = None
    convert: Converter | None = None
    convert_args: dict[str, Any] = field(default_factory=dict)
    vocab: str | None = None
    transform: Callable[[Any, Runtime, dict[str, Any]], Any] | None = None
    segment_fn: Callable[[list[str], int, Runtime, dict[str, Any]], Any] | None = None
    args: dict[str, Any] = field(default_factory=dict)
    when: tuple[Callable[[str, Runtime, list[Any]], bool], PathRef | None, list[Any]] | None = None
    repeat: bool = False
    whole_field: bool = False
    with_: dict[str, Any] | None = None
    # Field numbers on the map's own segment that feed this element: when all are empty it is skipped
    # without further work (most fields of most segments are empty).
    local_fields: tuple[int, ...] = ()
    deferred: bool = False
    simple: str | None = None  # the element name when the target is one plain element
    run: Callable[[Runtime, int, dict[str, Any]], None] | None = None  # see specialize()


@dataclass(slots=True)
class CompiledIdRule:
    keys: list[PathRef]
    extra: list[PathRef]
    function: Callable[[int, Runtime], tuple[str, ...] | None] | None
    scope: str


@dataclass(slots=True)
class CompiledSegmentMap:
    name: str
    segment: str
    resource: str
    fields: list[CompiledField]
    id_rules: list[CompiledIdRule]
    required: list[str]
    merge_into: str | None = None
    when: tuple[Callable[[str, Runtime, list[Any]], bool], PathRef | None, list[Any]] | None = None


@dataclass(slots=True)
class CompiledEntry:
    segment: str
    map: CompiledSegmentMap
    first: bool
    anchors: tuple[str, ...]
    parent: str | None
    reference_only: bool = False


@dataclass(slots=True)
class CompiledMessageMap:
    name: str
    events: list[str]
    by_segment: dict[str, list[CompiledEntry]]
    actions: list[Callable[[Runtime], list[dict[str, Any]]]]


@dataclass(slots=True)
class CompiledMaps:
    """Every map of one overlay (or the base), ready to run."""

    messages: dict[str, CompiledMessageMap]  # by "ADT^A01"
    segment_maps: dict[str, CompiledSegmentMap]
    vocabs: dict[str, Vocab]
    time_zone: str | None = None
    segment_of_map: dict[str, str] = field(default_factory=dict)
    converters: dict[str, Converter] = field(default_factory=dict)  # by datatype name and file stem


class Runtime:
    """The state of one message being mapped; the registry functions receive it."""

    __slots__ = (
        "_nearest",
        "_patient_ids",
        "_values",
        "children",
        "ctx",
        "deferred",
        "enc",
        "extra",
        "facility_key",
        "keys",
        "made",
        "maps",
        "nulls",
        "pending_required",
        "resources",
        "segments",
        "used",
        "version",
        "warnings",
        "zone",
    )

    def __init__(self, message: Message, ctx: Any, maps: CompiledMaps, zone: str) -> None:
        self.segments: list[Segment] = message.segments
        self.enc = message.enc
        self.ctx = ctx
        self.maps = maps
        self.zone = zone
        self.used: list[set[int]] = [set() for _ in self.segments]
        self.made: dict[tuple[str, int], dict[str, Any]] = {}
        self.children: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self.resources: list[dict[str, Any]] = []
        self.extra: dict[str, dict[str, Any]] = {}
        self.keys: set[str] = set()
        self.deferred: list[tuple[dict[str, Any], CompiledField, int, int]] = []
        self.nulls: list[tuple[dict[str, Any], str, str]] = []
        self.pending_required: list[tuple[dict[str, Any], CompiledSegmentMap, int, int]] = []
        self.warnings: list[str] = []
        self._nearest: dict[tuple[int, str], int] = {}
        self._values: dict[tuple[int, str], str] = {}
        self._patient_ids: dict[int, str] = {}
        self.facility_key = (
            "".join(c if c.isalnum() or c in "-._" else "_" for c in ctx.facility) or "unknown"
        )
        self.version = self.segments[0].get(12) if self.segments else ""

    # -- values --------------------------------------------------------------------------------------
    def text(self, raw: str) -> str:
        return unescape(raw, self.enc) if self.enc.escape and self.enc.escape in raw else raw

    def parts(self, raw: str, level: int) -> list[str]:
        if level == 0:
            return raw.split(self.enc.component)
        if level == 1 and self.enc.subcomponent:
            return raw.split(self.enc.subcomponent)
        return [raw]

    def vocab(self, name: str) -> Vocab:
        return self.maps.vocabs.get(name, EMPTY_VOCAB)

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    def nearest(self, index: int, name: str) -> int:
        """The segment named ``name`` that governs segment ``index``: itself, the nearest before it, or
        else the first one in the message."""
        key = (index, name)
        found = self._nearest.get(key)
        if found is not None:
            return found
        segs = self.segments
        result = -1
        for i in range(min(index, len(segs) - 1), -1, -1):
            if segs[i].name == name:
                result = i
                break
        if result < 0:
            for i in range(index + 1, len(segs)):
                if segs[i].name == name:
                    result = i
                    break
        self._nearest[key] = result
        return result

    def raw_at(self, ref: PathRef, index: int, mark: bool = True) -> tuple[str, int]:
        """The raw (escaped) field ``ref`` names, seen from segment ``index``, and that segment's index."""
        segs = self.segments
        if 0 <= index < len(segs) and segs[index].name == ref.segment:
            i = index
        else:
            i = self.nearest(index, ref.segment)
            if i < 0:
                return "", -1
        seg = segs[i]
        fields = seg.fields
        n = ref.field
        if n >= len(fields) or (n <= 2 and seg.name == "MSH"):
            return "", i
        raw = fields[n]
        if raw and mark:
            self.used[i].add(n)
        return raw, i

    def piece(self, rep: str, ref: PathRef) -> tuple[str, int]:
        """The component/subcomponent of one repetition ``ref`` names, and its nesting level."""
        if not ref.component:
            return rep, 0
        comps = rep.split(self.enc.component)
        if ref.component > len(comps):
            return "", 1
        comp = comps[ref.component - 1]
        if not ref.subcomponent:
            return comp, 1
        subs = comp.split(self.enc.subcomponent) if self.enc.subcomponent else [comp]
        return (subs[ref.subcomponent - 1] if ref.subcomponent <= len(subs) else ""), 2

    def value(self, ref: PathRef, index: int, mark: bool = True) -> str:
        """The unescaped first-repetition value at ``ref`` (cached per segment: ids and conditions
        read the same OBR/PID values for every OBX)."""
        raw, i = self.raw_at(ref, index, mark)
        if not raw:
            return ""
        key = (i, ref.text)
        found = self._values.get(key)
        if found is None:
            found = self._value_of(raw, ref)
            self._values[key] = found
        return found

    def _value_of(self, raw: str, ref: PathRef) -> str:
        rep = raw.split(self.enc.repetition, 1)[0]
        piece, level = self.piece(rep, ref)
        if level < 2 and ref.component:
            piece = self.parts(piece, level)[0] if level == 1 else piece
        elif not ref.component:
            piece = rep.split(self.enc.component, 1)[0]
            piece = piece.split(self.enc.subcomponent, 1)[0] if self.enc.subcomponent else piece
        return self.text(piece).strip()

    # -- patients ------------------------------------------------------------------------------------
    def patient_key_at(self, index: int) -> tuple[str, str]:
        """(identifier, assigning authority) of the PID governing segment ``index``: PID-3 first
        repetition, else PID-2 (v2.3 external id), else PID-4."""
        pid = index if self.segments[index].name == "PID" else self.nearest(index, "PID")
        if pid < 0:
            return "", ""
        seg = self.segments[pid]
        for n in (3, 2, 4):
            value = seg.get(n, 1).strip()  # first repetition, CX-1 (unescaped)
            if value and seg.raw(n) != EXPLICIT_NULL:
                # The assigning authority is CX-4.1 (namespace id), else CX-4.2 (universal id).
                authority = seg.get(n, 4) or seg.get(n, 4, 2)
                return value, authority.strip()
        return "", ""

    def patient_id_at(self, index: int) -> str:
        pid = index if self.segments[index].name == "PID" else self.nearest(index, "PID")
        found = self._patient_ids.get(pid)
        if found is None:
            value, authority = self.patient_key_at(index)
            found = self._patient_ids[pid] = patient_id(self.ctx.facility, value, authority)
        return found

    def observation_key(self, index: int) -> tuple[str, ...]:
        """The id key of the Observation the OBX at ``index`` makes (for resources derived from it)."""
        smap = self.maps.segment_maps.get("OBX.Observation")
        rid = compute_id(smap, self, index) if smap is not None else None
        return (rid,) if rid else (*message_key(self), str(index))

    # -- resources from datatypes --------------------------------------------------------------------
    def add_extra(self, resource: dict[str, Any]) -> None:
        key = f"{resource['resourceType']}/{resource['id']}"
        if key not in self.extra:
            self.extra[key] = resource


def _check(
    when: tuple[Callable[[str, Runtime, list[Any]], bool], PathRef | None, list[Any]],
    rt: Runtime,
    index: int,
    own: str,
) -> bool:
    fn, ref, args = when
    value = rt.value(ref, index, mark=True) if ref is not None else own
    return fn(value, rt, args)


def apply_field(f: CompiledField, rt: Runtime, index: int, res: dict[str, Any]) -> None:
    if f.value is not None:
        if f.when is None or _check(f.when, rt, index, ""):
            set_value(
                res, f.steps, copy.deepcopy(f.value) if isinstance(f.value, dict | list) else f.value, f.with_
            )
        return
    if f.inputs:
        assert f.segment_fn is not None
        raws = [rt.raw_at(ref, index)[0] for ref in f.inputs]
        if f.when is not None and not _check(f.when, rt, index, ""):
            return
        made = f.segment_fn(raws, index, rt, f.args)
        if f.transform is not None and made is not None:
            made = f.transform(made, rt, f.args)
        put(res, f, made)
        return
    raw = ""
    src: PathRef | None = None
    for ref in f.sources:
        raw, _ = rt.raw_at(ref, index)
        if raw:
            src = ref
            break
    if src is None:
        return
    if raw == EXPLICIT_NULL:
        rt.nulls.append((res, f.target, src.text))
        return
    if f.when is not None and not _check(f.when, rt, index, rt.value(src, index, mark=False)):
        return
    if f.whole_field:
        reps = [raw]
    else:
        reps = raw.split(rt.enc.repetition) if f.repeat else [raw.split(rt.enc.repetition, 1)[0]]
    convert = f.convert
    for rep in reps:
        if not rep or rep == EXPLICIT_NULL:
            continue
        piece, level = rt.piece(rep, src)
        if not piece:
            continue
        if convert is None:
            if level < 2:
                piece = rt.parts(piece, level)[0]
                if level == 0:
                    piece = piece.split(rt.enc.subcomponent, 1)[0] if rt.enc.subcomponent else piece
            value: Any = rt.text(piece).strip() or None
        else:
            value = convert(piece, level, rt, f.convert_args)
        if value is None:
            continue
        if f.vocab is not None:
            value = _translate(rt, f.vocab, value, src)
            if value is None:
                continue
        if f.transform is not None:
            value = f.transform(value, rt, f.args)
        put(res, f, value)


def specialize(f: CompiledField, segment: str) -> Callable[[Runtime, int, dict[str, Any]], None] | None:
    """A closure for the two commonest shapes (a constant; one field of the map's own segment, first
    repetition, no condition) that skips the generic dispatch of :func:`apply_field`. None: use it."""
    if f.value is not None and f.when is None and f.simple is not None and f.with_ is None:
        key, constant = f.simple, f.value
        if isinstance(constant, dict | list):
            return None

        def run_constant(rt: Runtime, index: int, res: dict[str, Any]) -> None:
            res[key] = constant

        return run_constant
    if segment == "MSH" or f.when is not None:
        return None
    if f.inputs and f.segment_fn is not None and all(r.segment == segment for r in f.inputs):
        numbers = tuple(r.field for r in f.inputs)
        segment_fn, fn_args, fn_transform = f.segment_fn, f.args, f.transform

        def run_inputs(rt: Runtime, index: int, res: dict[str, Any]) -> None:
            fields = rt.segments[index].fields
            count = len(fields)
            used = rt.used[index]
            raws = []
            for n in numbers:
                raw = fields[n] if n < count else ""
                if raw:
                    used.add(n)
                raws.append(raw)
            made = segment_fn(raws, index, rt, fn_args)
            if fn_transform is not None and made is not None:
                made = fn_transform(made, rt, fn_args)
            put(res, f, made)

        return run_inputs
    if not (f.sources and f.sources[0].segment == segment and not f.repeat and not f.whole_field):
        return None
    src = f.sources[0]
    n, target = src.field, f.target
    has_fallback = len(f.sources) > 1
    convert, convert_args, vocab, transform, args = f.convert, f.convert_args, f.vocab, f.transform, f.args

    def run_local(rt: Runtime, index: int, res: dict[str, Any]) -> None:
        fields = rt.segments[index].fields
        raw = fields[n] if n < len(fields) else ""
        if not raw:
            if has_fallback:  # e.g. OBX-3 empty: the generic path tries OBR-4
                apply_field(f, rt, index, res)
            return
        rt.used[index].add(n)
        if raw == EXPLICIT_NULL:
            rt.nulls.append((res, target, src.text))
            return
        sep = rt.enc.repetition
        rep = raw.split(sep, 1)[0] if sep in raw else raw
        if not rep or rep == EXPLICIT_NULL:
            return
        piece, level = rt.piece(rep, src) if src.component else (rep, 0)
        if not piece:
            return
        value: Any
        if convert is None:
            if level < 2:
                piece = rt.parts(piece, level)[0]
                if level == 0 and rt.enc.subcomponent:
                    piece = piece.split(rt.enc.subcomponent, 1)[0]
            value = rt.text(piece).strip() or None
        else:
            value = convert(piece, level, rt, convert_args)
        if value is None:
            return
        if vocab is not None:
            value = _translate(rt, vocab, value, src)
            if value is None:
                return
        if transform is not None:
            value = transform(value, rt, args)
        put(res, f, value)

    return run_local


def _translate(rt: Runtime, name: str, value: Any, src: PathRef) -> Any:
    """A code through a vocabulary: a code element gets the translated code (or the default); a
    CodeableConcept gets the translated coding first and keeps the sender's original coding beside it."""
    vocab = rt.vocab(name)
    if isinstance(value, str):
        found = vocab.get(value)
        if found is None:
            rt.warn(f"{src.text}: code {value!r} is not in vocabulary {name!r} and it has no default")
            return None
        if isinstance(found, dict) and vocab.system and "system" not in found:
            return {"system": vocab.system, **found}
        return found
    if isinstance(value, dict) and value.get("coding"):
        original = value["coding"][0]
        found = vocab.lookup(original.get("code", ""))
        if found is None and vocab.default is not None and not isinstance(vocab.default, str):
            found = vocab.default
        if found is None:
            return value
        coding = dict(found) if isinstance(found, dict) else {"code": str(found)}
        if "system" not in coding and vocab.system:
            coding = {"system": vocab.system, **coding}
        if any(
            c.get("system") == coding.get("system") and c.get("code") == coding.get("code")
            for c in value["coding"]
        ):
            return value
        return {**value, "coding": [coding, *value["coding"]]}
    return value


def compute_id(smap: CompiledSegmentMap, rt: Runtime, index: int) -> str | None:
    """The id from the first rule that applies; None when none does (no business identifier)."""
    for rule in smap.id_rules:
        if rule.function is not None:
            parts = rule.function(index, rt)
            if parts is None:
                continue
            if len(parts) == 1 and parts[0].startswith("="):  # an id the function computed itself
                return parts[0][1:]
        else:
            values = [rt.value(k, index) for k in rule.keys]
            if not values or not all(values):
                continue
            parts = (*values, *(rt.value(k, index) for k in rule.extra))
        if rule.scope == "facility":
            parts = (rt.ctx.facility, *parts)
        elif rule.scope == "patient":
            parts = (rt.patient_id_at(index), *parts)
        elif rule.scope == "message":
            parts = (*message_key(rt), *parts)
        return key_id(smap.resource, parts)
    return None


def message_key(rt: Runtime) -> tuple[str, ...]:
    if rt.ctx.message_id is not None:
        return ("message", str(rt.ctx.message_id))
    return ("control-id", rt.ctx.facility, rt.segments[0].get(10) if rt.segments else "")


def merge_into(target: dict[str, Any], source: dict[str, Any]) -> None:
    for key, value in source.items():
        if key in ("resourceType", "id"):
            continue
        if isinstance(value, list) and isinstance(target.get(key), list):
            for item in value:
                if item not in target[key]:
                    target[key].append(item)
        else:
            target[key] = value


def build(entry: CompiledEntry, rt: Runtime, index: int, parent: int) -> None:
    smap = entry.map
    if smap.when is not None and not _check(smap.when, rt, index, ""):
        return
    if entry.reference_only:
        ref_id = compute_id(smap, rt, index)
        if ref_id is not None:  # without a business key there is nothing stable to point at
            rt.made[(smap.name, index)] = {"resourceType": smap.resource, "id": ref_id}
        return
    res: dict[str, Any] = {"resourceType": smap.resource, "id": ""}
    deferred: list[CompiledField] = []
    seg_fields = rt.segments[index].fields
    n_fields = len(seg_fields)
    for f in smap.fields:
        if f.deferred:
            deferred.append(f)
            continue
        local = f.local_fields
        if local:
            if len(local) == 1:
                n = local[0]
                if n >= n_fields or not seg_fields[n]:
                    continue
            elif not any(n < n_fields and seg_fields[n] for n in local):
                continue
        if f.run is not None:
            f.run(rt, index, res)
        else:
            apply_field(f, rt, index, res)
    if smap.merge_into is not None:
        seg_name = rt.maps.segment_of_map.get(smap.merge_into, "")
        target = rt.made.get((smap.merge_into, rt.nearest(index, seg_name)))
        if target is None:
            rt.warn(f"{smap.name} at segment {index}: no {smap.merge_into} resource to merge into")
            return
        merge_into(target, res)
        return
    # No business identifier: stable for this message and this segment position.
    rid = compute_id(smap, rt, index) or resource_id(
        smap.resource, *message_key(rt), rt.segments[index].name, str(index)
    )
    key = f"{smap.resource}/{rid}"
    if key in rt.keys:
        # Two segments with the same business key in one message: keep both, keyed apart by position.
        rt.warn(f"{rt.segments[index].name} at segment {index}: {key} already made by this message")
        rid = resource_id(smap.resource, rid, str(index))
    res["id"] = rid
    rt.keys.add(f"{smap.resource}/{rid}")
    rt.made[(smap.name, index)] = res
    rt.children.setdefault((smap.name, parent), []).append(res)
    rt.resources.append(res)
    for f in deferred:
        rt.deferred.append((res, f, index, parent))
    if smap.required:
        rt.pending_required.append((res, smap, index, parent))


def drop_incomplete(rt: Runtime) -> None:
    """Resources missing a required element (after Z-segments and NTEs merged into them) are not made;
    the warning names the segment, which then also shows in the unmapped report."""
    dropped: set[str] = set()
    for res, smap, index, parent in rt.pending_required:
        missing = [r for r in smap.required if r not in res and not any(k.startswith(r) for k in res)]
        if not missing:
            continue
        dropped.add(f"{res['resourceType']}/{res['id']}")
        seg = rt.segments[index]
        rt.warn(f"{seg.name} at segment {index}: no {smap.resource} made, {', '.join(missing)} missing")
        rt.resources.remove(res)
        rt.made.pop((smap.name, index), None)
        siblings = rt.children.get((smap.name, parent), [])
        if res in siblings:
            siblings.remove(res)
        rt.used[index].clear()
    if dropped:
        for res in rt.resources:
            _drop_references(res, dropped)


def _drop_references(res: dict[str, Any], dropped: set[str]) -> None:
    for key in list(res):
        value = res[key]
        if isinstance(value, dict) and value.get("reference") in dropped:
            del res[key]
        elif isinstance(value, list):
            kept = [v for v in value if not (isinstance(v, dict) and v.get("reference") in dropped)]
            if len(kept) != len(value):
                if kept:
                    res[key] = kept
                else:
                    del res[key]


def resolve_references(rt: Runtime) -> None:
    for res, f, index, parent in rt.deferred:
        if f.ref is not None:
            seg_name = rt.maps.segment_of_map.get(f.ref, "")
            at = (
                parent
                if parent >= 0 and rt.segments[parent].name == seg_name
                else rt.nearest(index, seg_name)
            )
            # Only the governing segment's resource: never another patient's or another order's.
            target = rt.made.get((f.ref, at))
            if target is not None:
                set_value(res, f.steps, {"reference": f"{target['resourceType']}/{target['id']}"}, f.with_)
        elif f.children is not None:
            for child in rt.children.get((f.children, index), []):
                set_value(res, f.steps, {"reference": f"{child['resourceType']}/{child['id']}"}, f.with_)


def provenance(rt: Runtime, message_type: str) -> dict[str, Any]:
    """One Provenance per message (V2-to-FHIR IG MSH[Provenance]): targets every resource made, the
    sending facility as agent, the message (control id) as source entity."""
    msh = rt.segments[0]
    control_id = msh.get(10)
    # MSH routing/processing fields are consumed by intake (ACK, dispatch), the rest here.
    rt.used[0].update((3, 4, 5, 6, 7, 9, 10, 11, 12, 15, 16, 18))
    targets = [{"reference": f"{r['resourceType']}/{r['id']}"} for r in rt.resources]
    targets += [{"reference": key} for key in rt.extra]
    recorded = ""
    if msh.get(7):
        try:
            recorded = to_instant(msh.get(7), rt.zone)
        except TimeFormatError as exc:
            rt.warn(f"MSH-7: {exc}")
    if not recorded:
        rt.warn("MSH-7 message date/time is missing; Provenance.recorded set to the epoch")
        recorded = "1970-01-01T00:00:00Z"
    app = msh.get(3)
    occurred = ""
    evn = rt.nearest(0, "EVN")
    if evn >= 0:
        seg = rt.segments[evn]
        rt.used[evn].update(n for n in (1, 2, 6) if seg.raw(n))
        when = seg.get(6) or seg.get(2)
        if when:
            try:
                occurred = to_datetime(when, rt.zone)
            except TimeFormatError as exc:
                rt.warn(f"EVN: {exc}")
    out: dict[str, Any] = {
        "resourceType": "Provenance",
        "id": resource_id("Provenance", *message_key(rt)),
        "target": targets,
        "recorded": recorded,
        "activity": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v2-0003",
                    "code": msh.get(9, 2) or msh.get(9, 1),
                    "display": message_type,
                }
            ]
        },
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                            "code": "author",
                        }
                    ]
                },
                "who": {
                    "identifier": {"system": "urn:hub:sender", "value": rt.ctx.facility},
                    "display": f"{app} {rt.ctx.facility}".strip() if app else rt.ctx.facility,
                },
            }
        ],
        "entity": [
            {
                "role": "source",
                "what": {
                    "identifier": {"system": f"urn:hub:hl7v2:{rt.facility_key}", "value": control_id},
                    "display": f"{message_type} {control_id}".strip(),
                },
            }
        ],
    }
    if occurred:
        out = {**{k: out[k] for k in ("resourceType", "id", "target")}, "occurredDateTime": occurred, **out}
    return out


def unmapped_report(rt: Runtime) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, seg in enumerate(rt.segments):
        used = rt.used[i]
        fields = seg.fields
        start = 3 if seg.name in ("MSH", "FHS", "BHS") else 1
        before = len(out)
        for n in range(start, len(fields)):
            raw = fields[n]
            if not raw or n in used:
                continue
            # Set IDs (SEG-1 of repeating segments) only number the segments; not data to map.
            if n == 1 and raw.isdigit():
                continue
            out.append(
                {
                    "segment": seg.name,
                    "index": i,
                    "field": n,
                    "name": field_name(seg.name, n, rt.version or "2.5.1"),
                    "value": raw if len(raw) <= UNMAPPED_VALUE_MAX else raw[:UNMAPPED_VALUE_MAX] + "…",
                }
            )
        if len(out) == before and not used and not any(fields[start:]):
            # A segment with no data at all (e.g. a bare "ZXX") is still a segment no map used.
            out.append({"segment": seg.name, "index": i, "field": 0, "name": "", "value": ""})
    return out


def run(message: Message, ctx: Any, maps: CompiledMaps) -> tuple[Runtime, str]:
    """Map one message with ``maps``; returns the runtime (resources, report) and the message type."""
    if not message.segments or message.segments[0].name != "MSH":
        raise MappingError("message does not start with MSH", code="no-map")
    msh = message.segments[0]
    message_type = f"{msh.get(9, 1)}^{msh.get(9, 2)}"
    mm = maps.messages.get(message_type)
    if mm is None:
        known = ", ".join(sorted(maps.messages)) if len(maps.messages) < 80 else f"{len(maps.messages)} types"
        raise MappingError(f"no map for message type {message_type} (maps exist for: {known})", code="no-map")
    rt = Runtime(message, ctx, maps, maps.time_zone or ctx.time_zone)
    last_seen: dict[str, int] = {}  # the latest segment of each name before the current one
    by_segment = mm.by_segment
    for i, seg in enumerate(rt.segments):
        name = seg.name
        entries = by_segment.get(name)
        if entries:
            is_first = name not in last_seen
            for entry in entries:
                if entry.first and not is_first:
                    continue
                parent = -1
                if entry.anchors:
                    for anchor in entry.anchors:
                        j = last_seen.get(anchor, -1)
                        if j > parent:
                            parent = j
                    if entry.parent is not None and (parent < 0 or rt.segments[parent].name != entry.parent):
                        continue
                build(entry, rt, i, parent)
        last_seen[name] = i
    resolve_references(rt)
    drop_incomplete(rt)
    return rt, message_type


def finish(
    rt: Runtime, message_type: str, maps_actions: list[Callable[[Runtime], list[dict[str, Any]]]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Resources (with the Provenance last), actions, the unmapped report and the explicit nulls."""
    actions: list[dict[str, Any]] = []
    for fn in maps_actions:
        actions.extend(fn(rt))
    resources = rt.resources + list(rt.extra.values())
    if resources:  # Provenance.target is 1..*: a message that made nothing (A47) has none
        resources.append(provenance(rt, message_type))
    nulls = [
        {"resource": f"{res['resourceType']}/{res['id']}", "element": target, "path": path}
        for res, target, path in rt.nulls
        if res.get("id")
    ]
    return resources, actions, unmapped_report(rt), nulls
