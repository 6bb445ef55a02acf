"""The resource store's write path: versions, no-op resends, resources written twice in one call, ORM
entities kept coherent with rows written through the driver, and index rows rewritten only where an
update changed them. Every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from hub.db import session_scope
from hub.store import bulk, resources
from hub.store.models import Resource, ResourceVersion, SearchDate, SearchReference, SearchString, SearchToken
from tests.fhir_api import builders as b


def _versions(engine: Engine, rtype: str, rid: str) -> list[int]:
    with Session(engine) as s:
        return list(
            s.scalars(
                select(ResourceVersion.version_id)
                .where(ResourceVersion.resource_type == rtype, ResourceVersion.id == rid)
                .order_by(ResourceVersion.version_id)
            )
        )


def _index(engine: Engine, model: type[Any], rid: str) -> list[tuple[object, ...]]:
    """(row_id, param, first value column) of a resource's rows in one index table, by row id."""
    value = model.code if model is SearchToken else model.value if model is SearchString else model.low
    with Session(engine) as s:
        return [
            tuple(r)
            for r in s.execute(
                select(model.row_id, model.param, value)
                .where(model.resource_pk == select(Resource.pk).where(Resource.id == rid).scalar_subquery())
                .order_by(model.row_id)
            )
        ]


def test_create_update_and_unchanged_resend(engine: Engine) -> None:
    now = datetime(2026, 3, 5, 10, 0, 0, 123000, tzinfo=UTC)
    with session_scope(engine) as s:
        (first,) = resources.upsert_many(s, [b.patient("p1")], message_id=None, now=now)
    assert (first.version_id, first.changed) == (1, True)
    with session_scope(engine) as s:
        again = resources.upsert(s, b.patient("p1"))  # the same content: no new version
        changed = resources.upsert(s, b.patient("p1", family="Wijaya"))
    assert (again.version_id, again.changed) == (1, False)
    assert (changed.version_id, changed.changed) == (2, True)
    assert _versions(engine, "Patient", "p1") == [1, 2]
    with Session(engine) as s:
        row = s.get(Resource, ("Patient", "p1"))
        assert row is not None and row.version_id == 2 and row.patient_id == "p1" and not row.deleted
        stored = orjson.loads(row.content)
        assert stored["name"][0]["family"] == "Wijaya" and stored["meta"]["versionId"] == "2"
        first_version = s.get(ResourceVersion, ("Patient", "p1", 1))
        # Written through the driver, read back by the ORM: the same instant on both dialects.
        assert first_version is not None and first_version.last_updated.replace(tzinfo=UTC) == now


def test_entity_loaded_before_an_update_is_not_stale(engine: Engine) -> None:
    with session_scope(engine) as s:
        resources.upsert(s, b.patient("p2"))
    with session_scope(engine) as s:
        loaded = s.get(Resource, ("Patient", "p2"))
        assert loaded is not None and loaded.version_id == 1
        resources.upsert(s, b.patient("p2", given="Ani"))
        assert loaded.version_id == 2 and b'"Ani"' in loaded.content
        assert resources.read(s, "Patient", "p2")["name"][0]["given"] == ["Ani"]


def test_a_resource_twice_in_one_call_keeps_both_versions_and_the_last_index(engine: Engine) -> None:
    with session_scope(engine) as s:
        out = resources.upsert_many(
            s, [b.observation("o1", "p1", code="1111-1"), b.observation("o1", "p1", code="2222-2")]
        )
    assert [(w.version_id, w.changed) for w in out] == [(1, True), (2, True)]
    assert _versions(engine, "Observation", "o1") == [1, 2]
    codes = [code for _, param, code in _index(engine, SearchToken, "o1") if param == "code"]
    assert codes == ["2222-2"]
    with session_scope(engine) as s:  # now an update, twice in one call
        resources.upsert_many(
            s, [b.observation("o1", "p1", code="3333-3"), b.observation("o1", "p1", code="4444-4")]
        )
    codes = [code for _, param, code in _index(engine, SearchToken, "o1") if param == "code"]
    assert codes == ["4444-4"]
    assert _versions(engine, "Observation", "o1") == [1, 2, 3, 4]


def test_update_rewrites_only_the_index_tables_it_changes(engine: Engine) -> None:
    with session_scope(engine) as s:
        resources.upsert(s, b.patient("p3", family="Santoso", mrn="M3"))
    tokens, dates = _index(engine, SearchToken, "p3"), _index(engine, SearchDate, "p3")
    assert tokens and dates
    with session_scope(engine) as s:
        resources.upsert(s, b.patient("p3", family="Wijaya", mrn="M3"))
    # Same tokens and birth date: the very same rows (same row ids), not deleted and re-inserted.
    assert _index(engine, SearchToken, "p3") == tokens
    assert _index(engine, SearchDate, "p3") == dates
    families = {v for _, param, v in _index(engine, SearchString, "p3") if param == "family"}
    assert families == {"wijaya"}
    with session_scope(engine) as s:
        resources.upsert(s, b.patient("p3", family="Wijaya", mrn="M3", birth_date="1981-01-02"))
    (low,) = [v for _, param, v in _index(engine, SearchDate, "p3") if param == "birthdate"]
    assert isinstance(low, datetime) and (low.year, low.month, low.day) == (1981, 1, 2)
    assert _index(engine, SearchToken, "p3") == tokens


def test_delete_then_recreate(engine: Engine) -> None:
    with session_scope(engine) as s:
        resources.upsert(s, b.observation("o5", "p1"))
    with session_scope(engine) as s:
        resources.delete(s, "Observation", "o5")
    assert _index(engine, SearchToken, "o5") == []
    with session_scope(engine) as s:
        again = resources.upsert(s, b.observation("o5", "p1"))
    assert (again.version_id, again.changed) == (3, True)
    assert {param for _, param, _ in _index(engine, SearchToken, "o5")} >= {"code", "status"}


def test_bulk_rows_fail_as_sqlalchemy_errors(engine: Engine) -> None:
    """Rows through the driver (COPY on PostgreSQL) fail like any statement: an IntegrityError, and the
    savepoint around them rolls back alone."""
    row = ("Basic", "dup", 1, datetime(2026, 1, 1, tzinfo=UTC), False, None, b"{}")
    columns = ("resource_type", "id", "version_id", "last_updated", "deleted", "patient_id", "content")
    with session_scope(engine) as s:
        with pytest.raises(IntegrityError), s.begin_nested():
            bulk.insert_rows(s.connection(), Resource.__table__, columns, [row, row])  # type: ignore[arg-type]
        bulk.insert_rows(s.connection(), Resource.__table__, columns, [row])  # type: ignore[arg-type]
    with Session(engine) as s:
        stored = s.get(Resource, ("Basic", "dup"))
        assert stored is not None and stored.content == b"{}"


def test_new_resources_get_increasing_pks_that_their_index_rows_carry(engine: Engine) -> None:
    with session_scope(engine) as s:
        resources.upsert_many(
            s, [b.patient("p1"), b.observation("o1", "p1"), b.observation("o1", "p1", code="2222-2")]
        )
    with session_scope(engine) as s:
        resources.upsert_many(s, [b.observation("o2", "p1"), b.patient("p1", family="Wijaya")])
    with Session(engine) as s:
        pks = {rid: pk for rid, pk in s.execute(select(Resource.id, Resource.pk))}
        assert pks["p1"] < pks["o1"] < pks["o2"]  # in order of creation; an update keeps its pk
        owners = s.execute(
            select(SearchReference.resource_id, SearchReference.resource_pk).where(
                SearchReference.param == "subject"
            )
        ).all()
        assert sorted(owners) == [("o1", pks["o1"]), ("o2", pks["o2"])]
        names = s.scalars(select(SearchString.value).where(SearchString.resource_pk == pks["p1"]))
        assert "wijaya" in set(names)
