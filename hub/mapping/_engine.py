"""The mapping engine: runs the compiled maps of one message over its segments and returns plain dicts.

Two passes: the first builds every resource (ids are deterministic, so they are known at once), the
second resolves References between them (subject, encounter, result, basedOn …). Every field a map reads
is marked used; the rest make the unmapped report. One Provenance per message targets every resource.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import compress
from typing import Any

import orjson

from hub.errors import MappingError
from hub.hl7 import EXPLICIT_NULL, Encoding, Message, Segment, unescape
from hub.hl7.reference import field_name
from hub.mapping._functions import DATATYPES, MEMO_MAX, TRANSFORMS, Choice, key_id
from hub.mapping._ids import patient_id, resource_id
from hub.mapping._time import TimeFormatError, to_datetime, to_instant

Converter = Callable[[str, int, "Runtime", dict[str, Any]], Any]
Step = tuple[str, str]  # (element name, "" | "[]" | "[x]")
Resolver = Callable[["Runtime", dict[str, Any], int, int], None]  # (rt, resource, index, parent)

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


def put_choice(obj: dict[str, Any], name: str, type_name: str, value: Any) -> None:
    """Set ``name[x]`` as ``name<Type>``. A choice element holds one type: a later field (PID-25 birth
    order after PID-24, PID-29 date after the PID-30 flag) replaces what an earlier one set."""
    n = len(name)
    for key in [k for k in obj if k.startswith(name) and k[n : n + 1].isupper()]:
        del obj[key]
    obj[name + type_name] = value


def set_value(obj: dict[str, Any], steps: tuple[Step, ...], value: Any, with_: dict[str, Any] | None) -> bool:
    """Put ``value`` at ``steps`` under ``obj``; ``[]`` appends, ``[x]`` completes a choice element's name.
    Empty values are never written, so no resource carries an empty element."""
    if is_empty(value) or (isinstance(value, Choice) and is_empty(value.value)):
        return False
    for name, kind in steps[:-1]:
        if kind == "[]":
            new: dict[str, Any] = _clone(with_) if with_ else {}
            obj.setdefault(name, []).append(new)
            obj, with_ = new, None
        else:
            obj = obj.setdefault(name, {})
    name, kind = steps[-1]
    if kind == "[]":
        if with_ and isinstance(value, dict):
            value = {**_clone(with_), **value}
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
        put_choice(obj, name, value.type, value.value)
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
    # For a field of the own segment (see specialize): writes one non-empty raw field, and the
    # runner of its fallbacks (or None); the generated fill function calls them directly.
    emit: Callable[[Runtime, dict[str, Any], str, PathRef], None] | None = None
    emit_fallbacks: Callable[[Runtime, int, dict[str, Any]], None] | None = None
    # For a multi-input function on the own segment: writes the result for the raw input fields.
    write_inputs: Callable[[Runtime, int, dict[str, Any], list[str]], None] | None = None
    # For a field of the own segment: the value of one picked piece (conversion, vocabulary), and the
    # token under which codes are remembered per maps (None: not remembered); see specialize.
    code_value: Callable[[Runtime, str, int, PathRef, Encoding], Any] | None = None
    coded: object | None = None


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
    compute_id: Callable[[Runtime, int], str | None] | None = None  # see compile_id()
    # Runs the immediate fields (see compile_plan): (rt, index, resource, segment fields, their count)
    fill: Callable[[Runtime, int, dict[str, Any], list[str], int], None] = lambda *_: None
    deferred: tuple[CompiledField, ...] = ()
    resolve: Resolver | None = None  # the deferred fields as one generated function (compile_resolve)
    # build() for this map as one generated function (rt, index, parent), when it has no condition
    # and merges into no other map (see compile_plan).
    make: Callable[[Runtime, int, int], None] | None = None
    is_child: bool = False  # another map's ``children:`` field lists the resources of this one


@dataclass(slots=True)
class CompiledEntry:
    segment: str
    map: CompiledSegmentMap
    first: bool
    anchors: tuple[str, ...]
    parent: str | None
    reference_only: bool = False
    make: Callable[[Runtime, int, int], None] | None = None  # the map's make, unless reference_only


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
    # Serves every message type ``messages`` does not, by its segments (messages/_default.yaml).
    fallback: CompiledMessageMap | None = None
    # The maps of the fallback's ``every_message`` entries: what they make (the SFT's Device) does not
    # count as mapping a message that nothing else maps.
    header_maps: frozenset[str] = frozenset()
    segment_of_map: dict[str, str] = field(default_factory=dict)
    converters: dict[str, Converter] = field(default_factory=dict)  # by datatype name and file stem
    # Results of pure functions of these maps (coding system names → URIs …), filled as messages come.
    memo: dict[Any, Any] = field(default_factory=dict)


@lru_cache(maxsize=1024)
def _facility_key(facility: str) -> str:
    """The sending facility as a URN/URI-safe name part."""
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in facility) or "unknown"


class Runtime:
    """The state of one message being mapped; the registry functions receive it."""

    __slots__ = (
        "_csep",
        "_esc",
        "_patient_ids",
        "_patient_keys",
        "_positions",
        "_refs",
        "_ssep",
        "_values",
        "by_segment",
        "children",
        "ctx",
        "deferred",
        "enc",
        "extra",
        "facility_key",
        "fields",
        "keys",
        "made",
        "maps",
        "memo_key",
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
        # The delimiters text() and parts() use (the registry functions call them for every value).
        self._esc, self._csep, self._ssep = self.enc.escape, self.enc.component, self.enc.subcomponent
        self.ctx = ctx
        self.maps = maps
        self.zone = zone
        self.used: list[set[int]] = [set() for _ in self.segments]
        self.made: dict[tuple[str, int], dict[str, Any]] = {}
        self.children: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self.resources: list[dict[str, Any]] = []
        self.extra: dict[str, dict[str, Any]] = {}
        self.keys: set[str] = set()
        # (resource, its map's reference fields, segment index, parent index), resolved after the build
        self.deferred: list[tuple[dict[str, Any], tuple[CompiledField, ...] | Resolver, int, int]] = []
        self.nulls: list[tuple[dict[str, Any], str, str]] = []
        self.pending_required: list[tuple[dict[str, Any], CompiledSegmentMap, int, int]] = []
        self.warnings: list[str] = []
        self.by_segment = False  # mapped by the fallback (no message map of its own)
        positions: dict[str, list[int]] = {}
        for i, seg in enumerate(self.segments):
            positions.setdefault(seg.name, []).append(i)
        self._positions = positions
        self.fields: list[list[str]] = [seg.fields for seg in self.segments]  # raw fields, by segment
        self._refs: dict[tuple[str, int], str | None] = {}
        self._values: dict[tuple[int, str], str] = {}
        self._patient_ids: dict[int, str] = {}
        self._patient_keys: dict[int, tuple[str, str]] = {}
        self.facility_key = _facility_key(ctx.facility)
        self.version = self.segments[0].get(12) if self.segments else ""
        # What values remembered per maps also depend on: the delimiters, the sender and its time zone.
        e = self.enc
        delimiters = (e.field, e.component, e.repetition, e.escape, e.subcomponent, e.truncation)
        self.memo_key = "\x1f".join((*delimiters, self.facility_key, zone))

    # -- values --------------------------------------------------------------------------------------
    def text(self, raw: str) -> str:
        esc = self._esc
        return unescape(raw, self.enc) if esc and esc in raw else raw

    def parts(self, raw: str, level: int) -> list[str]:
        if level == 0:
            return raw.split(self._csep)
        if level == 1 and self._ssep:
            return raw.split(self._ssep)
        return [raw]

    def texts(self, raw: str, level: int) -> list[str]:
        """``[text(p).strip() for p in parts(raw, level)]`` in one call (the datatype functions read
        every component of a CX, XTN, EI … this way)."""
        parts = self.parts(raw, level)
        esc = self._esc
        if esc and esc in raw:
            enc = self.enc
            return [unescape(p, enc).strip() if esc in p else p.strip() for p in parts]
        return [p.strip() for p in parts]

    def vocab(self, name: str) -> Vocab:
        return self.maps.vocabs.get(name, EMPTY_VOCAB)

    def warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    def nearest(self, index: int, name: str) -> int:
        """The segment named ``name`` that governs segment ``index``: itself, the nearest before it, or
        else the first one in the message."""
        positions = self._positions.get(name)
        if positions is None:
            return -1
        first = positions[0]
        if first >= index or len(positions) == 1:
            return first
        return positions[bisect_right(positions, index) - 1]

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
        fields = self.fields[i]
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
        repetition, else PID-2 (v2.3 external id), else PID-4 (read once per PID)."""
        pid = index if self.segments[index].name == "PID" else self.nearest(index, "PID")
        if pid < 0:
            return "", ""
        found = self._patient_keys.get(pid)
        if found is None:
            found = self._patient_keys[pid] = self._patient_key(pid)
        return found

    def _patient_key(self, pid: int) -> tuple[str, str]:
        fields, enc = self.fields[pid], self.enc
        for n in (3, 2, 4):
            raw = fields[n] if n < len(fields) else ""
            if not raw or raw == EXPLICIT_NULL:
                continue
            cx = raw.split(enc.repetition, 1)[0].split(enc.component)  # first repetition
            value = self._subcomponent(cx[0], 0).strip()  # CX-1 (unescaped)
            if value:
                # The assigning authority is CX-4.1 (namespace id), else CX-4.2 (universal id).
                hd = cx[3] if len(cx) > 3 else ""
                authority = self._subcomponent(hd, 0) or self._subcomponent(hd, 1)
                return value, authority.strip()
        return "", ""

    def _subcomponent(self, component: str, k: int) -> str:
        """Subcomponent ``k`` (0-based) of a raw component, unescaped (as :func:`hub.hl7.value_at`)."""
        ssep = self._ssep
        if ssep and ssep in component:
            subs = component.split(ssep)
            component = subs[k] if k < len(subs) else ""
        elif k:
            return ""
        return self.text(component)

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
            set_value(res, f.steps, _clone(f.value), f.with_)
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

        steps = f.steps
        choice = steps[0][0] if len(steps) == 1 and steps[0][1] == "[x]" and f.with_ is None else None

        def run_inputs(rt: Runtime, index: int, res: dict[str, Any]) -> None:
            fields = rt.fields[index]
            count = len(fields)
            used = rt.used[index]
            raws = [fields[n] if n < count else "" for n in numbers]
            for n, raw in zip(numbers, raws, strict=True):
                if raw:
                    used.add(n)
            write_inputs(rt, index, res, raws)

        def write_inputs(rt: Runtime, index: int, res: dict[str, Any], raws: list[str]) -> None:
            made = segment_fn(raws, index, rt, fn_args)
            if made is None:
                return
            if fn_transform is not None:
                made = fn_transform(made, rt, fn_args)
            if choice is not None and made.__class__ is Choice:
                inner = made.value
                if inner is not None and (inner.__class__ not in _CONTAINERS or inner):
                    put_choice(res, choice, made.type, inner)
                return
            put(res, f, made)

        f.write_inputs = write_inputs
        return run_inputs
    if not (f.sources and f.sources[0].segment == segment):
        return None
    src = f.sources[0]
    n, target = src.field, f.target
    convert, convert_args, vocab, transform, args = f.convert, f.convert_args, f.vocab, f.transform, f.args
    steps, with_ = f.steps, f.with_
    repeat, whole_field = f.repeat, f.whole_field
    simple = f.simple if f.with_ is None else None
    choice = steps[0][0] if len(steps) == 1 and steps[0][1] == "[x]" and with_ is None else None
    append = steps[0][0] if len(steps) == 1 and steps[0][1] == "[]" and not with_ else None
    fallbacks = tuple(f.sources[1:])

    # Codes (CWE, a vocabulary-translated ID …) repeat from message to message; free text does not.
    pure = convert is None or convert in _PURE_TEXT
    coded = object() if convert in _CODED or (vocab is not None and pure) else None

    def _code_value(rt: Runtime, piece: str, level: int, src: PathRef, enc: Encoding) -> Any:
        value: Any
        if convert is None:
            ssep, esc = enc.subcomponent, enc.escape
            if level == 0:
                piece = piece.split(enc.component, 1)[0]
                if ssep:
                    piece = piece.split(ssep, 1)[0]
            elif level == 1 and ssep:
                piece = piece.split(ssep, 1)[0]
            if esc and esc in piece:
                piece = unescape(piece, enc)
            value = piece.strip() or None
        else:
            value = convert(piece, level, rt, convert_args)
        if value is None:
            return None
        if vocab is not None:
            value = _translate(rt, vocab, value, src)
        return value

    def emit(rt: Runtime, res: dict[str, Any], raw: str, src: PathRef) -> None:
        if raw == EXPLICIT_NULL:
            rt.nulls.append((res, target, src.text))
            return
        enc = rt.enc
        sep, csep, ssep = enc.repetition, enc.component, enc.subcomponent
        if whole_field or sep not in raw:
            reps = [raw]
        elif repeat:
            reps = raw.split(sep)
        else:
            reps = [raw.split(sep, 1)[0]]
        component, subcomponent = src.component, src.subcomponent
        for piece in reps:
            if not piece or piece == EXPLICIT_NULL:
                continue
            # The component/subcomponent the path names, and its nesting level (see Runtime.piece).
            if component:
                comps = piece.split(csep)
                if component > len(comps):
                    continue
                piece = comps[component - 1]
                if subcomponent:
                    subs = piece.split(ssep) if ssep else [piece]
                    piece = subs[subcomponent - 1] if subcomponent <= len(subs) else ""
                    level = 2
                else:
                    level = 1
                if not piece:
                    continue
            else:
                level = 0
            value: Any
            if coded:
                # A code (and its vocabulary translation) is a pure function of the raw value: remembered
                # per maps and sender, copied for each use.
                key = (coded, piece, level, src.text, rt.memo_key)
                memo = rt.maps.memo
                value = memo.get(key)
                if value is not None:
                    if value.__class__ is bytes:
                        value = _loads(value)
                    elif value.__class__ in _NESTED:
                        value = _clone(value)
                else:
                    value = _code_value(rt, piece, level, src, enc)
                    if value is None:
                        continue
                    if value.__class__ in _MEMO_TYPES:
                        if len(memo) > MEMO_MAX:
                            memo.clear()
                        memo[key] = _freeze(value)
            else:
                value = _code_value(rt, piece, level, src, enc)
                if value is None:
                    continue
            if transform is not None:
                value = transform(value, rt, args)
            cls = value.__class__
            if cls is Choice:
                if choice is not None:
                    inner = value.value
                    if inner is not None and (inner.__class__ not in _CONTAINERS or inner):
                        put_choice(res, choice, value.type, inner)
                    continue
            elif simple is not None:
                if cls not in _CONTAINERS or value:
                    res[simple] = value
                continue
            elif append is not None and cls is not list:
                if cls not in _CONTAINERS or value:
                    items = res.get(append)
                    if items is None:
                        res[append] = [value]
                    elif value not in items:
                        items.append(value)
                continue
            set_value(res, steps, value, with_)

    def run_fallbacks(rt: Runtime, index: int, res: dict[str, Any]) -> None:
        for ref in fallbacks:  # e.g. OBX-3 empty: OBR-4
            raw, _ = rt.raw_at(ref, index)
            if raw:
                emit(rt, res, raw, ref)
                return

    def run_local(rt: Runtime, index: int, res: dict[str, Any]) -> None:
        fields = rt.fields[index]
        raw = fields[n] if n < len(fields) else ""
        if raw:
            rt.used[index].add(n)
            emit(rt, res, raw, src)
        elif fallbacks:
            run_fallbacks(rt, index, res)

    f.emit = emit
    f.emit_fallbacks = run_fallbacks if fallbacks else None
    f.code_value = _code_value
    f.coded = coded
    return run_local


# Converters that are pure functions of the raw value, the maps and the sender (no resources made on
# the side; a warning only with a None result, which is not remembered). Dates and times are among them:
# a message repeats its timestamps (OBR-7 in every OBX) and the zone is part of the memo key.
_CODED = frozenset(
    DATATYPES[name] for name in ("CodeableConcept", "Coding", "code", "HD", "dateTime", "instant", "date")
)
_PURE_TEXT = frozenset(DATATYPES[name] for name in ("string", "code"))
_MEMO_TYPES = (str, dict, list)


_NESTED = (dict, list)


_loads = orjson.loads


def _freeze(value: Any) -> Any:
    """A remembered value: a nested JSON value as its orjson text (decoded afresh for each use, which
    copies faster than :func:`_clone`) when it decodes to an equal value, else a :func:`_clone` copy;
    scalars as they are."""
    if value.__class__ not in _NESTED:
        return value
    try:
        text = orjson.dumps(value)
    except TypeError:
        return _clone(value)
    return text if _loads(text) == value else _clone(value)


def _clone(value: Any) -> Any:
    """A copy of a JSON-like value (dicts and lists copied, scalars shared): what ``copy.deepcopy``
    does for the values of mapping files and converters, at a fraction of its cost."""
    cls = value.__class__
    if cls is dict:
        out = value.copy()
        for k, v in value.items():
            c = v.__class__
            if c is list:
                out[k] = [_clone(x) if x.__class__ in _NESTED else x for x in v]
            elif c is dict:
                out[k] = _clone(v)
        return out
    if cls is list:
        return [_clone(v) if v.__class__ in _NESTED else v for v in value]
    return value


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


Getter = Callable[[Runtime, int], str]


def make_getter(ref: PathRef, own: str) -> Getter:
    """A reader of ``ref`` seen from a segment of the map's own segment ``own``: the same value as
    :meth:`Runtime.value` (marking the field used), without its generic dispatch. Fields of the own
    segment are read directly; other segments go through the cached :meth:`Runtime.value`."""
    if ref.segment != own or own == "MSH" or ref.segment == "MSH":
        seg_name, text, field_no = ref.segment, ref.text, ref.field

        def other(rt: Runtime, index: int) -> str:
            # Runtime.value with its per-message cache read first (OBR keys are read by every OBX).
            segs = rt.segments
            i = (
                index
                if 0 <= index < len(segs) and segs[index].name == seg_name
                else rt.nearest(index, seg_name)
            )
            found = rt._values.get((i, text))
            if found is not None:
                rt.used[i].add(field_no)  # cached: the field is not empty
                return found
            return rt.value(ref, index)

        return other
    n, comp, sub = ref.field, ref.component, ref.subcomponent

    def local(rt: Runtime, index: int) -> str:
        seg = rt.segments[index]
        if seg.name != own:
            return rt.value(ref, index)
        fields = rt.fields[index]
        if n >= len(fields):
            return ""
        raw = fields[n]
        if not raw:
            return ""
        rt.used[index].add(n)
        enc = rt.enc
        if enc.repetition in raw:
            raw = raw.split(enc.repetition, 1)[0]
        if comp:
            comps = raw.split(enc.component)
            if comp > len(comps):
                return ""
            raw = comps[comp - 1]
        else:
            raw = raw.split(enc.component, 1)[0]
        if enc.subcomponent:
            if sub:
                subs = raw.split(enc.subcomponent)
                if sub > len(subs):
                    return ""
                raw = subs[sub - 1]
            elif enc.subcomponent in raw:
                raw = raw.split(enc.subcomponent, 1)[0]
        if enc.escape and enc.escape in raw:
            raw = unescape(raw, enc)
        return raw.strip()

    return local


IdFunction = Callable[[Runtime, int], "str | None"]


def _local_value_lines(var: str, ref: PathRef, indent: str) -> list[str]:
    """Generated text of the ``local`` getter of :func:`make_getter` for ``ref`` (field numbers only),
    reading the own segment's ``fields``/``nf`` and marking ``used``; the value ends up in ``var``."""
    n, comp, sub = int(ref.field), int(ref.component), int(ref.subcomponent)
    lines = [
        f"{var} = fields[{n}] if nf > {n} else ''",
        f"if {var}:",
        f"    used.add({n})",
        f"    if rsep in {var}:",
        f"        {var} = {var}.split(rsep, 1)[0]",
    ]
    if comp:
        lines += [f"    _p = {var}.split(csep)", f"    {var} = _p[{comp - 1}] if len(_p) >= {comp} else ''"]
    else:
        lines.append(f"    {var} = {var}.split(csep, 1)[0]")
    if sub:
        lines += [
            "    if ssep:",
            f"        _p = {var}.split(ssep)",
            f"        {var} = _p[{sub - 1}] if len(_p) >= {sub} else ''",
        ]
    else:
        lines += [f"    if ssep and ssep in {var}:", f"        {var} = {var}.split(ssep, 1)[0]"]
    lines += [
        f"    if esc and esc in {var}:",
        f"        {var} = unescape({var}, enc)",
        f"    {var} = {var}.strip()",
    ]
    return [indent + line for line in lines]


def compile_id(resource: str, rules: list[CompiledIdRule], own: str) -> IdFunction:
    """:func:`compute_id` for one segment map as one generated function: the key values of the own
    segment read inline, other segments' values through their cached getters. Only field numbers and
    the validated scope reach the generated text; the resource name and functions are bound."""
    slow = _compile_id_closures(resource, rules, own)
    namespace: dict[str, Any] = {
        "RES": resource,
        "OWN": own,
        "slow": slow,
        "resource_id": resource_id,
        "key_id": key_id,
        "message_key": message_key,
        "unescape": unescape,
    }
    lines = [
        "def compute(rt, index):",
        "    seg = rt.segments[index]",
        "    if seg.name != OWN:",
        "        return slow(rt, index)",
        "    fields = rt.fields[index]",
        "    nf = len(fields)",
        "    used = rt.used[index]",
        "    enc = rt.enc",
        "    rsep, csep, ssep, esc = enc.repetition, enc.component, enc.subcomponent, enc.escape",
        "    nearest = rt.nearest",
        "    values = rt._values",
    ]
    local_ok = own != "MSH"
    for r, rule in enumerate(rules):
        if rule.function is not None:
            namespace[f"F{r}"] = rule.function
            lines += [
                f"    parts = F{r}(index, rt)",
                "    if parts is not None:",
                "        if len(parts) == 1 and parts[0].startswith('='):",
                "            return str(parts[0][1:])",
            ]
            body = "parts"
            indent = "        "
        else:
            if not rule.keys:
                continue
            names: list[str] = []
            governing: dict[str, str] = {}  # segment name → the variable holding its index
            for k, ref in enumerate([*rule.keys, *rule.extra]):
                var = f"v{r}_{k}"
                names.append(var)
                indent = "    " if k < len(rule.keys) else "        "
                if k == len(rule.keys):
                    lines.append(f"    if {' and '.join(names[: len(rule.keys)])}:")
                namespace[f"G{r}_{k}"] = make_getter(ref, own)
                if local_ok and ref.segment == own:
                    lines += _local_value_lines(var, ref, indent)
                elif ref.segment != own:
                    # The ``other`` getter: the governing segment's value from the per-message cache.
                    j = governing.get(ref.segment)
                    if j is None:  # once per rule and segment (keys are read before the extra values)
                        j = governing[ref.segment] = f"j{r}_{k}"
                        namespace[f"S{r}_{k}"] = ref.segment
                        lines.append(f"{indent}{j} = nearest(index, S{r}_{k})")
                    namespace[f"T{r}_{k}"] = ref.text
                    lines += [
                        f"{indent}{var} = values.get(({j}, T{r}_{k}))",
                        f"{indent}if {var} is None:",
                        f"{indent}    {var} = G{r}_{k}(rt, index)",
                        f"{indent}else:",
                        f"{indent}    rt.used[{j}].add({int(ref.field)})",
                    ]
                else:
                    lines.append(f"{indent}{var} = G{r}_{k}(rt, index)")
            if not rule.extra:
                lines.append(f"    if {' and '.join(names)}:")
            indent = "        "
            values = ", ".join(names)
            if rule.scope == "facility":
                lines.append(f"{indent}return resource_id(RES, rt.ctx.facility, {values})")
                continue
            if rule.scope == "patient":
                lines.append(f"{indent}return resource_id(RES, rt.patient_id_at(index), {values})")
                continue
            lines.append(f"{indent}parts = ({values},)")
            body = "parts"
        if rule.scope == "facility":
            lines.append(f"{indent}return key_id(RES, (rt.ctx.facility, *{body}))")
        elif rule.scope == "patient":
            lines.append(f"{indent}return key_id(RES, (rt.patient_id_at(index), *{body}))")
        elif rule.scope == "message":
            lines.append(f"{indent}return key_id(RES, (*message_key(rt), *{body}))")
        else:
            lines.append(f"{indent}return key_id(RES, {body})")
    lines.append("    return None")
    exec(compile("\n".join(lines), f"<id of {resource} from {own}>", "exec"), namespace)
    compute: IdFunction = namespace["compute"]
    return compute


def _compile_id_closures(resource: str, rules: list[CompiledIdRule], own: str) -> IdFunction:
    """:func:`compute_id` for one segment map as a closure over getters of its key paths."""
    plans: list[tuple[Any, tuple[Getter, ...], tuple[Getter, ...], str]] = [
        (
            rule.function,
            tuple(make_getter(k, own) for k in rule.keys),
            tuple(make_getter(k, own) for k in rule.extra),
            rule.scope,
        )
        for rule in rules
    ]

    def compute(rt: Runtime, index: int) -> str | None:
        for function, keys, extra, scope in plans:
            if function is not None:
                parts = function(index, rt)
                if parts is None:
                    continue
                if len(parts) == 1 and parts[0].startswith("="):  # an id the function computed itself
                    return str(parts[0][1:])
            else:
                if not keys:
                    continue
                # Every key is read (and so marked used) even when an earlier one is empty.
                complete = True
                values = []
                for get in keys:
                    value = get(rt, index)
                    if not value:
                        complete = False
                    values.append(value)
                if not complete:
                    continue
                for get in extra:
                    values.append(get(rt, index))
                if scope == "facility":
                    return resource_id(resource, rt.ctx.facility, *values)
                if scope == "patient":
                    return resource_id(resource, rt.patient_id_at(index), *values)
                parts = tuple(values)
            if scope == "facility":
                parts = (rt.ctx.facility, *parts)
            elif scope == "patient":
                parts = (rt.patient_id_at(index), *parts)
            elif scope == "message":
                parts = (*message_key(rt), *parts)
            return key_id(resource, parts)
        return None

    return compute


def compute_id(smap: CompiledSegmentMap, rt: Runtime, index: int) -> str | None:
    """The id from the first rule that applies; None when none does (no business identifier)."""
    if smap.compute_id is not None:
        return smap.compute_id(rt, index)
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


def _emit_lines(
    i: str, f: CompiledField, src: PathRef, namespace: dict[str, Any], sole: bool = False
) -> list[str]:
    """Generated text of ``emit`` (see :func:`specialize`) for field ``f`` read from ``src`` (its path
    or a fallback) in a fill function, specialised on what the map fixes (repetitions, component,
    conversion, target shape). Reads ``raw``; only field/component numbers and the tag ``i`` (digits
    and ``_``) reach the text, everything else is bound."""
    comp, sub = int(src.component), int(src.subcomponent)
    steps, with_ = f.steps, f.with_
    simple = f.simple if with_ is None else None
    choice = steps[0][0] if len(steps) == 1 and steps[0][1] == "[x]" and with_ is None else None
    append = steps[0][0] if len(steps) == 1 and steps[0][1] == "[]" and not with_ else None
    namespace.update(
        {
            f"target{i}": f.target,
            f"src{i}": src,
            f"srctext{i}": src.text,
            f"code{i}": f.code_value,
            f"coded{i}": f.coded,
            f"steps{i}": steps,
            f"with{i}": with_,
            f"transform{i}": f.transform,
            f"args{i}": f.args,
            f"simple{i}": simple,
            f"choice{i}": choice,
            f"append{i}": append,
        }
    )
    if f.whole_field:
        reps = "(raw,)"
    elif f.repeat:
        reps = "(raw.split(rsep) if rsep in raw else (raw,))"
    else:
        reps = "((raw.split(rsep, 1)[0] if rsep in raw else raw),)"
    out = [
        "if raw == NULL:",
        f"    rt.nulls.append((res, target{i}, srctext{i}))",
        "else:",
        f"  for piece in {reps}:",
        "    if not piece or piece == NULL:",
        "        continue",
    ]
    level = 0
    if comp:
        out += [
            "    comps = piece.split(csep)",
            f"    if {comp} > len(comps):",
            "        continue",
            f"    piece = comps[{comp - 1}]",
        ]
        level = 1
        if sub:
            out += [
                "    subs = piece.split(ssep) if ssep else [piece]",
                f"    piece = subs[{sub - 1}] if {sub} <= len(subs) else ''",
            ]
            level = 2
        out += ["    if not piece:", "        continue"]
    if f.coded is not None:
        out += [
            f"    key = (coded{i}, piece, {level}, srctext{i}, mkey)",
            "    value = memo.get(key)",
            "    if value is not None:",
            "        if value.__class__ is bytes:",
            "            value = loads(value)",
            "        elif value.__class__ in NESTED:",
            "            value = clone(value)",
            "    else:",
            f"        value = code{i}(rt, piece, {level}, src{i}, enc)",
            "        if value is None:",
            "            continue",
            "        if value.__class__ in MEMO_TYPES:",
            "            if len(memo) > MEMO_MAX:",
            "                memo.clear()",
            "            memo[key] = freeze(value)",
        ]
    elif f.vocab is None and (f.convert is None or f.convert is _STRING):
        out += _text_lines(level, f.convert is None)
    else:
        out += [
            f"    value = code{i}(rt, piece, {level}, src{i}, enc)",
            "    if value is None:",
            "        continue",
        ]
    if f.transform is _CHOICE and choice is not None and isinstance(f.args.get("type"), str):
        # The ``choice`` transform types a value for ``name[x]``: write ``name<Type>`` at once.
        namespace[f"type{i}"] = f.args["type"]
        namespace[f"typed{i}"] = choice + f.args["type"]
        return [
            *out,
            "    if value.__class__ not in CONTAINERS or value:",
            f"        res[typed{i}] = value"
            if sole
            else f"        put_choice(res, choice{i}, type{i}, value)",
        ]
    if f.transform is not None:
        out.append(f"    value = transform{i}(value, rt, args{i})")
    out.append("    cls = value.__class__")
    if choice is not None:
        out += [
            "    if cls is Choice:",
            "        inner = value.value",
            "        if inner is not None and (inner.__class__ not in CONTAINERS or inner):",
            (
                f"            res[choice{i} + value.type] = inner"
                if sole
                else f"            put_choice(res, choice{i}, value.type, inner)"
            ),
            "        continue",
            # A plain boolean, integer or string completes the name as set_value would infer it.
            "    if cls in PY_CHOICE:",
            "        if cls is not str or value:",
            (
                f"            res[choice{i} + PY_CHOICE[cls]] = value"
                if sole
                else f"            put_choice(res, choice{i}, PY_CHOICE[cls], value)"
            ),
            "        continue",
        ]
    else:
        out += ["    if cls is Choice:", "        pass"]
    if simple is not None:
        out += [
            "    elif cls not in CONTAINERS or value:",
            f"        res[simple{i}] = value",
            "        continue",
            "    else:",
            "        continue",
        ]
    elif append is not None:
        out += [
            "    elif cls is not list:",
            "        if cls not in CONTAINERS or value:",
            f"            items = res.get(append{i})",
            "            if items is None:",
            f"                res[append{i}] = [value]",
            "            elif value not in items:",
            "                items.append(value)",
            "        continue",
        ]
    elif len(steps) == 2 and steps[0][1] == "[]" and steps[1][1] == "" and not with_:
        # ``name[].element`` (referenceRange[].text): a new item holding the value, as set_value does.
        namespace[f"outer{i}"], namespace[f"inner{i}"] = steps[0][0], steps[1][0]
        out += [
            "    elif cls not in CONTAINERS or value:",
            f"        items = res.get(outer{i})",
            "        if items is None:",
            f"            res[outer{i}] = [{{inner{i}: value}}]",
            "        else:",
            f"            items.append({{inner{i}: value}})",
            "        continue",
            "    else:",
            "        continue",
        ]
    out.append(f"    set_value(res, steps{i}, value, with{i})")
    return out


_STRING = DATATYPES["string"]
_CHOICE = TRANSFORMS["choice"]


def _text_lines(level: int, first_subcomponent: bool) -> list[str]:
    """Generated text of the plain-text value of ``piece`` at nesting ``level`` (no datatype, or the
    ``string`` datatype, which does not cut a whole field at its first subcomponent), unescaped and
    stripped, into ``value``: what ``_code_value`` and ``dt_string`` compute, without their calls."""
    if level == 0:
        out = ["    piece = piece.split(csep, 1)[0]"]
        if first_subcomponent:
            out += ["    if ssep:", "        piece = piece.split(ssep, 1)[0]"]
    elif level == 1:
        out = ["    if ssep:", "        piece = piece.split(ssep, 1)[0]"]
    else:
        out = []
    return [
        *out,
        "    if esc and esc in piece:",
        "        piece = unescape(piece, enc)",
        "    value = piece.strip()",
        "    if not value:",
        "        continue",
    ]


def _sole_choices(fields: list[CompiledField]) -> set[int]:
    """The fields that are the only writer of their top-level choice element ``name[x]`` in a fill
    function, write it once (no repetitions) and share no prefix with a plain element of the map: the
    fresh resource cannot hold another ``name<Type>`` then, so :func:`put_choice` has nothing to
    remove and the element is set directly."""
    static = {"resourceType", "id"}
    writers: dict[str, list[int]] = {}
    for i, f in enumerate(fields):
        name, kind = f.steps[0]
        if len(f.steps) == 1 and kind == "[x]":
            writers.setdefault(name, []).append(i)
        else:
            static.add(name)
    sole: set[int] = set()
    for name, found in writers.items():
        n = len(name)
        if len(found) != 1 or any(k.startswith(name) and k[n : n + 1].isupper() for k in static):
            continue
        f = fields[found[0]]
        if not f.repeat and not f.deferred and f.with_ is None:
            sole.add(found[0])
    return sole


def compile_plan(smap: CompiledSegmentMap) -> None:
    """The immediate fields of a segment map as one generated function (the field runners in map order,
    each behind a test of the own-segment fields that feed it), and its deferred (reference) fields.
    Only names from the map (field numbers) reach the generated text; the runners are bound, not
    written out."""
    namespace: dict[str, Any] = {
        "NULL": EXPLICIT_NULL,
        "Choice": Choice,
        "CONTAINERS": _CONTAINERS,
        "NESTED": _NESTED,
        "MEMO_TYPES": _MEMO_TYPES,
        "MEMO_MAX": MEMO_MAX,
        "clone": _clone,
        "loads": _loads,
        "freeze": _freeze,
        "put_choice": put_choice,
        "set_value": set_value,
        "put": put,
        "unescape": unescape,
        "PY_CHOICE": _PY_CHOICE,
    }
    lines = [
        "def fill(rt, index, res, fields, nf):",
        "    used = rt.used[index]",
        "    enc = rt.enc",
        "    rsep, csep, ssep, esc = enc.repetition, enc.component, enc.subcomponent, enc.escape",
        "    memo = rt.maps.memo",
        "    mkey = rt.memo_key",
        "    raw_at = rt.raw_at",
    ]
    sole = _sole_choices(smap.fields)
    for i, f in enumerate(smap.fields):
        if f.deferred:
            continue
        run_field = f.run
        if run_field is None:

            def run_field(rt: Runtime, index: int, res: dict[str, Any], f: CompiledField = f) -> None:
                apply_field(f, rt, index, res)

        namespace[f"run{i}"] = run_field
        local = f.local_fields
        if (
            f.value is not None
            and f.when is None
            and f.simple is not None
            and f.with_ is None
            and not isinstance(f.value, dict | list)
        ):  # a constant (see specialize)
            namespace[f"key{i}"], namespace[f"const{i}"] = f.simple, f.value
            lines.append(f"    res[key{i}] = const{i}")
        elif f.emit is not None and f.run is not None:
            n = int(f.sources[0].field)
            lines.append(f"    raw = fields[{n}] if nf > {n} else ''")
            lines.append("    if raw:")
            lines.append(f"        used.add({n})")
            lines += [
                "        " + line for line in _emit_lines(str(i), f, f.sources[0], namespace, i in sole)
            ]
            indent = "    "
            for k, ref in enumerate(f.sources[1:]):  # e.g. OBX-3 empty: OBR-4
                namespace[f"fb{i}_{k}"] = ref
                lines.append(f"{indent}else:")
                lines.append(f"{indent}    raw = raw_at(fb{i}_{k}, index)[0]")
                lines.append(f"{indent}    if raw:")
                lines += [
                    f"{indent}        " + line
                    for line in _emit_lines(f"{i}_{k}", f, ref, namespace, i in sole)
                ]
                indent += "    "
        elif f.write_inputs is not None and f.run is not None:
            names = []
            for k, ref in enumerate(f.inputs):
                n = int(ref.field)
                names.append((f"r{i}_{k}", n))
                lines.append(f"    r{i}_{k} = fields[{n}] if nf > {n} else ''")
            lines.append(f"    if {' or '.join(name for name, _ in names)}:")
            for name, n in names:
                lines.append(f"        if {name}:")
                lines.append(f"            used.add({n})")
            # write_inputs (see specialize), inline.
            steps = f.steps
            choice = steps[0][0] if len(steps) == 1 and steps[0][1] == "[x]" and f.with_ is None else None
            namespace.update(
                {f"fn{i}": f.segment_fn, f"args{i}": f.args, f"transform{i}": f.transform, f"f{i}": f}
            )
            namespace[f"choice{i}"] = choice
            lines.append(
                f"        made = fn{i}([{', '.join(name for name, _ in names)}], index, rt, args{i})"
            )
            lines.append("        if made is not None:")
            if f.transform is not None:
                lines.append(f"            made = transform{i}(made, rt, args{i})")
            if choice is not None:
                lines += [
                    "            if made.__class__ is Choice:",
                    "                inner = made.value",
                    "                if inner is not None and (inner.__class__ not in CONTAINERS or inner):",
                    (
                        f"                    res[choice{i} + made.type] = inner"
                        if i in sole
                        else f"                    put_choice(res, choice{i}, made.type, inner)"
                    ),
                    "            else:",
                    f"                put(res, f{i}, made)",
                ]
            else:
                lines.append(f"            put(res, f{i}, made)")
        elif local:
            test = " or ".join(f"(nf > {int(n)} and fields[{int(n)}])" for n in local)
            lines.append(f"    if {test}:")
            lines.append(f"        run{i}(rt, index, res)")
        else:
            lines.append(f"    run{i}(rt, index, res)")
    smap.deferred = tuple(f for f in smap.fields if f.deferred)
    body = lines[1:]
    lines.append("    return None")
    if smap.when is None and smap.merge_into is None:
        lines += _make_lines(smap, body, namespace)
    exec(compile("\n".join(lines), f"<segment map {smap.name}>", "exec"), namespace)
    smap.fill = namespace["fill"]
    smap.make = namespace.get("make")


def _make_lines(smap: CompiledSegmentMap, body: list[str], namespace: dict[str, Any]) -> list[str]:
    """Generated text of :func:`build` for a map without a condition or ``merge_into`` (nearly all):
    the fill function's body inline, then the id and the bookkeeping, in one call per segment."""
    namespace.update(
        {
            "SMAP": smap,
            "RES": smap.resource,
            "NAME": smap.name,
            "compute_id": smap.compute_id or (lambda rt, index: compute_id(smap, rt, index)),
            "resource_id": resource_id,
            "message_key": message_key,
        }
    )
    lines = [
        "def make(rt, index, parent):",
        "    fields = rt.fields[index]",
        "    nf = len(fields)",
        "    res = {'resourceType': RES, 'id': ''}",
        *body,
        # No business identifier: stable for this message and this segment position.
        "    rid = compute_id(rt, index) or resource_id(RES, *message_key(rt), rt.segments[index].name, str(index))",
        "    key = RES + '/' + rid",
        "    keys = rt.keys",
        "    if key in keys:",
        "        rt.warn(f'{rt.segments[index].name} at segment {index}: {key} already made by this message')",
        "        rid = resource_id(RES, rid, str(index))",
        "        key = RES + '/' + rid",
        "    res['id'] = rid",
        "    keys.add(key)",
        "    rt.made[(NAME, index)] = res",
        "    if SMAP.is_child:",
        "        siblings = rt.children.get((NAME, parent))",
        "        if siblings is None:",
        "            rt.children[(NAME, parent)] = [res]",
        "        else:",
        "            siblings.append(res)",
        "    rt.resources.append(res)",
    ]
    if smap.deferred:
        lines.append("    rt.deferred.append((res, SMAP.resolve or SMAP.deferred, index, parent))")
    if smap.required:
        lines.append("    rt.pending_required.append((res, SMAP, index, parent))")
    return lines


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
    seg_fields = rt.fields[index]
    smap.fill(rt, index, res, seg_fields, len(seg_fields))
    if smap.merge_into is not None:
        seg_name = rt.maps.segment_of_map.get(smap.merge_into, "")
        target = rt.made.get((smap.merge_into, rt.nearest(index, seg_name)))
        if target is None:
            rt.warn(f"{smap.name} at segment {index}: no {smap.merge_into} resource to merge into")
            return
        merge_into(target, res)
        return
    # No business identifier: stable for this message and this segment position.
    rid = (smap.compute_id(rt, index) if smap.compute_id is not None else compute_id(smap, rt, index)) or (
        resource_id(smap.resource, *message_key(rt), rt.segments[index].name, str(index))
    )
    key = f"{smap.resource}/{rid}"
    if key in rt.keys:
        # Two segments with the same business key in one message: keep both, keyed apart by position.
        rt.warn(f"{rt.segments[index].name} at segment {index}: {key} already made by this message")
        rid = resource_id(smap.resource, rid, str(index))
        key = f"{smap.resource}/{rid}"
    res["id"] = rid
    rt.keys.add(key)
    rt.made[(smap.name, index)] = res
    if smap.is_child:
        siblings = rt.children.get((smap.name, parent))
        if siblings is None:
            rt.children[(smap.name, parent)] = [res]
        else:
            siblings.append(res)
    rt.resources.append(res)
    if smap.deferred:
        rt.deferred.append((res, smap.resolve or smap.deferred, index, parent))
    if smap.required:
        rt.pending_required.append((res, smap, index, parent))


def drop_incomplete(rt: Runtime) -> None:
    """Resources missing a required element (after Z-segments and NTEs merged into them) are not made;
    the warning names the segment, which then also shows in the unmapped report."""
    dropped: set[str] = set()
    for res, smap, index, parent in rt.pending_required:
        if all(map(res.__contains__, smap.required)):  # nearly always: nothing to look into
            continue
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
    segment_of_map = rt.maps.segment_of_map
    segs, made, children, refs = rt.segments, rt.made, rt.children, rt._refs
    for res, fields, index, parent in rt.deferred:
        if not isinstance(fields, tuple):  # a generated resolver (see compile_resolve)
            fields(rt, res, index, parent)
            continue
        for f in fields:
            ref = f.ref
            if ref is not None:
                seg_name = segment_of_map.get(ref, "")
                at = parent if parent >= 0 and segs[parent].name == seg_name else rt.nearest(index, seg_name)
                # Only the governing segment's resource: never another patient's or another order's.
                key = (ref, at)
                if key in refs:
                    reference = refs[key]
                else:
                    target = made.get(key)
                    reference = refs[key] = (
                        None if target is None else f"{target['resourceType']}/{target['id']}"
                    )
                if reference is not None:
                    value = {"reference": reference}
                    if f.with_ is None:
                        if f.simple is not None:
                            res[f.simple] = value
                            continue
                        steps = f.steps
                        if len(steps) == 1 and steps[0][1] == "[]":  # e.g. basedOn[]
                            items = res.get(steps[0][0])
                            if items is None:
                                res[steps[0][0]] = [value]
                            elif value not in items:
                                items.append(value)
                            continue
                    set_value(res, f.steps, value, f.with_)
            elif f.children is not None:
                for child in children.get((f.children, index), ()):
                    set_value(res, f.steps, {"reference": f"{child['resourceType']}/{child['id']}"}, f.with_)


def compile_resolve(smap: CompiledSegmentMap, segment_of_map: dict[str, str]) -> None:
    """The deferred (reference) fields of a segment map as one generated function doing what
    :func:`resolve_references` does for them. Only the fields' positions reach the text; map names,
    segment names and targets are bound."""
    if not smap.deferred:
        smap.resolve = None
        return
    ns: dict[str, Any] = {"set_value": set_value, "bisect_right": bisect_right}
    lines = [
        "def resolve(rt, res, index, parent):",
        "    segs, made, refs, positions = rt.segments, rt.made, rt._refs, rt._positions",
        "    pname = segs[parent].name if parent >= 0 else None",
    ]
    for k, f in enumerate(smap.deferred):
        ns.update({f"steps{k}": f.steps, f"with{k}": f.with_})
        if f.ref is not None:
            ns.update({f"ref{k}": f.ref, f"seg{k}": segment_of_map.get(f.ref, "")})
            lines += [
                # The parent, else Runtime.nearest inline.
                f"    if pname == seg{k}:",
                "        at = parent",
                "    else:",
                f"        found = positions.get(seg{k})",
                "        if found is None:",
                "            at = -1",
                "        elif len(found) == 1 or found[0] >= index:",
                "            at = found[0]",
                "        else:",
                "            at = found[bisect_right(found, index) - 1]",
                f"    key = (ref{k}, at)",
                "    if key in refs:",
                "        reference = refs[key]",
                "    else:",
                "        target = made.get(key)",
                "        reference = refs[key] = (",
                "            None if target is None else f\"{target['resourceType']}/{target['id']}\"",
                "        )",
                "    if reference is not None:",
                "        value = {'reference': reference}",
            ]
            steps = f.steps
            if f.with_ is None and f.simple is not None:
                ns[f"simple{k}"] = f.simple
                lines.append(f"        res[simple{k}] = value")
            elif f.with_ is None and len(steps) == 1 and steps[0][1] == "[]":
                ns[f"name{k}"] = steps[0][0]
                lines += [
                    f"        items = res.get(name{k})",
                    "        if items is None:",
                    f"            res[name{k}] = [value]",
                    "        elif value not in items:",
                    "            items.append(value)",
                ]
            else:
                lines.append(f"        set_value(res, steps{k}, value, with{k})")
        elif f.children is not None:
            ns[f"children{k}"] = f.children
            if f.with_ is None and len(f.steps) == 1 and f.steps[0][1] == "[]":  # e.g. result[]
                ns[f"name{k}"] = f.steps[0][0]
                lines += [
                    f"    found = rt.children.get((children{k}, index))",
                    "    if found:",
                    f"        items = res.get(name{k})",
                    "        if items is None:",
                    f"            items = res[name{k}] = []",
                    "        for child in found:",
                    "            value = {'reference': child['resourceType'] + '/' + child['id']}",
                    "            if value not in items:",
                    "                items.append(value)",
                ]
                continue
            lines += [
                f"    for child in rt.children.get((children{k}, index), ()):",
                f"        set_value(res, steps{k}, {{'reference': f\"{{child['resourceType']}}/{{child['id']}}\"}}, with{k})",
            ]
    lines.append("    return None")
    exec(compile("\n".join(lines), "<references of a segment map>", "exec"), ns)
    smap.resolve = ns["resolve"]


def provenance(rt: Runtime, message_type: str) -> dict[str, Any]:
    """One Provenance per message (V2-to-FHIR IG MSH[Provenance]): targets every resource made, the
    sending facility as agent, the message (control id) as source entity."""
    msh = rt.segments[0]
    control_id = msh.get(10)
    # MSH routing/processing fields are consumed by intake (ACK, dispatch), the rest here.
    rt.used[0].update((3, 4, 5, 6, 7, 9, 10, 11, 12, 15, 16, 18))
    software = _software(rt)
    targets = [{"reference": f"{r['resourceType']}/{r['id']}"} for r in rt.resources]
    if software:
        targets = [t for t in targets if t["reference"] not in software]
    targets += [{"reference": key} for key in rt.extra]
    recorded = ""
    sent = msh.get(7)
    if sent:
        try:
            recorded = to_instant(sent, rt.zone)
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
    if software:
        # V2-to-FHIR IG message maps, SFT: the first SFT is the software of the sending application
        # (source), each later one software that relayed the message (derivation).
        out["entity"] += [
            {"role": "source" if k == 0 else "derivation", "what": {"reference": ref}}
            for k, ref in enumerate(software)
        ]
    if occurred:
        out = {**{k: out[k] for k in ("resourceType", "id", "target")}, "occurredDateTime": occurred, **out}
    return out


def _software(rt: Runtime) -> list[str]:
    """References to the Devices the message's SFT segments made (SFT.Device), in segment order."""
    positions = rt._positions.get("SFT")
    if not positions:
        return []
    out: list[str] = []
    for (_, index), res in rt.made.items():
        if index in positions and res.get("resourceType") == "Device" and any(r is res for r in rt.resources):
            ref = f"Device/{res['id']}"
            if ref not in out:
                out.append(ref)
    return out


# The standard's field names (reference data: a few hundred segment/field/version triples).
_field_name = lru_cache(maxsize=4096)(field_name)


def unmapped_report(rt: Runtime) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, seg in enumerate(rt.segments):
        used = rt.used[i]
        fields = rt.fields[i]
        start = 3 if seg.name in ("MSH", "FHS", "BHS") else 1
        if start == 1:
            # Outside the header a field is marked used only when it is not empty, so counting tells
            # whether anything is left: nothing, or only the set id (skipped below).
            left_count = len(fields) - 1 - fields.count("") - len(used)
            if (left_count == 0 and used) or (
                left_count == 1 and 1 not in used and len(fields) > 1 and fields[1].isdigit()
            ):
                continue
        before = len(out)
        # The non-empty fields no map used, in field order (most segments: none, so no sorting).
        left = set(compress(range(len(fields)), fields))
        left -= used
        left.discard(0)  # the segment name
        if start == 3:
            left.discard(1)
            left.discard(2)
        for n in sorted(left) if left else ():
            raw = fields[n]
            # Set IDs (SEG-1 of repeating segments) only number the segments; not data to map.
            if n == 1 and raw.isdigit():
                continue
            out.append(
                {
                    "segment": seg.name,
                    "index": i,
                    "field": n,
                    "name": _field_name(seg.name, n, rt.version or "2.5.1"),
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
        mm = maps.fallback
        if mm is None:
            raise MappingError(_no_map_text(message_type, maps), code="no-map")
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
                make = entry.make
                if make is not None:
                    make(rt, i, parent)
                else:
                    build(entry, rt, i, parent)
        last_seen[name] = i
    resolve_references(rt)
    drop_incomplete(rt)
    if mm is maps.fallback:
        header = maps.header_maps
        made = {id(res) for res in rt.resources}
        if not rt.extra and not any(
            name not in header and id(res) in made for (name, _), res in rt.made.items()
        ):
            raise MappingError(
                _no_map_text(message_type, maps) + "; no segment of it has a segment map", code="no-map"
            )
        rt.by_segment = True
        rt.warn(BY_SEGMENT)
    return rt, message_type


BY_SEGMENT = "no message map: mapped by segment"


def _no_map_text(message_type: str, maps: CompiledMaps) -> str:
    known = ", ".join(sorted(maps.messages)) if len(maps.messages) < 80 else f"{len(maps.messages)} types"
    return f"no map for message type {message_type} (maps exist for: {known})"


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
    report = unmapped_report(rt)
    if rt.by_segment:
        # First in the report: the message type itself had no map (its segments were mapped one by one).
        name = _field_name("MSH", 9, rt.version or "2.5.1")
        report.insert(
            0,
            {
                "segment": "MSH",
                "index": 0,
                "field": 9,
                "name": name,
                "value": message_type,
                "note": BY_SEGMENT,
            },
        )
    return resources, actions, report, nulls
