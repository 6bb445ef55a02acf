"""Resolving the patients of a mapped message to golden records: link, review queue, merge, undo.

Owns the MPI tables (``mpi_source``, ``mpi_block``, ``mpi_review``, ``mpi_decision``) and the golden
Patient resources. Every source Patient has exactly one ``mpi_source`` row, so it is linked to exactly one
golden Patient. Links are plain FHIR: a source carries ``link {type: refer}`` to its golden, the golden
``link {type: seealso}`` to each source, a merged-away source ``replaced-by`` its survivor and the survivor
``replaces`` it. Decisions of a steward (or of a sender's A37 unlink) pin a source: no later automatic
decision moves it. All work happens in the caller's transaction; nothing here commits.
"""

from __future__ import annotations

import logging
import uuid
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Connection, bindparam, delete, func, insert, select
from sqlalchemy.orm import Session, aliased, make_transient_to_detached
from sqlalchemy.orm.util import identity_key

from hub.config import get_settings
from hub.errors import Conflict, NotFound
from hub.mapping import MappingResult, SenderContext
from hub.mpi.match import (
    Features,
    MatchConfig,
    MatchResult,
    blocking_keys,
    compare,
    features,
    parse_nik,
    worth_comparing,
)
from hub.mpi.survivorship import build_golden, check_rules
from hub.store import bulk
from hub.store import resources as store
from hub.store.models import MpiBlock, MpiDecision, MpiReview, MpiSource, Resource

log = logging.getLogger(__name__)

GOLDEN_TAG = {"system": "https://hub.kemkes.go.id/fhir/CodeSystem/mpi", "code": "golden"}
_NAMESPACE = uuid.UUID("0d6c1f9e-3b7a-5c4e-9a51-7f2d8e6b4c30")
_LINK_TYPES = ("refer", "seealso", "replaced-by", "replaces")
# A blocking key shared by more sources than MAX_BLOCK is ignored; a decision scores at most MAX_COMPARED
# candidates (see hub.mpi.match.worth_comparing).
MAX_BLOCK = 500
MAX_COMPARED = 8


@dataclass(frozen=True, slots=True)
class MpiSettings:
    """How the MPI decides and builds golden records. ``sender_trust``: facility → trust, higher wins
    where an element's survivorship rules say ``trust``; ``survivorship``: element → rule names, in place
    of the defaults of :mod:`hub.mpi.survivorship`."""

    match: MatchConfig = field(default_factory=MatchConfig)
    sender_trust: Mapping[str, int] | None = None
    survivorship: Mapping[str, tuple[str, ...]] | None = None


DEFAULT_SETTINGS = MpiSettings()


def settings_for(match_threshold: float, possible_threshold: float, twin_gate: bool) -> MpiSettings:
    """MpiSettings from the hub's ``HUB_MPI_*`` settings: the thresholds and gate given, the sender trust
    (``HUB_MPI_SENDER_TRUST``) and survivorship rules (``HUB_MPI_SURVIVORSHIP``) as configured."""
    hub = get_settings()
    return _settings_for(
        match_threshold,
        possible_threshold,
        twin_gate,
        tuple(sorted(hub.mpi_sender_trust.items())),
        tuple(sorted((k, tuple(v)) for k, v in hub.mpi_survivorship.items())),
    )


@lru_cache(maxsize=8)
def _settings_for(
    match_threshold: float,
    possible_threshold: float,
    twin_gate: bool,
    trust: tuple[tuple[str, int], ...],
    rules: tuple[tuple[str, tuple[str, ...]], ...],
) -> MpiSettings:
    # Cached: the pipeline asks per message.
    return MpiSettings(
        match=MatchConfig(
            match_threshold=match_threshold, possible_threshold=possible_threshold, twin_gate=twin_gate
        ),
        sender_trust=dict(trust) or None,
        survivorship=check_rules(dict(rules)) if rules else None,
    )


def configured_settings() -> MpiSettings:
    """The MpiSettings of the hub's configuration (steward decisions rebuild golden records with them)."""
    hub = get_settings()
    return settings_for(hub.mpi_match_threshold, hub.mpi_possible_threshold, hub.mpi_twin_gate)


@dataclass(frozen=True, slots=True)
class Candidate:
    golden_id: str
    source_id: str  # the best-scoring source of that golden
    result: MatchResult


def golden_id_for(seed: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "golden|" + seed))


def is_golden(resource: Mapping[str, Any]) -> bool:
    tags = (resource.get("meta") or {}).get("tag") or []
    return any(t.get("system") == GOLDEN_TAG["system"] and t.get("code") == "golden" for t in tags)


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; the hub writes UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# features() is a pure function of a source's content (and the configured placeholders); every decision
# compares the new source with each candidate's stored content, so the features of stored content are
# kept (bounded) instead of being recomputed per candidate and per message.
_FEATURES_CACHE: dict[tuple[bytes, tuple[str, ...]], Features] = {}
_FEATURES_CACHE_MAX = 20_000
_DEFAULT_MATCH = MatchConfig()


def _features(content: Mapping[str, Any], config: MatchConfig | None = None) -> Features:
    """``features(content, config)``, memoised on the content itself (not on a row id or timestamp)."""
    config = config or _DEFAULT_MATCH
    try:
        key = (orjson.dumps(content, option=orjson.OPT_SORT_KEYS), config.placeholders)
    except TypeError:  # not plain JSON (a Decimal, a huge integer): not memoised
        return features(dict(content), config)
    found = _FEATURES_CACHE.get(key)
    if found is None:
        if len(_FEATURES_CACHE) >= _FEATURES_CACHE_MAX:
            _FEATURES_CACHE.clear()
        found = _FEATURES_CACHE[key] = features(dict(content), config)
    return found


def _features_of_stored(raw: str, config: MatchConfig) -> Features:
    """The features of a stored content given as its JSON text (as the database returns it): memoised on
    that text, so a known candidate costs neither a JSON parse nor a serialisation."""
    key = (raw.encode(), config.placeholders)
    found = _FEATURES_CACHE.get(key)
    if found is None:
        if len(_FEATURES_CACHE) >= _FEATURES_CACHE_MAX:
            _FEATURES_CACHE.clear()
        found = _FEATURES_CACHE[key] = features(orjson.loads(raw), config)
    return found


def _features_key(f: Features) -> tuple[Any, ...]:
    """A hashable stand-in for ``f`` (``person_ids`` is a dict): equal keys, equal comparisons."""
    return (
        f.tokens,
        f.placeholder,
        f.birth_date,
        f.gender,
        f.nik,
        f.nik_raw,
        tuple(sorted(f.person_ids.items())),
        f.phones,
        f.province,
        f.city,
        f.district,
        f.city_text,
        f.postal_code,
        f.line,
    )


def _snapshot(resource: Mapping[str, Any]) -> dict[str, Any]:
    """The source as the MPI keeps it: without meta and without the links the MPI itself writes."""
    body = {k: v for k, v in resource.items() if k not in ("meta", "link")}
    others = [lk for lk in resource.get("link") or [] if lk.get("type") not in _LINK_TYPES]
    if others:
        body["link"] = others
    return body


# --------------------------------------------------------------------------------------------- resolving


def resolve_identities(
    session: Session,
    result: MappingResult,
    ctx: SenderContext,
    settings: MpiSettings = DEFAULT_SETTINGS,
    *,
    goldens: list[dict[str, Any]] | None = None,
) -> None:
    """Link every source Patient among ``result.resources`` to its golden Patient and carry out
    ``result.actions`` (merges, identifier changes, unlinks), in the caller's transaction, before the
    resources are stored. The Patient dicts get their ``link`` (and ``active``) set; golden Patients are
    written here, or, given ``goldens``, appended to it for the caller to store right after (before the
    message's own resources): the pipeline stores them with those, in one store write instead of two."""
    patients = {
        str(r["id"]): r for r in result.resources if r.get("resourceType") == "Patient" and not is_golden(r)
    }
    touched: set[str] = set()
    resolved: dict[str, _Resolution] = {}
    for sid, resource in patients.items():
        resolved[sid] = _resolve_one(session, resource, ctx.facility, settings)
        touched |= resolved[sid].goldens
    actor = f"hl7:{ctx.facility}"
    changed_sources: set[str] = set()
    for action in result.actions:
        kind = action.get("type")
        if kind == "merge":
            decision = merge(
                session, str(action["survivor"]), str(action["retired"]), actor=actor, sync=False
            )
            changed_sources |= {decision.source_id, str(decision.other_source_id)}
            touched |= {str(decision.golden_id), str(decision.previous_golden_id)}
        elif kind == "change-identifier":
            # A47: the source id derives from the identifier, so the patient of the new identifier is a new
            # source Patient in this message; the old one is retired into it, exactly as in a merge.
            new = action.get("new") or {}
            old_id = str(action.get("patient") or "")
            successor = next(
                (
                    pid
                    for pid, res in patients.items()
                    if any(
                        i.get("system") == new.get("system") and i.get("value") == new.get("value")
                        for i in res.get("identifier") or []
                    )
                ),
                None,
            )
            if successor is not None and successor != old_id and old_id:
                reason = f"A47: identifier {(action.get('old') or {}).get('value')} replaced"
                decision = merge(session, successor, old_id, actor=actor, reason=reason, sync=False)
                changed_sources |= {decision.source_id, str(decision.other_source_id)}
                touched |= {str(decision.golden_id), str(decision.previous_golden_id)}
            else:
                touched |= _change_identifier(session, action, actor, settings)
        elif kind == "unlink":
            ids = [str(p) for p in action.get("patients") or []]
            if len(ids) == 2:
                unlinked = _unlink_pair(session, ids[0], ids[1], actor=actor)
                if unlinked is not None:
                    changed_sources.add(unlinked.source_id)
                    touched |= {str(unlinked.golden_id), str(unlinked.previous_golden_id)}
        else:
            log.warning("unknown identity action %r ignored", kind)
    session.flush()
    # What the sources' own reads found holds unless an action moved sources since.
    alone = {} if result.actions else {r.source.golden_id: r.source for r in resolved.values() if r.alone}
    for golden in sorted(touched):
        rebuild_golden(
            session, golden, settings, sources=[alone[golden]] if golden in alone else None, deferred=goldens
        )
    for sid, resource in patients.items():
        if result.actions:  # an action may have changed the row since it was read: as it is now
            _apply_links(session, resource, _source(session, sid))
        else:
            _apply_links(session, resource, resolved[sid].source, resolved[sid].replaces)
    for sid in sorted(changed_sources - set(patients)):
        _sync_stored_source(session, sid)


@dataclass(frozen=True, slots=True)
class _Row:
    """An ``mpi_source`` row read or written here through the driver, not as an ORM entity: what the links
    of its Patient and a golden record it founded need. (A row this step changes is an entity.)"""

    id: str
    golden_id: str
    facility: str
    active: bool
    replaced_by: str | None
    content: dict[str, Any]
    updated_at: datetime | None  # None when read: only a golden record founded here needs it


@dataclass(frozen=True, slots=True)
class _Resolution:
    """What resolving one source Patient changed, and what it read on the way (not read again)."""

    source: MpiSource | _Row  # an entity is held here, so the session's identity map keeps it for the links
    goldens: set[str]  # golden records to rebuild
    replaces: list[str]  # the sources this one replaced (merged into it), for its links
    alone: bool = False  # a new source that founded its own golden record: its only source


# The statements of a first arrival (and of the same demographics again) go to the driver as text built
# once: through the ORM, the source read, the source insert (a unit-of-work flush) and the key lookups
# cost several times what the database spends on them.
_SOURCE_AND_RETIRED = (
    "SELECT id, golden_id, facility, active, replaced_by, CAST(content AS TEXT), link_kind, weight"
    " FROM mpi_source WHERE id = ? OR replaced_by = ?"
)
_SOURCE_COLUMNS = (
    "id",
    "golden_id",
    "facility",
    "link_kind",
    "weight",
    "active",
    "replaced_by",
    "content",
    "created_at",
    "updated_at",
)
_BLOCK_COLUMNS = ("key", "source_id")


def _driver(session: Session) -> Connection:
    """The session's connection, its pending ORM writes flushed first (as an ORM query would)."""
    session.flush()
    return session.connection()


def _resolve_one(
    session: Session, resource: dict[str, Any], facility: str, settings: MpiSettings
) -> _Resolution:
    sid = str(resource["id"])
    content = _snapshot(resource)
    # One read: the source's row and the sources merged into it (its "replaces" links).
    connection = _driver(session)
    rows = connection.exec_driver_sql(bulk.placeholders(connection.dialect, _SOURCE_AND_RETIRED), (sid, sid))
    found: _Row | None = None
    replaces = []
    for id_, golden, source_facility, active, replaced_by, raw, link_kind, weight in rows:
        if id_ == sid:
            found = _Row(id_, golden, source_facility, bool(active), replaced_by, orjson.loads(raw), None)
            found_link = (link_kind, weight)
        else:
            replaces.append(id_)
    replaces.sort()
    if found is not None and found.content == content and found.active:
        # The same demographics again (most messages of a known patient, and every replay): nothing the
        # decision or the golden record depends on changed ("most recent" means most recently changed),
        # so no features, no blocking locks, no candidates, no golden rebuild. A concurrent first
        # arrival needs no lock against this: the row it may match is committed and stays as it is.
        return _Resolution(found, set(), replaces)
    feats = _features(content, settings.match)
    lookup = _lookup_keys(feats)
    keys = lookup | _identifier_keys(content)  # block_keys(content, feats)
    _lock_blocks(session, keys)
    if found is not None:
        row = _entity(session, found, *found_link)
        row.content = content
        row.updated_at = _now()
        _write_blocks(session, sid, keys)
        if row.link_kind == "new" and row.active and _golden_size(session, row.golden_id) == 1:
            # A source alone in its golden record may find its match now that its data changed.
            session.flush()
            candidates = find_candidates(session, feats, settings, exclude_source=sid, keys=lookup)
            best = candidates[0] if candidates and candidates[0].result.outcome == "match" else None
            if best is not None and best.golden_id != row.golden_id:
                old = row.golden_id
                row.golden_id, row.link_kind, row.weight = best.golden_id, "auto", best.result.weight
                _queue_reviews(session, sid, candidates[1:])
                return _Resolution(row, {old, best.golden_id}, replaces)
            _queue_reviews(session, sid, [c for c in candidates if c.golden_id != row.golden_id])
        return _Resolution(row, {row.golden_id}, replaces)
    candidates = find_candidates(session, feats, settings, exclude_source=sid, known=False, keys=lookup)
    matches = [c for c in candidates if c.result.outcome == "match"]
    now = _now()
    if matches:
        best = matches[0]
        new = _Row(sid, best.golden_id, facility, True, None, content, now)
        link_kind, weight = "auto", best.result.weight
        rest = [c for c in candidates if c is not best]
    else:
        new = _Row(sid, golden_id_for(sid), facility, True, None, content, now)
        link_kind, weight = "new", None
        rest = candidates
    _insert_source(
        session, (sid, new.golden_id, facility, link_kind, weight, True, None, content, now, now), keys
    )
    # Every other candidate that is not a certain no-match goes to the stewards: a possible match, or a
    # second golden record the source also matches (two golden records that may be one person).
    _queue_reviews(session, sid, rest)
    return _Resolution(new, {new.golden_id}, replaces, alone=link_kind == "new")


# PostgreSQL: the row and its keys in one statement (the keys' foreign key is checked at its end).
_INSERT_SOURCE_AND_KEYS = (
    f"WITH source AS (INSERT INTO mpi_source ({', '.join(_SOURCE_COLUMNS)}) VALUES ({bulk.marks(10)}))"
    ' INSERT INTO mpi_block ("key", source_id) SELECT k, ? FROM unnest(CAST(? AS text[])) AS k'
)


def _entity(session: Session, found: _Row, link_kind: str, weight: float | None) -> MpiSource:
    """The entity of a row just read through the driver, without reading it again: the one the session
    holds, else one made of the values read (its timestamps, not read, load if ever asked for)."""
    held = session.identity_map.get(identity_key(MpiSource, found.id))
    if held is not None:
        return held
    entity = MpiSource(
        id=found.id,
        golden_id=found.golden_id,
        facility=found.facility,
        link_kind=link_kind,
        weight=weight,
        active=found.active,
        replaced_by=found.replaced_by,
        content=found.content,
    )
    make_transient_to_detached(entity)  # as if loaded: persistent once added, no INSERT
    session.add(entity)
    return entity


def _insert_source(session: Session, row: bulk.Row, keys: set[str]) -> None:
    """A new source's row (``_SOURCE_COLUMNS``) and its keys, through the driver as the resource store
    writes: one statement on PostgreSQL, SQLite's two run in-process."""
    connection = session.connection()
    sources: Any = MpiSource.__table__
    if connection.dialect.name != "postgresql":
        blocks: Any = MpiBlock.__table__
        bulk.insert_rows(connection, sources, _SOURCE_COLUMNS, [row])
        bulk.insert_rows(connection, blocks, _BLOCK_COLUMNS, [(key, row[0]) for key in sorted(keys)])
        return
    sql, bound = bulk.driver_rows(
        connection.dialect, sources, _INSERT_SOURCE_AND_KEYS, _SOURCE_COLUMNS, [row]
    )
    connection.exec_driver_sql(sql, (*bound[0], row[0], sorted(keys)))


def _golden_size(session: Session, golden_id: str) -> int:
    return int(session.scalar(select(func.count()).where(MpiSource.golden_id == golden_id)) or 0)


def _lock_blocks(session: Session, keys: set[str]) -> None:
    """Two first arrivals of one person (at two hospitals, on two workers) share a blocking key: on
    PostgreSQL, transaction-scoped advisory locks on the keys (taken in one global order) make the second
    wait for the first and then find it as a candidate, instead of both founding a golden record.
    SQLite has a single writer, so nothing to do there."""
    if not keys or session.get_bind().dialect.name != "postgresql":
        return
    locks = sorted({zlib.crc32(b"mpi|" + k.encode()) for k in keys})
    # One round trip: a function scan over the array yields (and locks) the keys in the array's order.
    _driver(session).exec_driver_sql(
        "SELECT count(pg_advisory_xact_lock(k)) FROM unnest(CAST(%s AS bigint[])) AS k", (locks,)
    )


def block_keys(content: Mapping[str, Any], feats: Features) -> set[str]:
    """The ``mpi_block`` keys of a source: its blocking keys and one key per identifier (for PIX)."""
    return _lookup_keys(feats) | _identifier_keys(content)


def _lookup_keys(feats: Features) -> set[str]:
    """The blocking keys as stored (cut to the column's length): those candidates are looked up by."""
    return {k[:250] for k in blocking_keys(feats)}


def _identifier_keys(content: Mapping[str, Any]) -> set[str]:
    keys = set()
    for ident in content.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("value"):
            keys.add(f"ident:{ident.get('system') or ''}|{ident['value']}"[:250])
    return keys


def _write_blocks(session: Session, sid: str, keys: set[str]) -> None:
    """The keys of a source already known (a new one's go in with its row, in ``_resolve_one``)."""
    existing = set(session.scalars(select(MpiBlock.key).where(MpiBlock.source_id == sid)))
    stale = existing - keys
    if stale:
        session.execute(delete(MpiBlock).where(MpiBlock.source_id == sid, MpiBlock.key.in_(stale)))
    added = sorted(keys - existing)
    if added:  # the source row is already flushed: a Core insert, no unit-of-work round
        session.execute(insert(MpiBlock), [{"key": key, "source_id": sid} for key in added])


def _not_duplicate_of(session: Session, sid: str) -> set[str]:
    """Sources a steward (or a sender's unlink) declared not to be ``sid``; decisions still in force."""
    rows = session.execute(
        select(MpiDecision.source_id, MpiDecision.other_source_id).where(
            MpiDecision.action.in_(("not-duplicate", "unlink")),
            MpiDecision.undone_at.is_(None),
            (MpiDecision.source_id == sid) | (MpiDecision.other_source_id == sid),
        )
    ).all()
    return {str(b if a == sid else a) for a, b in rows if a and b}


@lru_cache(maxsize=64)
def _block_pairs(n_keys: int, per_key: int) -> str:
    """The (key, source) pairs of ``n_keys`` blocking keys, at most ``per_key`` per key: one statement
    per key count, its text built once."""
    part = f'SELECT "key", source_id FROM mpi_block WHERE "key" = ? LIMIT {int(per_key)}'
    return " UNION ALL ".join(f"SELECT * FROM ({part}) AS b{i}" for i in range(n_keys))


# PostgreSQL: the same pairs from one statement whatever the number of keys, a probe of the key index
# per array element; it plans in half the time of the union above and runs in a quarter.
_BLOCK_PAIRS_PG = (
    'SELECT b."key", b.source_id FROM unnest(CAST(%s AS text[])) AS k,'
    ' LATERAL (SELECT "key", source_id FROM mpi_block WHERE "key" = k LIMIT %s) AS b'
)


_CANDIDATE_ROWS = "SELECT id, golden_id, CAST(content AS TEXT) FROM mpi_source WHERE id IN ({})"


class _Candidate(NamedTuple):
    id: str
    golden_id: str
    raw: str


def find_candidates(
    session: Session,
    feats: Features,
    settings: MpiSettings = DEFAULT_SETTINGS,
    *,
    exclude_source: str | None = None,
    known: bool = True,
    keys: set[str] | None = None,
) -> list[Candidate]:
    """Golden records that ``feats`` may belong to, best first (matches before possibles, then weight);
    certain no-matches are left out. Candidates come from the blocking keys (``keys``: those of ``feats``
    as stored, when the caller has them already); each golden record is scored by its best-agreeing
    source."""
    lookup = sorted(_lookup_keys(feats) if keys is None else keys)
    if not lookup:
        return []
    # First the (key, source) pairs alone, from the key index; then the content of those worth scoring.
    # A key shared by more than MAX_BLOCK sources says nothing about anyone (a clinic's phone number given
    # for every patient, a default birth date at one place): it is left out, not allowed to crowd out the
    # others.
    members: dict[str, list[str]] = {}
    connection = _driver(session)
    dialect = connection.dialect
    if dialect.name == "postgresql":
        pairs = connection.exec_driver_sql(_BLOCK_PAIRS_PG, (lookup, MAX_BLOCK + 1))
    else:
        sql = bulk.placeholders(dialect, _block_pairs(len(lookup), MAX_BLOCK + 1))
        pairs = connection.exec_driver_sql(sql, tuple(lookup))
    for key, sid in pairs:
        members.setdefault(key, []).append(sid)
    shared: dict[str, list[str]] = {}
    for key, sids in members.items():
        if len(sids) <= MAX_BLOCK:
            for sid in sids:
                if sid != exclude_source:
                    shared.setdefault(sid, []).append(key)
    chosen = worth_comparing(shared, MAX_COMPARED)
    if not chosen:
        return []
    rows = [
        _Candidate(*r)
        for r in connection.exec_driver_sql(
            bulk.placeholders(dialect, _CANDIDATE_ROWS.format(bulk.marks(len(chosen)))), tuple(chosen)
        )
    ]
    # Decisions exist only about sources the MPI already knows (``known=False``: a first arrival).
    forbidden_sources = _not_duplicate_of(session, exclude_source) if exclude_source and known else set()
    forbidden_goldens = {r.golden_id for r in rows if r.id in forbidden_sources}
    if forbidden_sources - {r.id for r in rows}:
        forbidden_goldens |= set(
            session.scalars(select(MpiSource.golden_id).where(MpiSource.id.in_(forbidden_sources)))
        )
    best: dict[str, Candidate] = {}
    parsed = [(row, _features_of_stored(row.raw, settings.match)) for row in rows]
    suspect = nik_is_suspect(feats, ((row.golden_id, other) for row, other in parsed))
    # Sources of one person often share every compared feature (they differ in their MRNs): compare once.
    results: dict[tuple[Any, ...], MatchResult] = {}
    for row, other in parsed:
        if row.golden_id in forbidden_goldens:
            continue
        fkey = _features_key(other)
        result = results.get(fkey)
        if result is None:
            result = results[fkey] = compare(feats, other, settings.match, nik_suspect=suspect)
        if result.outcome == "no-match":
            continue
        current = best.get(row.golden_id)
        if current is None or _rank(result) > _rank(current.result):
            best[row.golden_id] = Candidate(row.golden_id, row.id, result)
    return sorted(best.values(), key=lambda c: _rank(c.result), reverse=True)


def nik_is_suspect(feats: Features, carriers: Iterable[tuple[str, Features]]) -> bool:
    """Whether the valid NIK of ``feats`` is suspect: among ``carriers`` (golden id, features of a stored
    source), those with the same NIK belong to two golden records or more, placeholders (a newborn under
    the mother's NIK) left out. A NIK that different people carry (a family card number, a parent's NIK)
    then counts for nothing: it no longer links anyone automatically."""
    if feats.nik is None or feats.placeholder:
        return False
    nik = feats.nik.nik
    people = {
        golden for golden, f in carriers if f.nik is not None and f.nik.nik == nik and not f.placeholder
    }
    return len(people) >= 2


def suspect_niks(session: Session, limit: int = 100) -> list[dict[str, Any]]:
    """The NIKs flagged as suspect (see :func:`nik_is_suspect`): each with the golden records (people) and
    the sources that carry it, the most widely shared first."""
    shared = session.execute(
        select(MpiBlock.key)
        .join(MpiSource, MpiSource.id == MpiBlock.source_id)
        .where(MpiBlock.key.like("nik:%"))
        .group_by(MpiBlock.key)
        .having(func.count(func.distinct(MpiSource.golden_id)) >= 2)
    ).scalars()
    out: list[dict[str, Any]] = []
    for key in shared:
        rows = session.execute(
            select(MpiSource.id, MpiSource.golden_id, MpiSource.content)
            .join(MpiBlock, MpiBlock.source_id == MpiSource.id)
            .where(MpiBlock.key == key)
            .order_by(MpiSource.id)
        ).all()
        carriers = [(sid, golden) for sid, golden, content in rows if not _features(content).placeholder]
        people = sorted({golden for _, golden in carriers})
        nik = key.removeprefix("nik:")
        if len(people) >= 2 and parse_nik(nik) is not None:
            out.append({"nik": nik, "people": people, "sources": [sid for sid, _ in carriers]})
    out.sort(key=lambda entry: (-len(entry["people"]), entry["nik"]))
    return out[:limit]


def _rank(result: MatchResult) -> tuple[int, float]:
    return (1 if result.outcome == "match" else 0, result.weight)


def _queue_reviews(session: Session, sid: str, candidates: Iterable[Candidate]) -> None:
    cands = list(candidates)
    if not cands:
        return
    others = {c.source_id for c in cands}
    existing_reviews = {
        r.candidate_source_id: r
        for r in session.scalars(
            select(MpiReview).where(MpiReview.source_id == sid, MpiReview.candidate_source_id.in_(others))
        )
    }
    reverse_reviews = set(
        session.scalars(
            select(MpiReview.source_id).where(
                MpiReview.source_id.in_(others), MpiReview.candidate_source_id == sid
            )
        )
    )
    for cand in cands:
        existing = existing_reviews.get(cand.source_id)
        comparisons = [
            {"field": c.field, "level": c.level, "weight": c.weight, **({"note": c.note} if c.note else {})}
            for c in cand.result.comparisons
        ]
        if existing is not None:
            if existing.status == "open":  # refresh the scores; a decided review stays decided
                existing.weight, existing.reason = cand.result.weight, cand.result.reason
                existing.comparisons, existing.golden_id = comparisons, cand.golden_id
            continue
        if cand.source_id in reverse_reviews:
            continue
        session.add(
            MpiReview(
                source_id=sid,
                candidate_source_id=cand.source_id,
                golden_id=cand.golden_id,
                weight=cand.result.weight,
                reason=cand.result.reason,
                comparisons=comparisons,
                status="open",
            )
        )


# ------------------------------------------------------------------------------------------ golden records


_GOLDEN_SOURCES = (
    select(MpiSource.id, MpiSource.active, MpiSource.facility, MpiSource.updated_at, MpiSource.content)
    .where(MpiSource.golden_id == bindparam("golden"))
    .order_by(MpiSource.id)
)


def rebuild_golden(
    session: Session,
    golden_id: str,
    settings: MpiSettings = DEFAULT_SETTINGS,
    *,
    sources: Sequence[Any] | None = None,
    deferred: list[dict[str, Any]] | None = None,
) -> None:
    """Write the golden Patient from its current sources (or delete it when it has none left), each
    element by its survivorship rules (:mod:`hub.mpi.survivorship`: a fuller name beats a shorter one it
    holds, a NIK-bearing source one without, the most recent address and telecom, the configured sender
    trust; every identifier kept), each recording its source. ``sources``: the caller already holds
    them all (a source that just founded this golden record), so they are not read again. ``deferred``:
    the golden Patient is appended there, for the caller to store, instead of being stored here."""
    if sources is None:
        # Plain rows, not entities: the golden record only reads its sources.
        sources = session.execute(_GOLDEN_SOURCES, {"golden": golden_id}).all()
    if not sources:
        current = session.get(Resource, ("Patient", golden_id))
        if current is not None and not current.deleted:
            store.delete(session, "Patient", golden_id)
        return
    golden = build_golden(
        golden_id,
        sources,
        rules=settings.survivorship,
        trust=settings.sender_trust,
        tag=GOLDEN_TAG,
    )
    golden["link"] = [{"other": {"reference": f"Patient/{s.id}"}, "type": "seealso"} for s in sources]
    if deferred is not None:
        deferred.append(golden)
    else:
        store.upsert(session, golden)
    if len(sources) > 1:
        _settle_reviews(session, {s.id for s in sources})


def _settle_reviews(session: Session, members: set[str]) -> None:
    """Open reviews whose two sources now share a golden record (linked by a later match, a merge or a
    steward elsewhere) leave the queue as linked."""
    for review in session.scalars(
        select(MpiReview).where(
            MpiReview.status == "open",
            MpiReview.source_id.in_(members),
            MpiReview.candidate_source_id.in_(members),
        )
    ):
        review.status, review.decided_at = "linked", _now()


def _links_for(
    session: Session, row: MpiSource | _Row, replaces: list[str] | None = None
) -> list[dict[str, Any]]:
    """The MPI's links of a source; ``replaces``: the sources merged into it, when already read."""
    links: list[dict[str, Any]] = []
    if row.replaced_by:
        links.append({"other": {"reference": f"Patient/{row.replaced_by}"}, "type": "replaced-by"})
    if replaces is None:
        replaces = list(
            session.scalars(
                select(MpiSource.id).where(MpiSource.replaced_by == row.id).order_by(MpiSource.id)
            )
        )
    for retired in replaces:
        links.append({"other": {"reference": f"Patient/{retired}"}, "type": "replaces"})
    links.append({"other": {"reference": f"Patient/{row.golden_id}"}, "type": "refer"})
    return links


def _apply_links(
    session: Session, resource: dict[str, Any], row: MpiSource | _Row, replaces: list[str] | None = None
) -> None:
    """Set the MPI's links (and ``active`` after a merge) on the source Patient dict of ``row``."""
    kept = [lk for lk in resource.get("link") or [] if lk.get("type") not in _LINK_TYPES]
    resource["link"] = kept + _links_for(session, row, replaces)
    if not row.active:
        resource["active"] = False
    elif "active" in row.content:
        resource["active"] = row.content["active"]
    else:
        resource.pop("active", None)


def _sync_stored_source(session: Session, sid: str) -> None:
    """Rewrite a stored source Patient whose links changed outside its own message (merge, steward)."""
    row = session.get(MpiSource, sid)
    if row is None:
        return
    current = session.get(Resource, ("Patient", sid))
    if current is not None and not current.deleted:
        resource = store.read(session, "Patient", sid)
    else:
        resource = {**row.content, "resourceType": "Patient", "id": sid}
    _apply_links(session, resource, row)
    store.upsert(session, resource)


def linked_patient_ids(session: Session, patient_id: str) -> list[str]:
    """Every Patient id that stands for the same person as ``patient_id`` (a golden or a source id): the
    golden record and all its sources, for compartment queries such as ``$everything``."""
    row = session.get(MpiSource, patient_id)
    golden = row.golden_id if row is not None else patient_id
    sources = list(session.scalars(select(MpiSource.id).where(MpiSource.golden_id == golden)))
    if not sources:
        return [patient_id]
    return [golden, *sorted(sources)]


# ---------------------------------------------------------------------------------- decisions and undo


def _record(session: Session, **kw: Any) -> MpiDecision:
    decision = MpiDecision(created_at=_now(), **kw)
    session.add(decision)
    session.flush()
    return decision


def _source(session: Session, sid: str) -> MpiSource:
    row = session.get(MpiSource, sid)
    if row is None:
        raise NotFound(f"Patient/{sid} is not a source known to the MPI")
    return row


def _ensure_source(session: Session, sid: str, facility: str = "") -> MpiSource:
    """The MPI row of ``sid``; a Patient only known from the store (or not at all, as the retired side
    of a merge may be) gets one, alone in a golden record of its own."""
    row = session.get(MpiSource, sid)
    if row is not None:
        return row
    current = session.get(Resource, ("Patient", sid))
    content: dict[str, Any] = {"resourceType": "Patient", "id": sid}
    if current is not None and not current.deleted:
        content = _snapshot(store.read(session, "Patient", sid))
    row = MpiSource(id=sid, golden_id=golden_id_for(sid), facility=facility, link_kind="new", content=content)
    row.active = True
    session.add(row)
    session.flush()
    _write_blocks(session, sid, block_keys(content, _features(content)))
    return row


def merge(
    session: Session, survivor: str, retired: str, *, actor: str, reason: str = "", sync: bool = True
) -> MpiDecision:
    """ADT A40/A34: ``retired`` is the same patient as ``survivor``. The retired source becomes inactive,
    ``replaced-by`` the survivor, and joins the survivor's golden record (so its resources appear there)."""
    if survivor == retired:
        raise Conflict("a patient cannot be merged into itself")
    surv = _ensure_source(session, survivor)
    ret = _ensure_source(session, retired)
    decision = _record(
        session,
        action="merge",
        source_id=retired,
        other_source_id=survivor,
        golden_id=surv.golden_id,
        previous_golden_id=ret.golden_id,
        actor=actor,
        reason=reason,
        data={"link_kind": ret.link_kind, "active": ret.active, "replaced_by": ret.replaced_by},
    )
    left_behind = [
        r
        for r in session.scalars(
            select(MpiSource).where(MpiSource.golden_id == ret.golden_id, MpiSource.id != retired)
        )
        if r.golden_id != surv.golden_id
    ]
    ret.golden_id = surv.golden_id
    ret.active = False
    ret.replaced_by = survivor
    ret.link_kind = "merge"
    ret.updated_at = _now()
    # Sources the MPI had linked to the retired patient (other senders' records) are probably the
    # survivor too; a steward decides, the sender's merge speaks only for its own records.
    surv_feats = _features(surv.content)
    for other in left_behind:
        result = compare(_features(other.content), surv_feats)
        _queue_reviews(
            session,
            other.id,
            [
                Candidate(
                    surv.golden_id,
                    survivor,
                    MatchResult("possible", result.weight, result.comparisons, "merge"),
                )
            ],
        )
    if sync:
        _after_change(session, {decision.golden_id, decision.previous_golden_id}, {survivor, retired})
    return decision


def _change_identifier(
    session: Session, action: Mapping[str, Any], actor: str, settings: MpiSettings
) -> set[str]:
    """ADT A47: a source's identifier changed (old → new); its blocking and identifier keys follow."""
    sid = str(action.get("patient") or "")
    row = session.get(MpiSource, sid)
    if row is None:
        return set()
    old, new = action.get("old") or {}, action.get("new") or {}
    content = dict(row.content)
    idents = [
        i
        for i in content.get("identifier") or []
        if not (i.get("system") == old.get("system") and i.get("value") == old.get("value"))
    ]
    if new.get("value") and not any(
        i.get("system") == new.get("system") and i.get("value") == new.get("value") for i in idents
    ):
        idents.append(dict(new))
    content["identifier"] = idents
    row.content = content
    row.updated_at = _now()
    _write_blocks(session, sid, block_keys(content, _features(content, settings.match)))
    _record(
        session,
        action="change-identifier",
        source_id=sid,
        golden_id=row.golden_id,
        previous_golden_id=row.golden_id,
        actor=actor,
        data={"old": dict(old), "new": dict(new)},
    )
    return {row.golden_id}


def _unlink_pair(session: Session, a: str, b: str, *, actor: str) -> MpiDecision | None:
    """ADT A37: ``a`` and ``b`` are not the same patient. ``b`` leaves a's golden record if it shares it."""
    row_a, row_b = session.get(MpiSource, a), session.get(MpiSource, b)
    if row_a is None or row_b is None:
        return None
    if row_a.golden_id != row_b.golden_id:
        return _record(
            session,
            action="not-duplicate",
            source_id=b,
            other_source_id=a,
            golden_id=row_b.golden_id,
            previous_golden_id=row_b.golden_id,
            actor=actor,
            data={"link_kind": row_b.link_kind},
        )
    return _move(session, row_b, None, action="unlink", actor=actor, reason="", other=a)


def _move(
    session: Session,
    row: MpiSource,
    target_golden: str | None,
    *,
    action: str,
    actor: str,
    reason: str,
    other: str | None = None,
    review_id: int | None = None,
) -> MpiDecision:
    previous = row.golden_id
    decision = _record(
        session,
        action=action,
        source_id=row.id,
        other_source_id=other,
        golden_id=target_golden or previous,
        previous_golden_id=previous,
        review_id=review_id,
        actor=actor,
        reason=reason,
        data={"link_kind": row.link_kind},
    )
    if target_golden is None:
        # A fresh golden record; its own source's deterministic golden id when free, else a new one.
        own = golden_id_for(row.id)
        taken = session.scalar(select(func.count()).where(MpiSource.golden_id == own, MpiSource.id != row.id))
        target_golden = own if not taken else golden_id_for(f"{row.id}|{decision.id}")
        decision.golden_id = target_golden
    row.golden_id = target_golden
    row.link_kind = "manual"
    row.updated_at = _now()
    return decision


def _after_change(session: Session, goldens: Iterable[str | None], sources: Iterable[str | None]) -> None:
    session.flush()
    settings = configured_settings()
    for golden in sorted({g for g in goldens if g}):
        rebuild_golden(session, golden, settings)
    for sid in sorted({s for s in sources if s}):
        _sync_stored_source(session, sid)


def link(
    session: Session,
    source_id: str,
    target: str,
    *,
    actor: str,
    reason: str = "",
    review_id: int | None = None,
) -> MpiDecision:
    """A steward links ``source_id`` to the golden record of ``target`` (a golden or a source id)."""
    row = _source(session, source_id)
    target_row = session.get(MpiSource, target)
    golden = target_row.golden_id if target_row is not None else target
    if target_row is None and not session.scalar(select(func.count()).where(MpiSource.golden_id == golden)):
        raise NotFound(f"Patient/{target} is neither a golden record nor a source")
    if golden == row.golden_id:
        raise Conflict(f"Patient/{source_id} is already linked to Patient/{golden}")
    decision = _move(
        session,
        row,
        golden,
        action="link",
        actor=actor,
        reason=reason,
        other=target_row.id if target_row is not None else None,
        review_id=review_id,
    )
    _after_change(session, {decision.golden_id, decision.previous_golden_id}, {source_id})
    return decision


def unlink(session: Session, source_id: str, *, actor: str, reason: str = "") -> MpiDecision:
    """A steward takes ``source_id`` out of its golden record into a golden record of its own; it is
    recorded as not being any of the sources it leaves behind."""
    row = _source(session, source_id)
    others = sorted(
        session.scalars(
            select(MpiSource.id).where(MpiSource.golden_id == row.golden_id, MpiSource.id != source_id)
        )
    )
    if not others:
        raise Conflict(f"Patient/{source_id} is the only source of its golden record")
    decision = _move(session, row, None, action="unlink", actor=actor, reason=reason, other=others[0])
    decision.data = {**(decision.data or {}), "others": others}
    _after_change(session, {decision.golden_id, decision.previous_golden_id}, {source_id})
    return decision


def review_pairs(session: Session, status: str = "open") -> list[tuple[int, list[int]]]:
    """The reviews of ``status`` as one entry per pair, highest weight first: (the review shown, the other
    reviews of the same pair). Open reviews pair the two records' current golden records (two sources
    of one person against two of another are one question for a steward); decided ones their sources."""
    source_row, candidate_row = aliased(MpiSource), aliased(MpiSource)
    rows = session.execute(
        select(
            MpiReview.id,
            MpiReview.source_id,
            MpiReview.candidate_source_id,
            source_row.golden_id,
            candidate_row.golden_id,
        )
        .outerjoin(source_row, source_row.id == MpiReview.source_id)
        .outerjoin(candidate_row, candidate_row.id == MpiReview.candidate_source_id)
        .where(MpiReview.status == status)
        .order_by(MpiReview.weight.desc(), MpiReview.id)
    ).all()
    entries: dict[frozenset[str], tuple[int, list[int]]] = {}
    for review_id, source_id, candidate_id, source_golden, candidate_golden in rows:
        if status == "open" and source_golden and candidate_golden and source_golden != candidate_golden:
            key = frozenset((f"g:{source_golden}", f"g:{candidate_golden}"))
        else:
            key = frozenset((f"s:{source_id}", f"s:{candidate_id}"))
        if key in entries:
            entries[key][1].append(review_id)
        else:
            entries[key] = (review_id, [])
    return list(entries.values())


def decide_review(
    session: Session, review_id: int, decision: str, *, actor: str, reason: str = ""
) -> MpiDecision:
    """A steward's answer to a possible match: ``link`` (same person) or ``not-duplicate``; a
    ``not-duplicate`` also answers the other open reviews of the same pair (other sources of the same two
    golden records)."""
    review = session.get(MpiReview, review_id)
    if review is None:
        raise NotFound(f"review {review_id} does not exist")
    if review.status != "open":
        raise Conflict(f"review {review_id} was already decided ({review.status})")
    siblings = next((rest for first, rest in review_pairs(session) if review_id in (first, *rest)), [])
    siblings = [r for r in siblings if r != review_id]
    if decision == "link":
        result = link(
            session,
            review.source_id,
            review.candidate_source_id,
            actor=actor,
            reason=reason,
            review_id=review_id,
        )
        review.status = "linked"
    elif decision == "not-duplicate":
        row = _source(session, review.source_id)
        result = _record(
            session,
            action="not-duplicate",
            source_id=review.source_id,
            other_source_id=review.candidate_source_id,
            golden_id=row.golden_id,
            previous_golden_id=row.golden_id,
            review_id=review_id,
            actor=actor,
            reason=reason,
            data={"link_kind": row.link_kind},
        )
        row.link_kind = "manual"
        review.status = "not-duplicate"
    else:
        raise Conflict(f"unknown review decision {decision!r}")
    review.decided_at = _now()
    # A link moves this review's source only: the pair's other reviews stay open until they are settled
    # (both sides in one golden record) or answered; "not a duplicate" answers them all.
    if decision == "link":
        siblings = []
    for other in session.scalars(
        select(MpiReview).where(MpiReview.id.in_(siblings), MpiReview.status == "open")
    ):
        other.status, other.decided_at = review.status, review.decided_at
    return result


def undo(session: Session, decision_id: int, *, actor: str, reason: str = "") -> MpiDecision:
    """Reverse a decision (a steward's link, unlink or not-duplicate, or an HL7 merge or unlink): the
    source returns to the golden record it had, a reviewed pair goes back to the queue."""
    decision = session.get(MpiDecision, decision_id)
    if decision is None:
        raise NotFound(f"decision {decision_id} does not exist")
    if decision.undone_at is not None:
        raise Conflict(f"decision {decision_id} was already undone")
    if decision.action in ("undo", "change-identifier"):
        raise Conflict(f"a {decision.action} decision cannot be undone")
    row = _source(session, decision.source_id)
    later = session.scalar(
        select(func.count()).where(
            MpiDecision.source_id == decision.source_id,
            MpiDecision.id > decision.id,
            MpiDecision.undone_at.is_(None),
            MpiDecision.action != "undo",
        )
    )
    if later:
        raise Conflict(
            f"decision {decision_id} has later decisions on Patient/{decision.source_id}; undo them first"
        )
    data = decision.data or {}
    current = row.golden_id
    row.golden_id = decision.previous_golden_id or row.golden_id
    row.link_kind = data.get("link_kind", row.link_kind)
    if decision.action == "merge":
        row.active = bool(data.get("active", True))
        row.replaced_by = data.get("replaced_by")
    row.updated_at = _now()
    if decision.review_id is not None:
        review = session.get(MpiReview, decision.review_id)
        if review is not None:
            review.status, review.decided_at = "open", None
    undo_decision = _record(
        session,
        action="undo",
        source_id=decision.source_id,
        other_source_id=decision.other_source_id,
        golden_id=row.golden_id,
        previous_golden_id=current,
        actor=actor,
        reason=reason,
        data={"undoes": decision.id},
    )
    decision.undone_at = _now()
    decision.undone_by = undo_decision.id
    _after_change(session, {current, row.golden_id}, {decision.source_id, decision.other_source_id})
    return undo_decision


def decision_dict(d: MpiDecision) -> dict[str, Any]:
    return {
        "id": d.id,
        "action": d.action,
        "source": d.source_id,
        "other": d.other_source_id,
        "golden": d.golden_id,
        "previousGolden": d.previous_golden_id,
        "review": d.review_id,
        "who": d.actor,
        "why": d.reason,
        "when": d.created_at.isoformat() if d.created_at else None,
        "undoneAt": d.undone_at.isoformat() if d.undone_at else None,
        "undoneBy": d.undone_by,
    }
