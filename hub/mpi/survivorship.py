"""Survivorship: which source gives each element of a golden Patient, by rules per element.

Pure functions over the sources' stored content (no database): :func:`build_golden` is called by
``hub.mpi.service.rebuild_golden`` with the golden record's sources. The rules of an element are tried in
order; the first that tells two sources apart decides between them:

- ``fuller``: a value that holds another one and more beats it (a name whose tokens include the other's,
  "Bpk. Budi Hartono Santoso" over "Budi Santoso"; an address with every part of the other and more;
  telecoms that include the other's). It refines the choice the other rules made, so a sparse message
  never shrinks the golden record, whatever its sender or date.
- ``nik``: a source that carries a valid NIK beats one without (its demographics were checked against
  the population register more likely than not).
- ``trust``: the configured trust order of sending facilities (``HUB_MPI_SENDER_TRUST``), higher first.
- ``recent``: the most recently changed source first.

Active sources always come before retired (merged-away) ones; the source id breaks the last tie. Every
identifier of every source is kept (the union, in the order of the ranked sources). Each element the
golden record takes records where it came from: an extension (:data:`SOURCE_EXTENSION`) with ``source``
(a Reference to the source Patient) and ``rule`` (the rule that chose it, ``only`` when one source has
the element, ``union`` for identifiers), on each item of a list element (name, telecom, address,
identifier, communication), on a CodeableConcept (maritalStatus), and in the ``_element`` companion of a
primitive (``_birthDate``, ``_gender``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from hub.mpi.match import NIK_SYSTEM, name_tokens, parse_nik

SOURCE_EXTENSION: Final = "https://hub.kemkes.go.id/fhir/StructureDefinition/mpi-source"
RULES: Final = ("fuller", "nik", "trust", "recent")

# Elements of the golden record, each from one source, and their default rules.
DEFAULT_RULES: Final[dict[str, tuple[str, ...]]] = {
    "name": ("fuller", "nik", "trust", "recent"),
    "gender": ("nik", "trust", "recent"),
    "birthDate": ("nik", "trust", "recent"),
    "address": ("fuller", "recent", "trust"),
    "telecom": ("fuller", "recent", "trust"),
    "deceasedBoolean": ("trust", "recent"),
    "deceasedDateTime": ("trust", "recent"),
    "maritalStatus": ("trust", "recent"),
    "multipleBirthBoolean": ("trust", "recent"),
    "multipleBirthInteger": ("trust", "recent"),
    "communication": ("trust", "recent"),
}
_PRIMITIVES: Final = frozenset(
    {
        "gender",
        "birthDate",
        "deceasedBoolean",
        "deceasedDateTime",
        "multipleBirthBoolean",
        "multipleBirthInteger",
    }
)


class Source(Protocol):
    """What survivorship reads of an ``mpi_source`` row."""

    id: str
    active: bool
    facility: str
    updated_at: datetime | None
    content: Any


def check_rules(rules: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """The default rules with ``rules`` (element → rule names) in place of an element's; a clear error
    for an unknown element or rule."""
    out = dict(DEFAULT_RULES)
    for element, names in rules.items():
        if element not in DEFAULT_RULES:
            raise ValueError(f"survivorship: unknown element {element!r} (known: {', '.join(DEFAULT_RULES)})")
        unknown = [n for n in names if n not in RULES]
        if unknown:
            raise ValueError(
                f"survivorship: unknown rule {unknown[0]!r} for {element} (known: {', '.join(RULES)})"
            )
        out[element] = tuple(names)
    return out


def _utc(value: datetime | None) -> datetime:
    if value is None:
        return datetime.min.replace(tzinfo=UTC)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def has_nik(content: Mapping[str, Any]) -> bool:
    for ident in content.get("identifier") or []:
        if not isinstance(ident, dict) or not ident.get("value"):
            continue
        codes = [c.get("code") for c in (ident.get("type") or {}).get("coding") or [] if isinstance(c, dict)]
        if (ident.get("system") == NIK_SYSTEM or "NNIDN" in codes) and parse_nik(str(ident["value"])):
            return True
    return False


def _name_tokens(value: Any) -> set[str]:
    out: set[str] = set()
    for name in value or []:
        if isinstance(name, dict):
            text = name.get("text") or " ".join(
                [*(str(g) for g in name.get("given") or []), str(name.get("family") or "")]
            )
            out |= set(name_tokens(str(text)))
    return out


def _leaves(value: Any, prefix: str = "") -> set[tuple[str, str]]:
    """(path, value) of every leaf, lists read as sets: what a value holds, to tell a fuller one."""
    if isinstance(value, dict):
        return {leaf for k, v in value.items() if k != "extension" for leaf in _leaves(v, f"{prefix}.{k}")}
    if isinstance(value, list):
        return {leaf for v in value for leaf in _leaves(v, prefix)}
    text = str(value).strip().lower()
    return {(prefix, text)} if text else set()


def _holds(element: str, bigger: Any, smaller: Any) -> bool:
    """Whether ``bigger`` holds everything ``smaller`` has, and more."""
    if element == "name":
        return _name_tokens(smaller) < _name_tokens(bigger)
    return _leaves(smaller) < _leaves(bigger)


def _key(rule: str, src: Source, trust: Mapping[str, int], nik: Callable[[Source], bool]) -> Any:
    if rule == "nik":
        return nik(src)
    if rule == "trust":
        return trust.get(src.facility, 0)
    if rule == "recent":
        return _utc(src.updated_at)
    return 0  # fuller: not an order of its own, see _choose


def _choose(
    element: str,
    having: list[Source],
    rules: Sequence[str],
    trust: Mapping[str, int],
    nik: Callable[[Source], bool],
) -> tuple[Source, str]:
    """The source whose value of ``element`` the golden record takes, and the rule that chose it."""
    ordering = [r for r in rules if r != "fuller"]

    def rank(src: Source) -> tuple[Any, ...]:
        return (src.active, *(_key(r, src, trust, nik) for r in ordering), src.id)

    ranked = sorted(having, key=rank, reverse=True)
    if len(ranked) == 1:
        return ranked[0], "only"
    winner = ranked[0]
    runner_up = ranked[1]
    rule = next(
        (r for r in ordering if _key(r, winner, trust, nik) != _key(r, runner_up, trust, nik)),
        "active" if winner.active != runner_up.active else "id",
    )
    if "fuller" in rules:
        # A value that holds the chosen one and more replaces it (the best-ranked such), until none does.
        while True:
            fuller = [
                s
                for s in ranked
                if s.active >= winner.active
                and _holds(element, s.content.get(element), winner.content.get(element))
            ]
            if not fuller:
                break
            winner, rule = fuller[0], "fuller"
    return winner, rule


def _origin(src: Source, rule: str) -> dict[str, Any]:
    return {
        "url": SOURCE_EXTENSION,
        "extension": [
            {"url": "source", "valueReference": {"reference": f"Patient/{src.id}"}},
            {"url": "rule", "valueCode": rule},
        ],
    }


def _with_origin(value: Any, origin: dict[str, Any]) -> Any:
    if not isinstance(value, dict):
        return value
    kept = [e for e in value.get("extension") or [] if e.get("url") != SOURCE_EXTENSION]
    return {**value, "extension": [*kept, origin]}


def without_origin(value: Any) -> Any:
    """``value`` (a golden element) without the survivorship extensions: as its source gave it."""
    if isinstance(value, list):
        return [without_origin(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: without_origin(v) for k, v in value.items() if k != "extension"}
    kept = [e for e in value.get("extension") or [] if e.get("url") != SOURCE_EXTENSION]
    if kept:
        out["extension"] = kept
    return out


def build_golden(
    golden_id: str,
    sources: Sequence[Source],
    *,
    rules: Mapping[str, Sequence[str]] | None = None,
    trust: Mapping[str, int] | None = None,
    tag: Mapping[str, str],
) -> dict[str, Any]:
    """The golden Patient of ``sources`` (at least one) by the survivorship rules (``rules``: element →
    rule names, the defaults where not given; ``trust``: facility → trust, higher wins)."""
    element_rules = dict(DEFAULT_RULES) if rules is None else {**DEFAULT_RULES, **rules}
    trust = trust or {}
    niks: dict[str, bool] = {}

    def nik(src: Source) -> bool:
        if src.id not in niks:
            niks[src.id] = has_nik(src.content or {})
        return niks[src.id]

    golden: dict[str, Any] = {"resourceType": "Patient", "id": golden_id, "meta": {"tag": [dict(tag)]}}
    ranked = sorted(
        sources,
        key=lambda s: (s.active, nik(s), trust.get(s.facility, 0), _utc(s.updated_at), s.id),
        reverse=True,
    )
    identifiers: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for src in ranked:
        for ident in (src.content or {}).get("identifier") or []:
            if not isinstance(ident, dict):
                continue
            key = (str(ident.get("system") or ""), str(ident.get("value") or ""))
            if key[1] and key not in seen:
                seen.add(key)
                identifiers.append(_with_origin(ident, _origin(src, "union")))
    if identifiers:
        golden["identifier"] = identifiers
    golden["active"] = True
    for element, names in element_rules.items():
        having = [s for s in sources if (s.content or {}).get(element) not in (None, [], "", {})]
        if not having:
            continue
        src, rule = _choose(element, having, names, trust, nik)
        value = src.content[element]
        origin = _origin(src, rule)
        if element in _PRIMITIVES:
            golden[element] = value
            golden[f"_{element}"] = {"extension": [origin]}
        elif isinstance(value, list):
            golden[element] = [_with_origin(item, origin) for item in value]
        else:
            golden[element] = _with_origin(value, origin)
    return golden
