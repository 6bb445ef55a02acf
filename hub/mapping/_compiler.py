"""The compiler of map plans: turns a compiled segment map's fields, id rules and references into
generated Python functions (``fill``, ``make``, ``compute_id``, ``resolve``) specialised on what the map
fixes, so the hot path runs no generic dispatch. Only field and component numbers reach the generated
text; everything else (converters, targets, vocabularies) is bound in the function's namespace.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from typing import Any

from hub.hl7 import EXPLICIT_NULL, Encoding, unescape
from hub.mapping._functions import DATATYPES, MEMO_MAX, TRANSFORMS
from hub.mapping._ids import resource_id
from hub.mapping._runtime import (
    _CONTAINERS,
    _MEMO_TYPES,
    _NESTED,
    _PY_CHOICE,
    Choice,
    CompiledField,
    CompiledIdRule,
    CompiledSegmentMap,
    PathRef,
    Runtime,
    _clone,
    _freeze,
    _loads,
    _translate,
    apply_field,
    compute_id,
    key_id,
    message_key,
    put,
    put_choice,
    set_value,
)


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
    if smap.when is None and smap.merge_into is None and not smap.accumulate:
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


def compile_resolve(smap: CompiledSegmentMap, segment_of_map: dict[str, str]) -> None:
    """The deferred (reference) fields of a segment map as one generated function doing what
    :func:`resolve_references` does for them. Only the fields' positions reach the text; map names,
    segment names and targets are bound."""
    if not smap.deferred or any(f.when is not None for f in smap.deferred):
        # A conditional reference (a PRT's role decides where it goes): resolve_references does it.
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
