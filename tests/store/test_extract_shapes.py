"""``extract_rows`` binds each type's parameters to the shape of a resource (its keys and the keys of its
``meta``) and caches the binding. Whatever the shape, the rows are those of the plain reading of the
parameter table: every path walked with ``walk`` (the path language's own walker), each value's rows
deduplicated per parameter, the ``:of-type`` / ``:identifier`` rows after the value that makes them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hub.store import search_params as sp

TYPES = ("Observation", "Patient", "Encounter", "Immunization", "Provenance", "AuditEvent", "RiskAssessment")
# The keys the parameters of these types read, their choice types' spellings, and keys none reads.
TOP_KEYS = sorted(
    {
        path.split(".")[0].split("(")[0].replace("[x]", suffix)
        for rtype in TYPES
        for p in sp.params_of(rtype).values()
        for path in p.paths
        for suffix in ("DateTime", "Period", "Boolean", "String", "Decimal")
    }
    | {"id", "text", "effective", "effectivedate", "extension"}
)
INNER_KEYS = (
    "coding", "system", "code", "display", "text", "value", "type", "reference", "identifier", "start",
    "end", "unit", "family", "given", "city", "country", "who", "what", "individual", "location", "actor",
    "tag", "security", "profile", "source", "versionId", "probabilityDecimal", "qualitativeRisk",
    "valueQuantity", "component", "use", "other", "language",
)  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from(["", " ", "phone", "email", "final", "Patient/p1", "Observation/o1/_history/2",
                     "urn:uuid:1", "2024", "2024-03-05T10:00:00+07:00", "Ána", "x" * 300]),
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(INNER_KEYS), inner, max_size=4)
    ),
    max_leaves=12,
)


def _reference_rows(resource: dict[str, Any]) -> sp.Rows:
    rtype = resource.get("resourceType", "")
    out: sp.Rows = {kind: [] for kind in sp.KINDS}
    aliases = sp.ALIASES.get(rtype, {})
    for p in sp.params_of(rtype).values():
        if p.type in (sp.SPECIAL, sp.COMPOSITE) or p.name in aliases:
            continue
        seen: set[tuple[Any, ...]] = set()
        for value in [v for path in p.paths for v in sp.walk(resource, path)]:
            for row in sp._ROW_MAKERS[p.type](p, value):
                if row not in seen:
                    seen.add(row)
                    out[p.type].append(row)
            if p.type in (sp.TOKEN, sp.REFERENCE) and isinstance(value, dict):
                extra = sp._modifier_row(p, value)
                if extra is not None:
                    out[sp.TOKEN].append(extra)
    return out


@st.composite
def resources(draw: st.DrawFn) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": draw(st.sampled_from(TYPES))}
    for key in draw(st.lists(st.sampled_from(TOP_KEYS), max_size=8, unique=True)):
        resource[key] = draw(VALUES)
    if draw(st.booleans()):
        meta_keys = st.sampled_from(("tag", "security", "profile", "source", "versionId", "lastUpdated"))
        resource["meta"] = draw(st.one_of(st.dictionaries(meta_keys, VALUES, max_size=4), VALUES))
    return resource


def _outcome(extract: Callable[[dict[str, Any]], sp.Rows], resource: dict[str, Any]) -> Any:
    """The rows, or the type of the error: a value of a shape no valid resource has (``"coding": true``)
    fails the row makers, the same way through either reading."""
    try:
        return extract(resource)
    except (TypeError, AttributeError) as exc:
        return type(exc)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(resource=resources())
def test_rows_of_any_shape_are_those_of_the_plain_walk(resource: dict[str, Any]) -> None:
    expected = _outcome(_reference_rows, resource)
    assert _outcome(sp.extract_rows, resource) == expected
    assert _outcome(sp.extract_rows, resource) == expected  # the second time from the cache
