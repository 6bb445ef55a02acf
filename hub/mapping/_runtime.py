"""What the compiled maps are and the state they run on: the data model of compiled maps (fields, id
rules, segment and message maps), :class:`Runtime` (one message being mapped: its segments, the values
read, the resources made) and the value helpers every map and registry function shares (``set_value``,
``Choice``, vocabularies, ids). It sits below the registry (:mod:`hub.mapping._functions`), the compiler
(:mod:`hub.mapping._compiler`) and the engine (:mod:`hub.mapping._engine`), which all import it.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import orjson

from hub.errors import MappingError
from hub.hl7 import EXPLICIT_NULL, Encoding, Message, Segment, unescape
from hub.mapping._ids import patient_id, resource_id


class Choice:
    """A value for a choice element (``value[x]``): the FHIR type name completes the element name.

    A plain slotted class rather than a frozen dataclass: one is made for nearly every OBX, and a frozen
    dataclass's ``__init__`` pays an ``object.__setattr__`` call per attribute."""

    __slots__ = ("type", "value")

    def __init__(self, type: str, value: Any) -> None:
        self.type = type
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Choice) and (self.type, self.value) == (other.type, other.value)

    def __repr__(self) -> str:
        return f"Choice(type={self.type!r}, value={self.value!r})"


Converter = Callable[[str, int, "Runtime", dict[str, Any]], Any]


Step = tuple[str, str]  # (element name, "" | "[]" | "[x]")


Resolver = Callable[["Runtime", dict[str, Any], int, int], None]  # (rt, resource, index, parent)


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
    reads_segments: frozenset[str] = (
        frozenset()
    )  # the segments its fields read (OBR.ServiceRequest: OBR, ORC …)
    accumulate: bool = False  # segments with the same id add to one resource (see SegmentMap)


@dataclass(slots=True)
class CompiledEntry:
    segment: str
    map: CompiledSegmentMap
    first: bool
    anchors: tuple[str, ...]
    parent: str | None
    reference_only: bool = False
    make: Callable[[Runtime, int, int], None] | None = None  # the map's make, unless reference_only
    when: tuple[Callable[[str, Runtime, list[Any]], bool], PathRef | None, list[Any]] | None = None


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
        "pending_merges",
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
        # (elements, merge map, target segment index, segment index, parent): merged after the build, for
        # a target made from a later segment (an ORC's PRT into the ServiceRequest of the OBR after it).
        self.pending_merges: list[tuple[dict[str, Any], CompiledSegmentMap, int, int, int]] = []
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
    if ref is not None and getattr(fn, "whole_field", False):  # e.g. every coding system of a CWE
        return fn(rt.raw_at(ref, index, True)[0], rt, args)
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


def key_id(resource_type: str, parts: tuple[str, ...]) -> str:
    """An id from key parts; a single part starting with ``=`` is an id computed elsewhere."""
    if len(parts) == 1 and parts[0].startswith("="):
        return parts[0][1:]
    return resource_id(resource_type, *parts)
