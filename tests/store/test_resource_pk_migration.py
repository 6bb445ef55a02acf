"""Migration 0007 (resource.pk, the index keyed by resource_pk) on a store that holds data: the migrated
store has the index rows and answers the searches exactly as a store written by today's code does, new
resources written after it get pks above every migrated one, and its downgrade restores the rows keyed by
resource_id. On SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, MetaData, create_engine, text
from sqlalchemy.orm import Session

from hub.db import make_engine, session_scope
from hub.fhir_api import search as fhir_search
from hub.store import resources
from hub.store.models import Resource
from hub.store.schema import downgrade, upgrade
from hub.store.search_index import INDEX_MODELS
from hub.store.search_params import KINDS, extract_rows
from tests.conftest import fresh_pg_database
from tests.fhir_api import builders as b

BEFORE = "0006_resource_patient_index"
# The owner columns of each index table, and the columns after them (not the row_id).
VALUES = {model.__tablename__: KINDS[kind] for kind, model in INDEX_MODELS.items()}


def _store() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        b.patient("p1", family="Santoso", mrn="MRN-1"),
        b.patient("p2", family="Wijaya", given="Sari", gender="female", mrn="MRN-2"),
        b.patient("p3", family="Santika", links=[("seealso", "p1"), ("seealso", "p2")]),
        {"resourceType": "Practitioner", "id": "dr1", "name": [{"family": "Dokter"}]},
        b.encounter("e1", "p1", location="loc1"),
        b.condition("c1", "p2"),
    ]
    for i in range(12):
        out.append(
            b.observation(
                f"o{i:02d}",
                ("p1", "p2")[i % 2],
                code=("8480-6", "8462-4", "2345-7")[i % 3],
                value=100 + 7 * i,
                effective=f"2024-03-{1 + i:02d}T10:00:00Z",
                encounter="e1" if i % 4 == 0 else None,
                performer="dr1" if i % 3 == 0 else None,
            )
        )
    return out


def _write(engine: Engine) -> None:
    """The store as today's code writes it: every resource, one of them updated, one deleted."""
    with session_scope(engine) as session:
        resources.upsert_many(session, _store())
    with session_scope(engine) as session:
        resources.upsert(session, b.observation("o03", "p2", code="8462-4", value=88))
        resources.delete(session, "Observation", "o05")


def _copy_as_0006(written: Engine, old: Engine) -> None:
    """The resource rows of ``written`` into a store at 0006, with the index rows the code of 0006 wrote
    for them (the same extraction, keyed by resource_type and resource_id), plus an index row of a
    resource that does not exist."""
    with written.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(Resource.__table__.select())]
    meta = MetaData()
    with old.begin() as conn:
        meta.reflect(conn)
        conn.execute(
            meta.tables["resource"].insert(), [{k: v for k, v in r.items() if k != "pk"} for r in rows]
        )
        for kind, model in INDEX_MODELS.items():
            table = meta.tables[model.__tablename__]
            index_rows = [
                {
                    "resource_type": r["resource_type"],
                    "resource_id": r["id"],
                    **dict(zip(KINDS[kind], values, strict=True)),
                }
                for r in rows
                if not r["deleted"]
                for values in extract_rows(orjson.loads(r["content"]))[kind]
            ]
            if index_rows:
                conn.execute(table.insert(), index_rows)
        conn.execute(
            meta.tables["search_token"].insert(),
            [
                {
                    "resource_type": "Observation",
                    "resource_id": "gone",
                    "param": "code",
                    "code": "8480-6",
                    "system": "",
                    "text": "",
                }
            ],
        )


def _index(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every index row with the (type, id) of the resource its pk names and the type and id it carries
    itself, sorted."""
    out = {}
    for table, columns in VALUES.items():
        sql = (
            f"SELECT r.resource_type, r.id, t.resource_type, t.resource_id,"
            f" {', '.join('t.' + c for c in columns)} FROM {table} t JOIN resource r ON r.pk = t.resource_pk"
        )
        out[table] = sorted(tuple(row) for row in conn.execute(text(sql)))
    return out


QUERIES: list[tuple[str, list[tuple[str, str]]]] = [
    ("Observation", [("code", "8480-6")]),
    ("Observation", [("patient", "Patient/p1"), ("_count", "2")]),
    ("Observation", [("patient", "Patient/p3"), ("code", "8462-4"), ("_count", "2")]),
    ("Observation", [("date", "ge2024-03-06"), ("_sort", "-date"), ("_count", "3")]),
    ("Observation", [("value-quantity", "gt130")]),
    ("Observation", [("code:not", "8480-6"), ("_include", "Observation:performer")]),
    ("Observation", [("encounter:missing", "true"), ("_count", "4")]),
    ("Observation", [("subject.name", "wij")]),
    ("Observation", [("performer", "Practitioner/dr1"), ("_include", "Observation:encounter")]),
    ("Patient", [("name", "san")]),
    ("Patient", [("identifier", "MRN-2"), ("_revinclude", "Observation:subject")]),
    ("Patient", [("_has:Observation:patient:code", "8462-4")]),
    ("Encounter", [("location", "Location/loc1"), ("_revinclude", "Observation:encounter")]),
]


def _results(engine: Engine) -> list[list[tuple[str, str, str]]]:
    """Every query's matches and included resources over all its pages, in page order."""
    out = []
    with Session(engine) as session:
        for rtype, params in QUERIES:
            found: list[tuple[str, str, str]] = []
            cursor = None
            for _ in range(20):
                query = fhir_search.parse_query(session, rtype, params, strict=True)
                query.cursor = cursor
                page = fhir_search.search(session, query)
                found += [(r.mode, r.resource_type, r.id) for r in page.matches + page.included]
                if page.next_cursor is None:
                    break
                cursor = fhir_search.decode_cursor(page.next_cursor)
            out.append(found)
    return out


@contextmanager
def _other_database(url: str) -> Iterator[str]:
    if url.startswith("sqlite"):
        yield url.replace("hub.db", "written.db")
        return
    with fresh_pg_database() as other:
        yield other


def test_migration_keys_the_index_by_pk_and_searches_find_the_same(fresh_database_url: str) -> None:
    with _other_database(fresh_database_url) as written_url:
        upgrade(written_url)
        written = make_engine(written_url)
        upgrade(fresh_database_url, BEFORE)
        old = create_engine(fresh_database_url)
        try:
            _write(written)
            _copy_as_0006(written, old)
            old.dispose()
            upgrade(fresh_database_url)
            migrated = make_engine(fresh_database_url)
            with written.connect() as a, migrated.connect() as c:
                expected = _index(a)
                assert _index(c) == expected
                assert len(expected["search_token"]) > 50 and expected["search_reference"]
                assert all(row[:2] == row[2:4] for rows in expected.values() for row in rows)
                orphans = c.execute(text("SELECT count(*) FROM search_token WHERE resource_pk IS NULL"))
                assert orphans.scalar_one() == 0
                count = "SELECT count(*) FROM search_token"
                assert c.execute(text(count)).scalar_one() == a.execute(text(count)).scalar_one()
            results = _results(migrated)
            assert results == _results(written)
            assert all(results[i] for i in range(len(QUERIES))), "every query finds something"
            assert ("match", "Observation", "o05") not in {r for page in results for r in page}

            # New resources continue after the migrated ones and are found.
            with migrated.connect() as conn:
                top = conn.execute(text("SELECT max(pk) FROM resource")).scalar_one()
            with session_scope(migrated) as session:
                resources.upsert(session, b.observation("o99", "p1", code="8480-6"))
            with migrated.connect() as conn:
                pk = conn.execute(text("SELECT pk FROM resource WHERE id = 'o99'")).scalar_one()
            assert pk > top
            with Session(migrated) as session:
                query = fhir_search.parse_query(session, "Observation", [("code", "8480-6"), ("_id", "o99")])
                assert [r.id for r in fhir_search.search(session, query).matches] == ["o99"]
            migrated.dispose()

            downgrade(fresh_database_url, BEFORE)
            old = create_engine(fresh_database_url)
            with old.connect() as conn:
                rows = conn.execute(
                    text("SELECT resource_id, param, code FROM search_token WHERE resource_id = 'o99'")
                ).all()
                assert ("o99", "code", "8480-6") in rows
                keys = conn.execute(text("SELECT count(*) FROM resource WHERE id = 'o99'")).scalar_one()
                assert keys == 1
        finally:
            old.dispose()
            written.dispose()
