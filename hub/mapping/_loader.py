"""Loading ``mappings/``: YAML files validated against the schema, sender overlays merged over the base,
and everything compiled into :class:`CompiledMaps` once per (directory, overlay).

Overlay rules (``mappings/senders/<name>/``): a vocabulary merges its codes over the base table (or
replaces it with ``replace: true``); a segment or message map with ``extends`` changes the base map (its
fields replace base fields of the same target, ``remove`` drops base targets, its entries are added); a
file without ``extends`` replaces or adds a map of that name; ``sender.yaml`` sets the time zone.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from hub.errors import MappingError
from hub.hl7 import unescape
from hub.mapping._compiler import compile_id, compile_plan, compile_resolve, specialize
from hub.mapping._functions import (
    ACTIONS,
    CONDITIONS,
    DATATYPES,
    ID_FUNCTIONS,
    SEGMENT_FUNCTIONS,
    TRANSFORMS,
)
from hub.mapping._ids import resource_id
from hub.mapping._runtime import (
    CompiledEntry,
    CompiledField,
    CompiledIdRule,
    CompiledMaps,
    CompiledMessageMap,
    CompiledSegmentMap,
    Converter,
    Runtime,
    Vocab,
    parse_ref,
    parse_target,
    set_value,
)
from hub.mapping._schema import (
    Condition,
    CoverageNotes,
    DatatypeMap,
    Entry,
    FieldMap,
    IdRule,
    MessageMap,
    SegmentMap,
    SenderSettings,
    Vocabulary,
)

M = TypeVar("M", bound=BaseModel)
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it

KINDS: dict[str, type[BaseModel]] = {
    "messages": MessageMap,
    "segments": SegmentMap,
    "datatypes": DatatypeMap,
    "vocab": Vocabulary,
}


@dataclass(frozen=True, slots=True)
class Problem:
    """One fault in a mapping file, with the line it is on (1-based; 0 when unknown)."""

    file: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class MappingFileError(MappingError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems[:5]), code="invalid-map")
        self.problems = problems


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int:
    """The line of the YAML node at a pydantic error location."""
    if node is None:
        return 0
    line = node.start_mark.line + 1
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = None
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and (
                    k.value == key or (key == "with_" and k.value == "with")
                ):
                    match = v
                    line = k.start_mark.line + 1
                    break
            if match is None:
                return line
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def read_file(path: Path, model: type[M], problems: list[Problem]) -> M | None:
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.load(text, Loader=_SafeLoader)
    except (OSError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        problems.append(Problem(path, (mark.line + 1) if mark else 0, f"cannot read: {exc}"))
        return None
    if not isinstance(data, dict):
        problems.append(Problem(path, 1, "a mapping file holds one YAML mapping"))
        return None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        node = yaml.compose(text)  # only now: line numbers for the report
        for err in exc.errors():
            loc = tuple(err["loc"])
            where = ".".join(str(x) for x in loc) or "(file)"
            problems.append(Problem(path, _line_of(node, loc), f"{where}: {err['msg']}"))
        return None


@dataclass(slots=True)
class SourceSet:
    """The validated files of the base or of one overlay, by kind and name (the file's stem)."""

    messages: dict[str, tuple[Path, MessageMap]]
    segments: dict[str, tuple[Path, SegmentMap]]
    datatypes: dict[str, tuple[Path, DatatypeMap]]
    vocab: dict[str, tuple[Path, Vocabulary]]
    sender: tuple[Path, SenderSettings] | None = None
    coverage: tuple[Path, CoverageNotes] | None = None  # coverage.yaml (base only)
    # Stems of files that failed to read: references to them are not reported again.
    broken: set[str] = field(default_factory=set)


def read_dir(root: Path, problems: list[Problem]) -> SourceSet:
    out = SourceSet({}, {}, {}, {})
    for kind, model in KINDS.items():
        folder = root / kind
        if not folder.is_dir():
            continue
        table: dict[str, Any] = getattr(out, kind)
        for path in sorted(folder.glob("*.yaml")):
            parsed = read_file(path, model, problems)
            if parsed is not None:
                table[path.stem] = (path, parsed)
            else:
                out.broken.add(path.stem)
    sender_file = root / "sender.yaml"
    if sender_file.is_file():
        parsed_sender = read_file(sender_file, SenderSettings, problems)
        if parsed_sender is not None:
            out.sender = (sender_file, parsed_sender)
    coverage_file = root / "coverage.yaml"
    if coverage_file.is_file():
        parsed_notes = read_file(coverage_file, CoverageNotes, problems)
        if parsed_notes is not None:
            out.coverage = (coverage_file, parsed_notes)
    return out


def merge_overlay(base: SourceSet, overlay: SourceSet, problems: list[Problem]) -> SourceSet:
    out = SourceSet(dict(base.messages), dict(base.segments), dict(base.datatypes), dict(base.vocab))
    out.sender = overlay.sender
    out.coverage = base.coverage
    out.broken = base.broken | overlay.broken
    for name, (path, vocab) in overlay.vocab.items():
        if name in out.vocab and not vocab.replace:
            base_vocab = out.vocab[name][1]
            merged = base_vocab.model_copy(
                update={
                    "codes": {**base_vocab.codes, **vocab.codes},
                    "default": vocab.default if vocab.default is not None else base_vocab.default,
                    "system": vocab.system or base_vocab.system,
                }
            )
            out.vocab[name] = (path, merged)
        else:
            out.vocab[name] = (path, vocab)
    out.datatypes.update(overlay.datatypes)
    for name, (path, smap) in overlay.segments.items():
        if smap.extends:
            if smap.extends not in out.segments:
                problems.append(Problem(path, 1, f"extends {smap.extends!r}, which the base does not have"))
                continue
            base_map = out.segments[smap.extends][1]
            replaced = {f.target for f in smap.fields} | set(smap.remove)
            fields = [f for f in base_map.fields if f.target not in replaced] + list(smap.fields)
            merged_map = base_map.model_copy(
                update={
                    "fields": fields,
                    "id": smap.id or base_map.id,
                    "required": smap.required or base_map.required,
                    "when": smap.when or base_map.when,
                }
            )
            out.segments[smap.extends] = (path, merged_map)
        else:
            out.segments[name] = (path, smap)
    for name, (path, mmap) in overlay.messages.items():
        if mmap.extends:
            if mmap.extends not in out.messages:
                problems.append(Problem(path, 1, f"extends {mmap.extends!r}, which the base does not have"))
                continue
            base_msg = out.messages[mmap.extends][1]
            merged_msg = base_msg.model_copy(
                update={
                    "resources": [*base_msg.resources, *mmap.resources],
                    "actions": [*base_msg.actions, *mmap.actions],
                    "every_message": [*base_msg.every_message, *mmap.every_message],
                    "exclude": [*base_msg.exclude, *mmap.exclude],
                }
            )
            out.messages[mmap.extends] = (path, merged_msg)
        else:
            out.messages[name] = (path, mmap)
    return out


class _Compiler:
    def __init__(self, src: SourceSet, problems: list[Problem]) -> None:
        self.src = src
        self.problems = problems
        self.vocabs = {
            name: Vocab(
                name=name,
                codes={(k if v.case_sensitive else str(k).upper()): val for k, val in v.codes.items()},
                default=v.default,
                system=v.system,
                case_sensitive=v.case_sensitive,
            )
            for name, (_, v) in src.vocab.items()
        }
        self.converters: dict[str, Converter] = {}
        self.segment_maps: dict[str, CompiledSegmentMap] = {}
        self._building: set[str] = set()

    def fault(self, path: Path, text: str) -> None:
        quoted = text.split("'")[1] if text.count("'") >= 2 else ""
        if quoted and quoted in self.src.broken:
            return  # the broken file itself is already reported
        problem = Problem(path, _find_line(path, text), text)
        if problem not in self.problems:
            self.problems.append(problem)

    def converter(self, name: str, where: Path) -> Converter | None:
        if name in self.converters:
            return self.converters[name]
        found = self.src.datatypes.get(name)
        if found is None:
            found = next((v for v in self.src.datatypes.values() if v[1].datatype == name), None)
        if found is None:
            if name in DATATYPES:
                return DATATYPES[name]
            self.fault(where, f"unknown datatype {name!r}")
            return None
        if name in self._building:
            self.fault(where, f"datatype {name!r} refers to itself")
            return None
        self._building.add(name)
        conv = self._compile_datatype(found[0], found[1])
        self._building.discard(name)
        if conv is not None:
            self.converters[name] = conv
        return conv

    def _compile_datatype(self, path: Path, dt: DatatypeMap) -> Converter | None:
        if dt.function:
            if dt.function not in DATATYPES:
                self.fault(path, f"unknown datatype function {dt.function!r}")
                return None
            return DATATYPES[dt.function]
        comps: list[
            tuple[
                int, int, tuple[tuple[str, str], ...], Converter | None, str | None, Any, Any, dict[str, Any]
            ]
        ] = []
        for cm in dt.components:
            conv = self.converter(cm.datatype, path) if cm.datatype else None
            if cm.vocab and cm.vocab not in self.vocabs:
                self.fault(path, f"unknown vocab {cm.vocab!r}")
            transform = None
            if cm.function:
                transform = TRANSFORMS.get(cm.function)
                if transform is None:
                    self.fault(path, f"unknown transform {cm.function!r}")
            comps.append(
                (
                    cm.component or 0,
                    cm.subcomponent or 0,
                    parse_target(cm.target),
                    conv,
                    cm.vocab,
                    transform,
                    cm.value,
                    cm.args,
                )
            )
        vocabs = self.vocabs
        resource = dt.resource
        return _generate_converter(comps, vocabs, resource)

    def _whole_field(self, name: str) -> bool:
        found = self.src.datatypes.get(name) or next(
            (v for v in self.src.datatypes.values() if v[1].datatype == name), None
        )
        return bool(found and found[1].whole_field)

    def condition(self, path: Path, cond: Condition | None) -> Any:
        if cond is None:
            return None
        fn = CONDITIONS.get(cond.function)
        if fn is None:
            self.fault(path, f"unknown condition {cond.function!r}")
            return None
        return (fn, parse_ref(cond.path) if cond.path else None, list(cond.args))

    def field(self, path: Path, f: FieldMap) -> CompiledField:
        cf = CompiledField(target=f.target, steps=parse_target(f.target))
        if f.path:
            cf.sources = [parse_ref(f.path), *(parse_ref(p) for p in f.fallback)]
        cf.inputs = [parse_ref(p) for p in f.paths]
        cf.value = f.value
        cf.ref, cf.children = f.ref, f.children
        for name in (f.ref, f.children):
            if name and name not in self.src.segments:
                self.fault(path, f"unknown segment map {name!r}")
        if f.datatype:
            cf.convert = self.converter(f.datatype, path)
            cf.whole_field = cf.convert is DATATYPES["text"] or self._whole_field(f.datatype)
        if f.vocab:
            if f.vocab not in self.vocabs:
                self.fault(path, f"unknown vocab {f.vocab!r}")
            cf.vocab = f.vocab
        if f.function:
            if f.paths:
                cf.segment_fn = SEGMENT_FUNCTIONS.get(f.function)
                if cf.segment_fn is None:
                    self.fault(path, f"unknown function {f.function!r} (for paths)")
            else:
                cf.transform = TRANSFORMS.get(f.function)
                if cf.transform is None:
                    self.fault(path, f"unknown transform {f.function!r}")
        cf.args = dict(f.args)
        cf.convert_args = dict(f.args)
        cf.when = self.condition(path, f.when)
        cf.repeat = (
            f.repeat if f.repeat is not None else "[]" in f.target.split(".")[0] or f.target.endswith("[]")
        )
        cf.with_ = f.with_
        if f.target.endswith("[x]") and not (f.datatype or f.paths or f.function):
            self.fault(path, f"{f.target}: a choice element needs a datatype or function that types it")
        return cf

    @staticmethod
    def _locals(cf: CompiledField, segment: str) -> None:
        cf.deferred = cf.ref is not None or cf.children is not None
        if len(cf.steps) == 1 and cf.steps[0][1] == "":
            cf.simple = cf.steps[0][0]
        refs = cf.sources or cf.inputs
        if cf.value is None and refs and all(r.segment == segment for r in refs):
            cf.local_fields = tuple(r.field for r in refs)

    def id_rules(self, path: Path, rules: list[IdRule]) -> list[CompiledIdRule]:
        out = []
        for r in rules:
            fn = None
            if r.function:
                fn = ID_FUNCTIONS.get(r.function)
                if fn is None:
                    self.fault(path, f"unknown id function {r.function!r}")
            elif not r.keys:
                self.fault(path, "an id rule needs keys or a function")
            out.append(
                CompiledIdRule([parse_ref(k) for k in r.keys], [parse_ref(k) for k in r.extra], fn, r.scope)
            )
        return out

    def segment_map(self, name: str) -> CompiledSegmentMap | None:
        if name in self.segment_maps:
            return self.segment_maps[name]
        found = self.src.segments.get(name)
        if found is None:
            return None
        path, sm = found
        if sm.merge_into and sm.merge_into not in self.src.segments:
            self.fault(path, f"merge_into names unknown map {sm.merge_into!r}")
        fields = [self.field(path, f) for f in sm.fields]
        for cf in fields:
            self._locals(cf, sm.segment)
            cf.run = specialize(cf, sm.segment)
        compiled = CompiledSegmentMap(
            name=name,
            segment=sm.segment,
            resource=sm.resource,
            fields=fields,
            id_rules=self.id_rules(path, sm.id),
            required=list(sm.required),
            merge_into=sm.merge_into,
            when=self.condition(path, sm.when),
            reads_segments=frozenset(r.segment for cf in fields for r in (*cf.sources, *cf.inputs)),
            accumulate=sm.accumulate,
        )
        compiled.compute_id = compile_id(compiled.resource, compiled.id_rules, compiled.segment)
        compile_plan(compiled)
        self.segment_maps[name] = compiled
        return compiled

    def entries(self, path: Path, entries: list[Entry]) -> dict[str, list[CompiledEntry]]:
        by_segment: dict[str, list[CompiledEntry]] = {}
        for e in entries:
            sm = self.segment_map(e.map)
            if sm is None:
                self.fault(path, f"unknown segment map {e.map!r}")
                continue
            if sm.segment != e.segment:
                self.fault(path, f"segment map {e.map!r} maps {sm.segment}, not {e.segment}")
            by_segment.setdefault(e.segment, []).append(
                CompiledEntry(
                    e.segment,
                    sm,
                    e.first,
                    tuple(e.anchors),
                    e.parent,
                    e.reference_only,
                    None if e.reference_only else sm.make,
                    self.condition(path, e.when),
                )
            )
        return by_segment

    def auto_entries(self, listed: set[str], exclude: set[str]) -> list[Entry]:
        """The fallback's entries for every segment no entry lists that exactly one segment map serves
        (a segment with several maps, NTE or OBX, needs entries that say which applies where). A map
        whose resources another map lists (``children:``) is anchored on that map's segment, so an SPM
        after an OBR is the OBR's specimen."""
        by_segment: dict[str, list[str]] = {}
        for name, (_, sm) in self.src.segments.items():
            if name not in exclude:
                by_segment.setdefault(sm.segment, []).append(name)
        parents: dict[str, list[str]] = {}
        for _, sm in self.src.segments.values():
            for f in sm.fields:
                if f.children:
                    parents.setdefault(f.children, []).append(sm.segment)
        out = []
        for segment, names in sorted(by_segment.items()):
            if segment in listed or len(names) != 1:
                continue
            anchors = list(dict.fromkeys(parents.get(names[0], [])))
            out.append(Entry(segment=segment, map=names[0], anchors=anchors))
        return out

    def compile(self) -> CompiledMaps:
        messages: dict[str, CompiledMessageMap] = {}
        fallback: CompiledMessageMap | None = None
        every: dict[str, list[CompiledEntry]] = {}
        for name in self.src.segments:
            self.segment_map(name)
        for _name, (path, mm) in self.src.messages.items():
            resources = list(mm.resources)
            if mm.fallback:
                if fallback is not None:
                    self.fault(path, f"a second fallback map (the first is {fallback.name})")
                    continue
                for name in mm.exclude:
                    if name not in self.src.segments:
                        self.fault(path, f"exclude names unknown segment map {name!r}")
                if mm.auto:
                    resources += self.auto_entries({e.segment for e in mm.resources}, set(mm.exclude))
                every = self.entries(path, mm.every_message)
            by_segment = self.entries(path, resources)
            actions = []
            for a in mm.actions:
                if a not in ACTIONS:
                    self.fault(path, f"unknown action {a!r}")
                else:
                    actions.append(ACTIONS[a])
            cm = CompiledMessageMap(mm.message, list(mm.events), by_segment, actions)
            if mm.fallback:
                fallback = cm
            for event in mm.events:
                if event in messages:
                    self.fault(path, f"event {event} is already mapped by {messages[event].name}")
                messages[event] = cm
        # every_message entries (SFT → Device) join every map that does not list the segment itself.
        for cm in {id(m): m for m in [*messages.values(), *([fallback] if fallback else [])]}.values():
            for segment, found in every.items():
                cm.by_segment.setdefault(segment, list(found))
        header_maps = frozenset(e.map.name for found in every.values() for e in found)
        converters: dict[str, Converter] = {}
        for stem, (path, dt) in self.src.datatypes.items():
            conv = self.converter(stem, path)
            if conv is not None:
                converters[stem] = conv
                converters.setdefault(dt.datatype, conv)
        zone = self.src.sender[1].time_zone if self.src.sender else None
        if zone:
            try:
                from zoneinfo import ZoneInfo

                ZoneInfo(zone)
            except (KeyError, ValueError, OSError):
                assert self.src.sender is not None
                self.fault(self.src.sender[0], f"unknown time zone {zone!r}")
                zone = None
        segment_of_map = {n: m.segment for n, m in self.segment_maps.items()}
        for smap in self.segment_maps.values():
            compile_resolve(smap, segment_of_map)
            for f in smap.fields:
                child = self.segment_maps.get(f.children) if f.children else None
                if child is not None:
                    child.is_child = True
        return CompiledMaps(
            messages=messages,
            fallback=fallback,
            header_maps=header_maps,
            segment_maps=self.segment_maps,
            vocabs=self.vocabs,
            time_zone=zone,
            segment_of_map=segment_of_map,
            converters=converters,
        )


def _find_line(path: Path, text: str) -> int:
    """Best effort: the first line of the file mentioning the quoted name in ``text``."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return 0
    quoted = text.split("'")[1] if text.count("'") >= 2 else ""
    if quoted:
        for n, line in enumerate(lines, 1):
            if quoted in line:
                return n
    return 1


def _generate_converter(
    comps: list[
        tuple[int, int, tuple[tuple[str, str], ...], Converter | None, str | None, Any, Any, dict[str, Any]]
    ],
    vocabs: dict[str, Vocab],
    resource: str | None,
) -> Converter:
    """A datatype map (components to elements) as one generated function: the component loop of the
    interpreted converter unrolled, each component's numbers written in, its converter, vocabulary,
    transform, target and constant bound. Only component numbers reach the generated text."""
    ns: dict[str, Any] = {
        "VOCABS": vocabs,
        "RESOURCE": resource,
        "set_value": set_value,
        "as_resource": _as_resource,
        "unescape": unescape,
    }
    # Runtime.parts and Runtime.text written out: a datatype map runs for most non-empty fields.
    lines = [
        "def convert(raw, level, rt, args):",
        "    enc = rt.enc",
        "    csep, ssep, esc = enc.component, enc.subcomponent, enc.escape",
        "    parts = raw.split(csep) if level == 0 else raw.split(ssep) if level == 1 and ssep else [raw]",
        "    out = {}",
    ]
    constants: list[int] = []
    for k, (comp, sub, steps, conv, vocab, transform, const, fargs) in enumerate(comps):
        ns.update({f"steps{k}": steps, f"conv{k}": conv, f"vocab{k}": vocab, f"tr{k}": transform})
        ns.update({f"const{k}": const, f"fargs{k}": fargs})
        if const is not None:
            constants.append(k)
            continue
        comp, sub = int(comp), int(sub)
        if comp:
            lines.append(f"    piece = parts[{comp - 1}] if {comp} <= len(parts) else ''")
            if sub:
                lines += [
                    "    subs = piece.split(ssep) if level == 0 and ssep else [piece]",
                    f"    piece = subs[{sub - 1}] if {sub} <= len(subs) else ''",
                    "    plevel = level + 2",
                ]
            else:
                lines.append("    plevel = level + 1")
        else:
            lines += ["    piece = raw", "    plevel = level"]
        lines.append("    if piece and piece != '\"\"':")
        if conv is not None:
            lines.append(f"        value = conv{k}(piece, plevel, rt, fargs{k})")
        else:
            # The first part of the piece at its level, unescaped and stripped (Runtime.text/parts).
            lines += [
                "        if plevel == 0:",
                "            piece = piece.split(csep, 1)[0]",
                "        elif plevel == 1 and ssep:",
                "            piece = piece.split(ssep, 1)[0]",
                "        if esc and esc in piece:",
                "            piece = unescape(piece, enc)",
                "        value = piece.strip() or None",
            ]
        lines.append("        if value is not None:")
        indent = "            "
        if vocab is not None:
            lines += [
                f"{indent}if isinstance(value, str):",
                f"{indent}    value = VOCABS[vocab{k}].get(value) if vocab{k} in VOCABS else None",
                f"{indent}if value is not None:",
            ]
            indent += "    "
        if transform is not None:
            lines.append(f"{indent}value = tr{k}(value, rt, fargs{k})")
        key, kind = steps[0]
        if len(steps) == 1 and kind in ("", "[]"):
            ns[f"key{k}"] = key
            lines.append(f"{indent}if value.__class__ is str:")
            if kind == "":
                lines.append(f"{indent}    out[key{k}] = value")
            else:
                lines += [
                    f"{indent}    items = out.setdefault(key{k}, [])",
                    f"{indent}    if value not in items:",
                    f"{indent}        items.append(value)",
                ]
            lines += [f"{indent}else:", f"{indent}    set_value(out, steps{k}, value, None)"]
        else:
            lines.append(f"{indent}set_value(out, steps{k}, value, None)")
    lines += ["    if not out:", "        return None"]
    lines += [f"    set_value(out, steps{k}, const{k}, None)" for k in constants]
    lines += ["    if RESOURCE is None:", "        return out", "    return as_resource(rt, RESOURCE, out)"]
    exec(compile("\n".join(lines), "<datatype map>", "exec"), ns)
    convert: Converter = ns["convert"]
    return convert


def _as_resource(rt: Runtime, resource_type: str, body: dict[str, Any]) -> dict[str, Any]:
    """A datatype value that is a resource of its own (XCN → Practitioner, XON → Organization, PL →
    Location): keyed by its first identifier, else by its display within the sender."""
    display = _display(body)
    ident = (body.get("identifier") or [None])[0]
    if isinstance(ident, dict) and ident.get("value"):
        rid = resource_id(resource_type, str(ident.get("system", "")), str(ident["value"]))
    else:
        rid = resource_id(resource_type, rt.ctx.facility, display or repr(sorted(body.items())))
    rt.add_extra({"resourceType": resource_type, "id": rid, **body})
    ref: dict[str, Any] = {"reference": f"{resource_type}/{rid}"}
    if display:
        ref["display"] = display
    return ref


def _display(body: dict[str, Any]) -> str:
    name = body.get("name")
    if isinstance(name, str):
        return name
    if isinstance(name, list) and name and isinstance(name[0], dict):
        n = name[0]
        return " ".join([*n.get("prefix", []), *n.get("given", []), n.get("family", "")]).strip()
    return ""


_lock = threading.Lock()
RECHECK_SECONDS = 5.0  # how often a running worker looks for edited mapping files


@dataclass(slots=True)
class _Loaded:
    maps: CompiledMaps
    signature: tuple[int, int]
    checked_at: float
    stale_problems: list[Problem] = field(default_factory=list)


_cache: dict[tuple[str, str | None], _Loaded] = {}


def _signature(root: Path) -> tuple[int, int]:
    """(number of YAML files, newest modification time) under ``root``: changes when a map is edited."""
    count, newest = 0, 0
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.name.endswith(".yaml"):
                    count += 1
                    newest = max(newest, entry.stat().st_mtime_ns)
    return count, newest


def load_sources(root: Path, overlay: str | None, problems: list[Problem]) -> SourceSet:
    base = read_dir(root, problems)
    if overlay:
        odir = root / "senders" / overlay
        if not odir.is_dir():
            problems.append(Problem(odir, 0, f"overlay {overlay!r} does not exist"))
            return base
        base = merge_overlay(base, read_dir(odir, problems), problems)
    return base


def compile_maps(root: Path, overlay: str | None = None) -> tuple[CompiledMaps, list[Problem]]:
    problems: list[Problem] = []
    src = load_sources(root, overlay, problems)
    compiled = _Compiler(src, problems).compile()
    return compiled, problems


def load_maps(root: Path, overlay: str | None = None) -> CompiledMaps:
    """The compiled maps for ``overlay``, cached and re-read when the files change (checked every
    few seconds), so an analyst's corrected map is used by running workers without a restart. Raises
    :class:`MappingFileError` when the files are faulty and no earlier good version was loaded; after
    a good load, a faulty edit keeps the last good maps (see :func:`stale_problems`)."""
    key = (str(root), overlay)
    loaded = _cache.get(key)
    now = time.monotonic()
    if loaded is not None and now - loaded.checked_at < RECHECK_SECONDS:
        return loaded.maps
    with _lock:
        loaded = _cache.get(key)
        if loaded is not None and now - loaded.checked_at < RECHECK_SECONDS:
            return loaded.maps
        if not (root / "messages").is_dir():
            raise MappingFileError([Problem(root, 0, "no mappings here (configure HUB_MAPPINGS_DIR)")])
        signature = _signature(root)
        if loaded is not None and loaded.signature == signature:
            loaded.checked_at = now
            return loaded.maps
        compiled, problems = compile_maps(root, overlay)
        if problems:
            if loaded is None:
                raise MappingFileError(problems)
            loaded.stale_problems = problems  # keep serving the last good maps
            loaded.signature, loaded.checked_at = signature, now
            return loaded.maps
        _cache[key] = _Loaded(compiled, signature, now)
        return compiled


def stale_problems(root: Path, overlay: str | None = None) -> list[Problem]:
    """Faults of edited files that are not in use because the last good maps are kept."""
    loaded = _cache.get((str(root), overlay))
    return list(loaded.stale_problems) if loaded is not None else []


def clear_cache() -> None:
    with _lock:
        _cache.clear()


def check_all(root: Path) -> list[Problem]:
    """Every problem in the base and in every overlay (what ``hub mappings check`` reports)."""
    problems: list[Problem] = []
    if not root.is_dir():
        return [Problem(root, 0, "mappings directory does not exist")]
    _, base_problems = compile_maps(root, None)
    problems.extend(base_problems)
    senders = root / "senders"
    if senders.is_dir():
        for odir in sorted(p for p in senders.iterdir() if p.is_dir()):
            _, more = compile_maps(root, odir.name)
            problems.extend(p for p in more if p not in problems)
    return problems
