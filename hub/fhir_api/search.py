"""FHIR search against the index tables: parsing a query into criteria, building one SQL statement per
page, keyset paging, _include/_revinclude, totals, history and the patient compartment ($everything).

Every criterion becomes ``resource.pk IN (SELECT resource_pk FROM search_<type> WHERE …)`` (on SQLite
``resource.id IN (SELECT resource_id …)``, see ``_among``; ``NOT IN`` for ``:not`` and ``:missing``);
repeated parameters AND, comma-separated values OR. Pages are cut by keyset
on the sort keys plus the id, carried in an opaque ``_cursor``, so a page link neither skips nor repeats
rows while resources are added. A Patient reference whose target is a golden Patient also matches every
source Patient the golden record lists under ``link`` (type ``seealso``).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    DateTime,
    Double,
    String,
    and_,
    bindparam,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
    tuple_,
    union,
    union_all,
)
from sqlalchemy.orm import Session

from hub.errors import BadRequest, Gone, NotFound
from hub.fhir.types import is_resource_type
from hub.store.models import (
    Resource,
    ResourceVersion,
    SearchDate,
    SearchNumber,
    SearchQuantity,
    SearchReference,
    SearchString,
    SearchToken,
    SearchUri,
)
from hub.store.search_params import (
    ALIASES,
    CLINICAL_DATE,
    COMPOSITE,
    DATE,
    MAX_DATE,
    MIN_DATE,
    NUMBER,
    QUANTITY,
    REFERENCE,
    REGISTRY,
    SPECIAL,
    STRING,
    TOKEN,
    URI,
    SearchParam,
    date_range,
    normalize,
    params_of,
    parse_reference,
    stored_as,
)

DEFAULT_COUNT = 20
MAX_COUNT = 1000
EVERYTHING_DEFAULT_COUNT = 1000
MAX_ITERATE = 5

CONTROL_PARAMS = frozenset(
    {
        "_count",
        "_sort",
        "_include",
        "_revinclude",
        "_summary",
        "_elements",
        "_total",
        "_cursor",
        "_format",
        "_pretty",
    }
)
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
MODIFIERS: dict[str, frozenset[str]] = {
    TOKEN: frozenset({"not", "text", "missing", "of-type"}),
    STRING: frozenset({"exact", "contains", "missing"}),
    DATE: frozenset({"missing"}),
    REFERENCE: frozenset({"missing", "identifier"}),  # plus a resource type (subject:Patient)
    QUANTITY: frozenset({"missing"}),
    NUMBER: frozenset({"missing"}),
    URI: frozenset({"below", "above", "missing"}),
    COMPOSITE: frozenset(),
    SPECIAL: frozenset({"missing", "not"}),
}
# Core columns, not ORM attributes: a search builds dozens of comparisons per request, and an ORM
# attribute's comparison costs a layer of dispatch more for the same SQL.
INDEX_MODEL: dict[str, Any] = {
    TOKEN: SearchToken.__table__.c,
    STRING: SearchString.__table__.c,
    DATE: SearchDate.__table__.c,
    REFERENCE: SearchReference.__table__.c,
    QUANTITY: SearchQuantity.__table__.c,
    NUMBER: SearchNumber.__table__.c,
    URI: SearchUri.__table__.c,
}
_TOKEN = INDEX_MODEL[TOKEN]
_DATE = INDEX_MODEL[DATE]
_REF = INDEX_MODEL[REFERENCE]
SORTABLE = (TOKEN, STRING, DATE, NUMBER, QUANTITY, URI, SPECIAL)
_TYPE_RE = re.compile(r"^[A-Z][A-Za-z]{1,63}$")
R = Resource.__table__.c


def check_type(resource_type: str) -> str:
    if not _TYPE_RE.match(resource_type) or not is_resource_type(resource_type):
        raise NotFound(f"{resource_type[:64]} is not a FHIR R4 resource type")
    return resource_type


@dataclass(slots=True)
class Row:
    resource_type: str
    id: str
    pk: int  # resource.pk: _include reads the references of a page by it
    content: bytes
    mode: str = "match"


@dataclass(slots=True)
class Page:
    matches: list[Row]
    included: list[Row]
    total: int | None
    next_cursor: str | None
    issues: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Query:
    """A parsed search: criteria (AND of OR-lists) and the result controls."""

    resource_type: str
    conditions: list[ColumnElement[bool]] = field(default_factory=list)
    sort: list[tuple[str, bool]] = field(default_factory=list)  # (param name, descending)
    count: int = DEFAULT_COUNT
    cursor: list[Any] | None = None
    include: list[tuple[str, bool]] = field(default_factory=list)  # (value, iterate)
    revinclude: list[tuple[str, bool]] = field(default_factory=list)
    summary: str | None = None
    elements: list[str] = field(default_factory=list)
    total: str = "none"
    issues: list[str] = field(default_factory=list)
    driver: Driver | None = None


@dataclass(slots=True, frozen=True)
class Driver:
    """A search's first criterion referencing one Patient (``patient=…``, a golden Patient's sources
    included), whose matches an id-ordered page walks straight off ``ix_search_reference_target``, one
    range per target id, testing the other criteria as it goes: the page stops at its last match
    instead of probing every candidate (694 for the bench's golden Patient) and then sorting."""

    condition: ColumnElement[bool]  # the criterion as the other criteria are (for counts and _sort)
    param: str
    target_type: str
    target_ids: tuple[str, ...]


# --- parsing ------------------------------------------------------------------------------------------


def split_values(raw: str) -> list[str]:
    """Comma-separated OR values, honouring ``\\,`` escapes."""
    parts = re.split(r"(?<!\\),", raw)
    return [p.replace("\\,", ",").replace("\\$", "$").replace("\\|", "|") for p in parts]


def parse_query(
    session: Session, resource_type: str, params: Sequence[tuple[str, str]], *, strict: bool = False
) -> Query:
    q = Query(resource_type)
    defs = params_of(resource_type)
    for name, raw in params:
        if raw == "":
            continue  # R4 3.1.1.5: a parameter with an empty value is ignored
        if name in CONTROL_PARAMS or name.split(":")[0] in ("_include", "_revinclude"):
            _control(q, name, raw)
            continue
        if name.startswith("_has:"):
            q.conditions.append(_has(session, resource_type, name, raw))
            continue
        base, _, chain = name.partition(".")
        pname, _, modifier = base.partition(":")
        param = defs.get(pname)
        if param is None:
            msg = f"unknown search parameter {pname!r} for {resource_type}"
            if strict:
                raise BadRequest(msg, code="not-supported")
            q.issues.append(msg + " was ignored")
            continue
        if chain:
            q.conditions.append(_chain(session, resource_type, param, modifier, chain, raw))
            continue
        driver = None if q.driver is not None else _driver(session, resource_type, param, modifier, raw)
        if driver is not None:
            q.driver = driver
            q.conditions.append(driver.condition)
        else:
            q.conditions.append(criterion(session, resource_type, param, modifier, raw, R))
    _check_includes(q, strict)
    return q


def _check_includes(q: Query, strict: bool) -> None:
    """An ``_include``/``_revinclude`` naming an unknown type or no reference parameter of it: 400 under
    ``handling=strict``, else left out with a warning in the Bundle (never a silent empty include)."""
    for label, specs in (("_include", q.include), ("_revinclude", q.revinclude)):
        kept = []
        for spec, iterate in specs:
            problem = _include_problem(spec)
            if problem is None:
                kept.append((spec, iterate))
                continue
            msg = f"{label} {spec[:100]!r}: {problem}"
            if strict:
                raise BadRequest(msg, code="not-supported")
            q.issues.append(msg + "; ignored")
        specs[:] = kept


def _include_problem(spec: str) -> str | None:
    if spec == "*":
        return None
    parts = spec.split(":")
    if len(parts) not in (2, 3):
        return "expected Type:parameter[:TargetType]"
    source, name = parts[0], parts[1]
    if not _TYPE_RE.match(source) or not is_resource_type(source):
        return f"{source[:64]} is not a resource type"
    if name != "*":
        param = params_of(source).get(name)
        if param is None or param.type != REFERENCE:
            return f"{source} has no reference search parameter {name[:64]!r}"
    if len(parts) == 3 and not (_TYPE_RE.match(parts[2]) and is_resource_type(parts[2])):
        return f"{parts[2][:64]} is not a resource type"
    return None


def _driver(session: Session, rtype: str, param: SearchParam, modifier: str, raw: str) -> Driver | None:
    """The criterion ``param[:modifier]=raw`` as a :class:`Driver` when it is a reference to one Patient
    (a plain or type-modified reference parameter with one value); None otherwise. Only a Patient: a
    patient's records are few, while a Practitioner or an Organization may be referenced by a hundred
    thousand resources, too many to walk when another criterion is the selective one."""
    values = split_values(raw)
    if param.type != REFERENCE or len(values) != 1 or (modifier and not _TYPE_RE.match(modifier)):
        return None
    targets = _reference_targets(session, param, modifier, values[0])
    if targets is None or targets[0] != "Patient":
        return None
    ttype, ids = targets
    condition = _among(
        session,
        R,
        _REF,
        _REF.resource_type == rtype,
        _rows_of(_REF, rtype, param.name),
        _target_condition(_REF, ttype, ids),
    )
    return Driver(condition, param.name, ttype, tuple(ids))


def _control(q: Query, name: str, raw: str) -> None:
    if name == "_count":
        try:
            count = int(raw)
        except ValueError as exc:
            raise BadRequest("_count must be an integer") from exc
        if count < 0:
            raise BadRequest(f"_count must be between 0 and {MAX_COUNT}")
        q.count = min(count, MAX_COUNT)
    elif name == "_sort":
        for key in raw.split(","):
            desc = key.startswith("-")
            key = key.lstrip("-")
            param = params_of(q.resource_type).get(key)
            if param is None or param.type not in SORTABLE:
                raise BadRequest(f"cannot sort {q.resource_type} by {key!r}")
            q.sort.append((key, desc))
    elif name.startswith("_include") or name.startswith("_revinclude"):
        base, _, mod = name.partition(":")
        if mod not in ("", "iterate", "recurse"):
            raise BadRequest(f"unsupported modifier {name}")
        target = q.include if base == "_include" else q.revinclude
        target.extend((v, mod != "") for v in raw.split(",") if v)
    elif name == "_summary":
        if raw not in ("true", "false", "count", "text", "data"):
            raise BadRequest(f"_summary must be true, false, count, text or data, not {raw!r}")
        q.summary = None if raw == "false" else raw
    elif name == "_elements":
        q.elements.extend(e.strip() for e in raw.split(",") if e.strip())
    elif name == "_total":
        if raw not in ("none", "estimate", "accurate"):
            raise BadRequest(f"_total must be none, estimate or accurate, not {raw!r}")
        q.total = raw
    elif name == "_cursor":
        q.cursor = decode_cursor(raw)


def encode_cursor(values: list[Any]) -> str:
    plain = [v.isoformat() if isinstance(v, datetime) else v for v in values]
    return base64.urlsafe_b64encode(orjson.dumps(plain)).decode().rstrip("=")


def decode_cursor(raw: str) -> list[Any]:
    try:
        values = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise BadRequest("the paging cursor is not valid") from exc
    if not isinstance(values, list):
        raise BadRequest("the paging cursor is not valid")
    return values


# --- criteria -----------------------------------------------------------------------------------------


def criterion(
    session: Session,
    rtype: str,
    param: SearchParam,
    modifier: str,
    raw: str,
    res: Any,
) -> Any:
    """The condition that the resource of ``rtype`` whose row has the columns ``res`` (of ``resource``
    or of an alias of it) matches ``param[:modifier]=raw``."""
    allowed = MODIFIERS[param.type]
    is_type_modifier = param.type == REFERENCE and bool(_TYPE_RE.match(modifier))
    if modifier and modifier not in allowed and not is_type_modifier:
        raise BadRequest(f"modifier :{modifier} is not supported on {param.type} parameter {param.name}")
    values = split_values(raw)
    if modifier == "missing":
        if raw not in ("true", "false"):
            raise BadRequest(f"{param.name}:missing must be true or false")
        if param.type in (SPECIAL, COMPOSITE):
            return false() if raw == "true" else true()
        model = INDEX_MODEL[param.type]
        has = _among(session, res, model, model.resource_type == rtype, _rows_of(model, rtype, param.name))
        return not_(has) if raw == "true" else has
    if param.type == SPECIAL:
        cond = _special(param, values, res)
        return not_(cond) if modifier == "not" else cond
    if param.type == COMPOSITE:
        return or_(*(_composite(session, rtype, param, v, res) for v in values))
    if modifier in ("of-type", "identifier"):
        return _among(
            session,
            res,
            _TOKEN,
            _TOKEN.resource_type == rtype,
            _rows_of(_TOKEN, rtype, param.name, f":{modifier}"),
            or_(*(_modifier_token(modifier, v) for v in values)),
        )
    model = INDEX_MODEL[param.type]
    ors = [_value_condition(session, model, param, modifier, v) for v in values]
    matching = _among(
        session, res, model, model.resource_type == rtype, _rows_of(model, rtype, param.name), or_(*ors)
    )
    return not_(matching) if modifier == "not" else matching


def _among(session: Session, res: Any, model: Any, *where: Any) -> Any:
    """The condition that the resource whose row has the columns ``res`` owns one of the rows of
    ``model``'s table that ``where`` selects (rows of the resource's own type). PostgreSQL gets the pk,
    which lets it choose, from its statistics, between probing each candidate's rows (the probe indexes
    lead with the pk, ``ix_resource_live`` includes it) and listing the matches. SQLite plans without
    statistics and always lists the matches: given their pks under a page's ORDER BY id it tests every
    live row of the type against the list, in id order (a seek by pk would need a sort); given their
    ids, which the value indexes hold after the pk, it seeks ``ix_resource_live`` once per id, in order."""
    if session.get_bind().dialect.name == "sqlite":
        return res.id.in_(select(model.resource_id).where(*where))
    return res.pk.in_(select(model.resource_pk).where(*where))


def _rows_of(model: Any, rtype: str, name: str, suffix: str = "") -> Any:
    """The condition that a row of ``model``'s table is one of ``rtype``'s parameter ``name`` (``suffix``:
    its ``:of-type`` / ``:identifier`` token rows). A parameter whose values other parameters hold
    (``search_params.stored_as``: ``patient`` is ``subject`` with a Patient target) reads their rows."""
    stored = stored_as(rtype, name)
    cond = model.param == stored.param + suffix
    types = stored.target_types
    if types and not suffix:
        cond = and_(cond, model.target_type == types[0] if len(types) == 1 else model.target_type.in_(types))
    return cond


def _modifier_token(modifier: str, v: str) -> Any:
    """``identifier:of-type=type-system|type-code|value``; ``subject:identifier=system|value``."""
    if modifier == "of-type":
        parts = v.split("|")
        if len(parts) != 3 or not parts[2]:
            raise BadRequest(f":of-type takes system|code|value, not {v!r}")
        return and_(_TOKEN.system == f"{parts[0]}|{parts[1]}", _TOKEN.code == parts[2])
    system, bar, code = v.rpartition("|")
    return and_(_TOKEN.system == system, _TOKEN.code == code) if bar else _TOKEN.code == v


def _special(param: SearchParam, values: list[str], res: Any) -> Any:
    if param.name == "_id":
        return res.id.in_(values)
    last_updated = res.last_updated  # of the main query's row, the chain's or the _has source's
    conds = []
    for v in values:
        prefix, value = _prefix(v)
        rng = date_range(value)
        if rng is None:
            raise BadRequest(f"_lastUpdated value {v!r} is not a date")
        conds.append(_date_compare(prefix, rng, last_updated, last_updated))
    return or_(*conds)


def _composite(session: Session, rtype: str, param: SearchParam, raw: str, res: Any) -> Any:
    parts = re.split(r"(?<!\\)\$", raw)
    if len(parts) != len(param.components):
        raise BadRequest(f"{param.name} takes {len(param.components)} $-separated parts")
    defs = params_of(rtype)
    return and_(
        *(
            criterion(session, rtype, defs[name], "", part.replace(",", "\\,"), res)
            for name, part in zip(param.components, parts, strict=True)
        )
    )


def _prefix(value: str) -> tuple[str, str]:
    if len(value) > 2 and value[:2] in PREFIXES and not value[2].isalpha():
        return value[:2], value[2:]
    return "eq", value


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _value_condition(session: Session, model: Any, param: SearchParam, modifier: str, v: str) -> Any:
    if param.type == TOKEN:
        if modifier == "text":
            return model.text.like("%" + _like_escape(normalize(v)) + "%", escape="\\")
        if "|" in v:
            system, _, code = v.partition("|")
            if not code:
                return model.system == system
            return and_(model.system == system, model.code == code)
        return model.code == v
    if param.type == STRING:
        if modifier == "exact":
            return model.exact == v
        if modifier == "contains":
            return model.value.like("%" + _like_escape(normalize(v)) + "%", escape="\\")
        prefix = normalize(v)
        cond = model.value.like(_like_escape(prefix) + "%", escape="\\")
        if session.get_bind().dialect.name == "sqlite" and prefix:
            # SQLite uses an index for LIKE only on NOCASE columns; the byte-order range lets it seek.
            cond = and_(model.value >= prefix, model.value < prefix + "\U0010ffff", cond)
        return cond
    if param.type == DATE:
        prefix, value = _prefix(v)
        rng = date_range(value)
        if rng is None:
            raise BadRequest(f"{param.name}: {v!r} is not a FHIR date")
        return _date_compare(prefix, rng, model.low, model.high)
    if param.type == REFERENCE:
        return _reference_condition(session, model, param, modifier, v)
    if param.type in (QUANTITY, NUMBER):
        number, _, unit = v.partition("|")
        prefix, number = _prefix(number)
        cond = _number_compare(prefix, number, model.value, param.name)
        if param.type == QUANTITY and unit:
            system, _, code = unit.partition("|")
            if system:
                cond = and_(cond, model.system == system, model.code == code)
            elif code:
                cond = and_(cond, or_(model.code == code, model.unit == code))
        return cond
    if param.type == URI:
        if modifier == "below":
            return model.value.like(_like_escape(v) + "%", escape="\\")
        if modifier == "above":
            return literal(v, String).like(model.value + "%")
        return model.value == v
    raise BadRequest(f"parameter type {param.type} is not searchable")


def _date_compare(prefix: str, rng: tuple[datetime, datetime], low: Any, high: Any) -> Any:
    """R4 3.1.1.4.1.1: compare the target range [low, high] with the parameter range [pl, ph]."""
    pl, ph = rng
    contained = and_(low >= pl, high <= ph)
    if prefix == "eq":
        return contained
    if prefix == "ne":
        return not_(contained)
    if prefix == "gt":
        return high > ph
    if prefix == "lt":
        return low < pl
    if prefix == "ge":
        return or_(high > ph, contained)
    if prefix == "le":
        return or_(low < pl, contained)
    if prefix == "sa":
        return low > ph
    if prefix == "eb":
        return high < pl
    # ap: within 10% of the distance from now, at least a day either side
    now = datetime.now(UTC)
    delta = max(abs(now - pl) / 10, timedelta(days=1))
    return and_(low <= ph + delta, high >= pl - delta)


def _number_compare(prefix: str, raw: str, col: Any, name: str) -> Any:
    try:
        n = float(raw)
    except ValueError as exc:
        raise BadRequest(f"{name}: {raw!r} is not a number") from exc
    # eq/ne use the implicit range of the value's precision (R4: 100 means [99.5, 100.5)).
    decimals = len(raw.split(".")[1]) if "." in raw and "e" not in raw.lower() else 0
    half = 0.5 * 10**-decimals
    if prefix == "eq":
        return and_(col >= n - half, col < n + half)
    if prefix == "ne":
        return or_(col < n - half, col >= n + half)
    if prefix in ("gt", "sa"):
        return col > n
    if prefix in ("lt", "eb"):
        return col < n
    if prefix == "ge":
        return col >= n
    if prefix == "le":
        return col <= n
    spread = abs(n) * 0.1
    return and_(col >= n - spread, col <= n + spread)


def _reference_condition(session: Session, model: Any, param: SearchParam, modifier: str, v: str) -> Any:
    targets = _reference_targets(session, param, modifier, v)
    if targets is None:
        return false()
    return _target_condition(model, *targets)


def _reference_targets(
    session: Session, param: SearchParam, modifier: str, v: str
) -> tuple[str, list[str]] | None:
    """The target type ("" when the value does not tell) and ids a reference value matches (a golden
    Patient brings its linked sources); None when a type modifier contradicts the value's type."""
    if "/" in v:
        ttype, tid = parse_reference(v)
    else:
        ttype, tid = (modifier if modifier else (param.targets[0] if len(param.targets) == 1 else "")), v
    if modifier and ttype and modifier != ttype:
        return None
    ids = [tid]
    if ttype in ("Patient", ""):
        ids = expand_patients(session, [tid])
    return ttype, ids


def _target_condition(model: Any, ttype: str, ids: list[str]) -> Any:
    cond = model.target_id.in_(ids) if len(ids) > 1 else model.target_id == ids[0]
    return and_(model.target_type == ttype, cond) if ttype else cond


def expand_patients(session: Session, ids: Iterable[str]) -> list[str]:
    """The ids plus every source Patient a golden Patient among them lists as ``link`` ``seealso``."""
    ids = list(dict.fromkeys(ids))
    out = list(ids)
    for (content,) in session.connection().execute(_LIVE_PATIENTS, {"ids": ids}):
        _add_linked_sources(out, content)
    return out


# Built once (expand_patients runs for every patient criterion): executing it skips building the statement.
_LIVE_PATIENTS = select(R.content).where(
    R.resource_type == "Patient", R.id.in_(bindparam("ids", expanding=True)), R.deleted.is_(False)
)


def _add_linked_sources(out: list[str], content: bytes) -> None:
    """Append to ``out`` the source Patients a golden Patient's stored bytes list as ``seealso``."""
    if b'"seealso"' not in content:
        return
    for link in orjson.loads(content).get("link") or []:
        if link.get("type") == "seealso":
            ref = (link.get("other") or {}).get("reference", "")
            ttype, tid = parse_reference(ref)
            if ttype == "Patient" and tid not in out:
                out.append(tid)


def _chain(session: Session, rtype: str, param: SearchParam, modifier: str, chain: str, raw: str) -> Any:
    if param.type != REFERENCE:
        raise BadRequest(f"{param.name} is not a reference parameter and cannot be chained")
    if "." in chain:
        raise BadRequest("only one level of chaining is supported")
    cname, _, cmod = chain.partition(":")
    if modifier:
        targets: Sequence[str] = [modifier]
    elif param.targets:
        targets = param.targets
    else:
        targets = [t for t, entry in REGISTRY.items() if cname in entry.params]
    ors = []
    for target in targets:
        cparam = params_of(target).get(cname)
        if cparam is None:
            continue
        chained = Resource.__table__.alias("chained")
        inner = select(chained.c.id).where(
            chained.c.resource_type == target,
            chained.c.deleted.is_(False),
            criterion(session, target, cparam, cmod, raw, chained.c),
        )
        if target == "Patient":
            # Resolve now so a golden Patient found by the chain brings its linked sources along.
            found = list(session.execute(inner.limit(MAX_COUNT)).scalars())
            ids: Any = expand_patients(session, found) if found else []
        else:
            ids = inner
        ors.append(
            and_(
                _REF.target_type == target,
                _REF.target_id.in_(ids),
            )
        )
    if not ors:
        raise BadRequest(f"no target of {rtype}.{param.name} has a search parameter {cname!r}")
    return _among(session, R, _REF, _REF.resource_type == rtype, _rows_of(_REF, rtype, param.name), or_(*ors))


def _has(session: Session, rtype: str, name: str, raw: str) -> Any:
    """``_has:Observation:patient:code=X``: resources of ``rtype`` that an Observation matching
    ``code=X`` references through its ``patient`` parameter (one level)."""
    parts = name.split(":")
    if len(parts) < 4:
        raise BadRequest(f"{name}: expected _has:Type:reference:parameter")
    other, ref_name, pname = parts[1], parts[2], parts[3]
    mod = parts[4] if len(parts) > 4 else ""
    check_type(other)
    odefs = params_of(other)
    ref_param, cparam = odefs.get(ref_name), odefs.get(pname)
    if ref_param is None or ref_param.type != REFERENCE or cparam is None:
        raise BadRequest(f"{name}: {other} has no reference parameter {ref_name!r} or parameter {pname!r}")
    source = Resource.__table__.alias("has_source")
    matching = select(source.c.pk).where(
        source.c.resource_type == other,
        source.c.deleted.is_(False),
        criterion(session, other, cparam, mod, raw, source.c),
    )
    return R.id.in_(
        select(_REF.target_id).where(
            _REF.resource_pk.in_(matching),  # of type ``other``: read off ix_search_reference_probe alone
            _rows_of(_REF, other, ref_name),
            _REF.target_type == rtype,
        )
    )


# --- running a search ---------------------------------------------------------------------------------


def _sort_expr(rtype: str, name: str, desc: bool) -> Any:
    if name == "_id":
        return R.id
    if name == "_lastUpdated":
        return R.last_updated
    param = params_of(rtype)[name]
    model = INDEX_MODEL[param.type]
    col: Any
    sentinel: Any
    typ: Any
    if param.type == TOKEN:
        col, sentinel, typ = model.code, "", String
    elif param.type in (STRING, URI):
        col, sentinel, typ = model.value, "", String
    elif param.type == DATE:
        col = model.high if desc else model.low
        sentinel, typ = (MIN_DATE if desc else MAX_DATE), DateTime(timezone=True)
    else:  # NUMBER, QUANTITY
        col, sentinel, typ = model.value, (-1e300 if desc else 1e300), Double
    agg = func.max(col) if desc else func.min(col)
    sub = select(agg).where(model.resource_pk == R.pk, _rows_of(model, rtype, name)).scalar_subquery()
    return func.coalesce(sub, literal(sentinel, typ))


def _cursor_value(v: Any) -> Any:
    if isinstance(v, str) and len(v) >= 19 and v[4] == "-" and v[10] == "T":
        try:
            dt = datetime.fromisoformat(v)
        except ValueError:
            return v
        return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    return v


def _plain(v: Any) -> Any:
    if isinstance(v, datetime) and v.tzinfo is None:
        return v.replace(tzinfo=UTC)
    return v


def search(session: Session, q: Query) -> Page:
    base_conds = [R.resource_type == q.resource_type, R.deleted.is_(False), *q.conditions]
    total: int | None = None
    if q.total in ("accurate", "estimate") or q.summary == "count" or q.count == 0:
        total = session.execute(
            select(func.count()).select_from(Resource.__table__).where(*base_conds)
        ).scalar_one()
    if q.summary == "count" or q.count == 0:
        return Page([], [], total, None, q.issues)

    if not q.sort or (len(q.sort) == 1 and q.sort[0][0] == "_id"):
        stmt = _id_page(q, base_conds)
    else:
        stmt = _sorted_page(q, base_conds)
    rows = session.execute(stmt).all()
    next_cursor = None
    if len(rows) > q.count:
        rows = rows[: q.count]
        next_cursor = encode_cursor([_plain(v) for v in rows[-1][3:]])
    elif q.cursor is None and total is None:
        total = len(rows)  # the whole result fits on the first page: its size is the total
    matches = [Row(q.resource_type, r.id, r.pk, r.content) for r in rows]
    included = resolve_includes(session, matches, q.include, q.revinclude)
    return Page(matches, included, total, next_cursor, q.issues)


def _id_page(q: Query, base_conds: list[Any]) -> Any:
    """A page in id order (the default): the ids first, from indexes alone (``ix_resource_live`` and the
    covering probe indexes, walked in id order, no resource row read), then the content of those ids
    only. One statement; the inner LIMIT keeps PostgreSQL from flattening the two steps."""
    desc = bool(q.sort) and q.sort[0][1]
    conds = list(base_conds)
    after: Any = None
    if q.cursor is not None:
        if len(q.cursor) != 1:
            raise BadRequest("the paging cursor does not fit this search")
        after = q.cursor[0]
        conds.append(R.id < after if desc else R.id > after)
    if q.driver is None:
        ids = (
            select(R.id.label("id"))
            .where(*conds)
            .order_by(R.id.desc() if desc else R.id.asc())
            .limit(q.count + 1)
            .subquery("page_ids")
        )
    else:
        ids = _driven_ids(q, q.driver, [c for c in conds if c is not q.driver.condition], after, desc)
    page = Resource.__table__.alias("page")
    return (
        select(page.c.id, page.c.content, page.c.pk, page.c.id.label("k0"))
        .join_from(page, ids, and_(page.c.resource_type == q.resource_type, page.c.id == ids.c.id))
        .order_by(page.c.id.desc() if desc else page.c.id.asc())
    )


def _driven_ids(q: Query, driver: Driver, conds: list[Any], after: Any, desc: bool) -> Any:
    """The page's ids walked in id order off the driver's reference ranges (one index-only range scan
    per target id, merged in id order, duplicates dropped), each joined to its live row and tested
    against the other criteria, until the page is full."""
    branches = []
    for tid in driver.target_ids:
        where = [
            _REF.target_id == tid,
            _REF.target_type == driver.target_type,
            _rows_of(_REF, q.resource_type, driver.param),
            _REF.resource_type == q.resource_type,
        ]
        if after is not None:
            where.append(_REF.resource_id < after if desc else _REF.resource_id > after)
        branches.append(select(_REF.resource_id.label("id")).where(*where))
    compound: Any = union_all  # (typed Any: mypy 2.4 crashes inferring union_all()'s row type)
    walk = (branches[0] if len(branches) == 1 else compound(*branches)).subquery("walk")
    # Ordered here too, so that PostgreSQL drops duplicates off the ordered ranges (Unique) and stops at
    # the page's end, instead of hashing every candidate, probing them all, then sorting the matches.
    order = walk.c.id.desc() if desc else walk.c.id.asc()
    driven = select(walk.c.id).distinct().order_by(order).subquery("driven")
    return (
        select(driven.c.id.label("id"))
        .join_from(driven, Resource.__table__, and_(R.resource_type == q.resource_type, R.id == driven.c.id))
        .where(*conds)
        .order_by(driven.c.id.desc() if desc else driven.c.id.asc())
        .limit(q.count + 1)
        .subquery("page_ids")
    )


def _sorted_page(q: Query, base_conds: list[Any]) -> Any:
    """A page under ``_sort``: the sort keys of every match, keyset-cut after the cursor."""
    keys: list[tuple[Any, bool]] = [(_sort_expr(q.resource_type, n, d), d) for n, d in q.sort]
    if not any(n == "_id" for n, _ in q.sort):
        keys.append((R.id, False))
    labelled = [expr.label(f"k{i}") for i, (expr, _) in enumerate(keys)]
    inner = select(R.id, R.content, R.pk, *labelled).where(*base_conds).subquery()
    kcols = [inner.c[f"k{i}"] for i in range(len(keys))]
    stmt = select(inner.c.id, inner.c.content, inner.c.pk, *kcols)
    if q.cursor is not None:
        if len(q.cursor) != len(keys):
            raise BadRequest("the paging cursor does not fit this search")
        values = [_cursor_value(v) for v in q.cursor]
        ors = []
        for i, (col, (_, desc)) in enumerate(zip(kcols, keys, strict=True)):
            eqs = [kcols[j] == values[j] for j in range(i)]
            ors.append(and_(*eqs, col < values[i] if desc else col > values[i]))
        stmt = stmt.where(or_(*ors))
    stmt = stmt.order_by(*(c.desc() if d else c.asc() for c, (_, d) in zip(kcols, keys, strict=True)))
    return stmt.limit(q.count + 1)


# Current resources of one type by id (the Practitioners … a page of $everything points at): built once,
# so a page pays for executing it only (no expression building, no cache-key walk).
_BY_IDS = select(R.resource_type, R.id, R.pk, R.content).where(
    R.resource_type == bindparam("rtype"),
    R.id.in_(bindparam("ids", expanding=True)),
    R.deleted.is_(False),
)


def _fetch(session: Session, keys: Iterable[tuple[str, str]]) -> list[Row]:
    """Current resources by (type, id): one round trip per type and 500 ids."""
    by_type: dict[str, set[str]] = {}
    for t, i in keys:
        by_type.setdefault(t, set()).add(i)
    conn = session.connection()
    out: list[Row] = []
    for t, ids in sorted(by_type.items()):
        for chunk in _chunks(sorted(ids), 500):
            rows = conn.execute(_BY_IDS, {"rtype": t, "ids": chunk})
            out.extend(Row(rtype, rid, pk, content, "include") for rtype, rid, pk, content in rows)
    return out


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def resolve_includes(
    session: Session,
    matches: list[Row],
    include: list[tuple[str, bool]],
    revinclude: list[tuple[str, bool]],
) -> list[Row]:
    if not (include or revinclude) or not matches:
        return []
    seen = {(r.resource_type, r.id) for r in matches}
    included: list[Row] = []
    frontier = matches
    for depth in range(MAX_ITERATE):
        wanted: list[Any] = []
        specs = [spec for spec, iterate in include if depth == 0 or iterate]
        if specs:
            wanted += _forward(frontier, specs)
        for spec, iterate in revinclude:
            if depth > 0 and not iterate:
                continue
            wanted += _reverse(session, frontier, spec)
        fresh = [r for r in _fetch_referenced(session, wanted) if (r.resource_type, r.id) not in seen]
        if not fresh:
            break
        seen |= {(r.resource_type, r.id) for r in fresh}
        included.extend(fresh)
        frontier = fresh
    return included


def _include_spec(spec: str) -> tuple[str, str, str]:
    parts = spec.split(":")
    if spec == "*":
        return "*", "*", ""
    if len(parts) < 2:
        raise BadRequest(f"_include/_revinclude {spec!r}: expected Type:parameter[:TargetType]")
    return parts[0], parts[1], parts[2] if len(parts) > 2 else ""


def _fetch_referenced(session: Session, wanted: list[Any]) -> list[Row]:
    """The resources whose (type, id) the ``wanted`` selects list, in one round trip."""
    if not wanted:
        return []
    compound: Any = union  # (typed Any: mypy 2.4 crashes inferring union()'s generic row type)
    pairs = wanted[0] if len(wanted) == 1 else compound(*wanted)
    stmt = (
        select(R.resource_type, R.id, R.pk, R.content)
        .where(tuple_(R.resource_type, R.id).in_(pairs), R.deleted.is_(False))
        .order_by(R.resource_type, R.id)
    )
    return [Row(r.resource_type, r.id, r.pk, r.content, "include") for r in session.execute(stmt)]


def _forward(frontier: list[Row], specs: list[str]) -> list[Any]:
    """Selects of the (type, id) targets of the frontier's references named by the _include specs
    (one per source type; read off ``ix_search_reference_probe``)."""
    parsed = [(spec, *_include_spec(spec)) for spec in specs]
    out: list[Any] = []
    by_type: dict[str, list[int]] = {}
    for r in frontier:
        by_type.setdefault(r.resource_type, []).append(r.pk)
    for rtype, pks in by_type.items():
        ors = []
        for spec, src_type, pname, target in parsed:
            if src_type not in ("*", rtype):
                continue
            if pname != "*" and (p := params_of(rtype).get(pname)) is not None and p.type != REFERENCE:
                raise BadRequest(f"_include {spec}: {pname} is not a reference parameter")
            conds = []
            if pname != "*":
                conds.append(_rows_of(_REF, rtype, pname))
            if target:
                conds.append(_REF.target_type == target)
            ors.append(and_(true(), *conds))
        if not ors:
            continue
        stmt = select(_REF.target_type, _REF.target_id).where(
            _REF.resource_pk.in_(pks),  # of rtype: a pk names one resource
            _REF.target_type != "",
            or_(*ors),
        )
        out.append(stmt)
    return out


def _reverse(session: Session, frontier: list[Row], spec: str) -> list[Any]:
    """Selects of the (type, id) of resources that reference the frontier through ``spec``."""
    src_type, pname, target = _include_spec(spec)
    out: list[Any] = []
    by_type: dict[str, list[str]] = {}
    for r in frontier:
        by_type.setdefault(r.resource_type, []).append(r.id)
    for rtype, ids in by_type.items():
        if target and target != rtype:
            continue
        if rtype == "Patient":
            ids = expand_patients(session, ids)
        stmt = select(_REF.resource_type, _REF.resource_id).where(
            _REF.target_type == rtype, _REF.target_id.in_(ids)
        )
        if src_type != "*":
            stmt = stmt.where(_REF.resource_type == src_type)
        if pname != "*" and src_type != "*":
            stmt = stmt.where(_rows_of(_REF, src_type, pname))
        elif pname != "*":  # any type's parameter of that name, wherever each type keeps its rows
            aliased = [t for t, aliases in ALIASES.items() if pname in aliases]
            stmt = stmt.where(
                or_(
                    _REF.param == pname,
                    *(and_(_REF.resource_type == t, _rows_of(_REF, t, pname)) for t in aliased),
                )
            )
        out.append(stmt)
    return out


# --- $everything --------------------------------------------------------------------------------------

_REFERENCED_TYPES = ("Practitioner", "PractitionerRole", "Organization", "Location", "Medication", "Device")
_REFERENCE_RE = re.compile(
    rb'"reference":"(' + "|".join(_REFERENCED_TYPES).encode() + rb')/([A-Za-z0-9.-]{1,64})"'
)


@dataclass(slots=True)
class EverythingQuery:
    patient_id: str
    count: int = EVERYTHING_DEFAULT_COUNT
    cursor: list[Any] | None = None
    since: datetime | None = None
    types: list[str] = field(default_factory=list)
    start: datetime | None = None
    end: datetime | None = None


_PATIENT = select(R.deleted, R.content).where(R.resource_type == "Patient", R.id == bindparam("id"))


def everything(session: Session, eq: EverythingQuery) -> Page:
    """One page of the compartment in (type, id) order: one index range scan per member Patient, cut
    at the cursor (a row comparison, so an index condition) and at the page size. (At the bench's 1,003
    rows PostgreSQL prefers a top-N sort of the members' rows to merging the ranges: 1.5 ms.)"""
    conn = session.connection()
    patient = conn.execute(_PATIENT, {"id": eq.patient_id}).first()
    if patient is None:
        raise NotFound(f"Patient/{eq.patient_id} is not known")
    deleted, content = patient
    if deleted:
        raise Gone(f"Patient/{eq.patient_id} was deleted")
    members = [eq.patient_id]
    _add_linked_sources(members, content)
    conds: list[Any] = [R.deleted.is_(False)]
    if eq.types:
        conds.append(R.resource_type.in_(eq.types))
    if eq.since is not None:
        conds.append(R.last_updated >= eq.since)
    if eq.start is not None or eq.end is not None:
        low = eq.start or MIN_DATE
        high = eq.end or MAX_DATE
        dated = [
            and_(
                R.resource_type == rtype,
                R.pk.in_(
                    select(_DATE.resource_pk).where(
                        _DATE.resource_type == rtype,
                        _DATE.param == pname,
                        _DATE.low <= high,
                        _DATE.high >= low,
                    )
                ),
            )
            for rtype, pname in CLINICAL_DATE.items()
        ]
        conds.append(or_(R.resource_type.not_in(list(CLINICAL_DATE)), *dated))
    skip = 0  # entries of the cursor's own resource (itself, then what it points at) on earlier pages
    if eq.cursor is not None:
        if len(eq.cursor) != 3 or not isinstance(eq.cursor[2], int) or eq.cursor[2] < 0:
            raise BadRequest("the paging cursor does not fit this operation")
        skip = eq.cursor[2]
        # A row comparison: an index condition of the range scan, not a filter over skipped rows.
        conds.append(tuple_(R.resource_type, R.id) >= tuple_(literal(eq.cursor[0]), literal(eq.cursor[1])))
    parts = [select(R.resource_type, R.id, R.pk, R.content).where(R.patient_id == m, *conds) for m in members]
    # Each compartment resource takes at least one entry of the page, except the cursor's own when its
    # entries were begun on the page before: count + 2 rows fill any page.
    limit = eq.count + 2
    if len(parts) == 1:
        stmt = parts[0].order_by(R.resource_type, R.id).limit(limit)
    else:
        merged = union_all(*parts).subquery("compartment")
        stmt = select(merged).order_by(merged.c.resource_type, merged.c.id).limit(limit)
    rows = conn.execute(stmt).all()
    candidates = [Row(rtype, rid, pk, content) for rtype, rid, pk, content in rows]  # unpacking is fast
    matches, included, next_cursor = _fill_page(session, candidates, eq.count, skip)
    total = len(matches) if eq.cursor is None and next_cursor is None else None
    return Page(matches, included, total, next_cursor)


def _add_role_targets(
    session: Session, pointed: dict[tuple[str, str], list[tuple[str, str]]], found: dict[tuple[str, str], Row]
) -> None:
    """A PractitionerRole a resource points at (a PRT's or ROL's participant: Patient.generalPractitioner,
    Encounter.participant, Observation.performer …) brings the Practitioner, Organization and Location
    it names, listed after it, so the page holds who the role is."""
    second = {
        key: sorted({(t.decode(), i.decode()) for t, i in _REFERENCE_RE.findall(row.content)} - {key})
        for key, row in found.items()
        if key[0] == "PractitionerRole"
    }
    if not any(second.values()):
        return
    wanted = {k for ks in second.values() for k in ks} - found.keys()
    found.update({(r.resource_type, r.id): r for r in _fetch(session, wanted)})
    for key, keys in pointed.items():
        extra = sorted({k for role in keys for k in second.get(role, ()) if k not in keys})
        if extra:
            pointed[key] = [*keys, *extra]


def _fill_page(
    session: Session, candidates: list[Row], count: int, skip: int
) -> tuple[list[Row], list[Row], str | None]:
    """A page of ``$everything`` of at most ``count`` entries: compartment resources in (type, id)
    order, each followed by the Practitioners, Organizations, Locations … it points at (sorted, and once
    a page). ``skip`` entries of the first resource were on the page before. The cursor names the
    resource whose entries the page did not finish and how many of them it held, so the next page goes
    on from there: every entry is on some page."""
    pointed = {
        (row.resource_type, row.id): sorted(
            {(t.decode(), i.decode()) for t, i in _REFERENCE_RE.findall(row.content)}
        )
        for row in candidates
    }
    found = {(r.resource_type, r.id): r for r in _fetch(session, {k for ks in pointed.values() for k in ks})}
    _add_role_targets(session, pointed, found)
    matches: list[Row] = []
    included: list[Row] = []
    on_page: set[tuple[str, str]] = set()
    used = 0
    for position, row in enumerate(candidates):
        entries: list[Row] = [row, *(found[k] for k in pointed[(row.resource_type, row.id)] if k in found)]
        start = skip if position == 0 else 0
        for offset in range(start, len(entries)):
            entry = entries[offset]
            key = (entry.resource_type, entry.id)
            if offset and key in on_page:
                continue  # already on this page (pointed at by an earlier resource)
            if used == count:
                return matches, included, encode_cursor([row.resource_type, row.id, offset])
            (included if offset else matches).append(entry)
            on_page.add(key)
            used += 1
    return matches, included, None


# --- history ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class HistoryEntry:
    resource_type: str
    id: str
    version_id: int
    last_updated: datetime
    deleted: bool
    content: bytes


def history(
    session: Session,
    *,
    resource_type: str | None = None,
    rid: str | None = None,
    since: datetime | None = None,
    count: int = DEFAULT_COUNT,
    cursor: list[Any] | None = None,
) -> tuple[list[HistoryEntry], str | None]:
    """Versions newest first, keyset-paged on (last_updated, type, id, version)."""
    V = ResourceVersion
    conds: list[Any] = []
    if resource_type is not None:
        conds.append(V.resource_type == resource_type)
    if rid is not None:
        conds.append(V.id == rid)
        exists = session.execute(
            select(R.id).where(R.resource_type == resource_type, R.id == rid)
        ).scalar_one_or_none()
        if exists is None:
            raise NotFound(f"{resource_type}/{rid} is not known")
    if since is not None:
        conds.append(V.last_updated >= since)
    if cursor is not None:
        if len(cursor) != 4:
            raise BadRequest("the paging cursor does not fit this history")
        lu, ct, ci, cv = _cursor_value(cursor[0]), cursor[1], cursor[2], cursor[3]
        conds.append(
            or_(
                V.last_updated < lu,
                and_(V.last_updated == lu, V.resource_type < ct),
                and_(V.last_updated == lu, V.resource_type == ct, V.id < ci),
                and_(V.last_updated == lu, V.resource_type == ct, V.id == ci, V.version_id < cv),
            )
        )
    stmt = (
        select(V.resource_type, V.id, V.version_id, V.last_updated, V.deleted, V.content)
        .where(*conds)
        .order_by(V.last_updated.desc(), V.resource_type.desc(), V.id.desc(), V.version_id.desc())
        .limit(count + 1)
    )
    rows = session.execute(stmt).all()
    next_cursor = None
    if len(rows) > count:
        rows = rows[:count]
        last = rows[-1]
        next_cursor = encode_cursor([_plain(last.last_updated), last.resource_type, last.id, last.version_id])
    return [HistoryEntry(*r) for r in rows], next_cursor


def vread(session: Session, resource_type: str, rid: str, version_id: int) -> HistoryEntry:
    V = ResourceVersion
    row = session.execute(
        select(V.resource_type, V.id, V.version_id, V.last_updated, V.deleted, V.content).where(
            V.resource_type == resource_type, V.id == rid, V.version_id == version_id
        )
    ).first()
    if row is None:
        raise NotFound(f"{resource_type}/{rid}/_history/{version_id} is not known")
    entry = HistoryEntry(*row)
    if entry.deleted:
        raise Gone(f"{resource_type}/{rid} version {version_id} is a deletion")
    return entry


def find_ids(session: Session, resource_type: str, params: Sequence[tuple[str, str]]) -> list[str]:
    """Ids matching a search (conditional create/update/delete): at most two, enough to tell 0, 1, many."""
    q = parse_query(session, resource_type, params, strict=True)
    stmt = (
        select(R.id)
        .where(R.resource_type == resource_type, R.deleted.is_(False), *q.conditions)
        .order_by(R.id)
        .limit(2)
    )
    return list(session.execute(stmt).scalars())
