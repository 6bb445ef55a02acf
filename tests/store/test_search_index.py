"""The search index: values extracted per parameter type, and index rows kept in step with the resource
in the same transaction (written on create, rewritten on update, removed on delete)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select

from hub.db import session_scope
from hub.store import resources
from hub.store.models import Resource, SearchDate, SearchQuantity, SearchReference, SearchString, SearchToken
from hub.store.search_params import Stored, date_range, extract_rows, normalize, stored_as, walk
from tests.fhir_api import builders as b


def test_date_range_follows_precision() -> None:
    assert date_range("2024") == (
        datetime(2024, 1, 1, tzinfo=UTC),
        datetime(2024, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    )
    low, high = date_range("2024-02") or (None, None)
    assert low == datetime(2024, 2, 1, tzinfo=UTC) and high == datetime(
        2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC
    )
    # A dateTime with an offset is stored in UTC.
    low, high = date_range("2024-03-05T10:00:00+07:00") or (None, None)
    assert low == datetime(2024, 3, 5, 3, 0, tzinfo=UTC)
    assert high == datetime(2024, 3, 5, 3, 0, 0, 999999, tzinfo=UTC)
    assert date_range("05/03/2024") is None


def test_walk_choice_types_and_filters() -> None:
    obs = b.observation("o1", "p1")
    assert list(walk(obs, "effective[x]")) == ["2024-03-05T10:00:00Z"]
    pat = b.patient("p1", phone="0812")
    pat["telecom"].append({"system": "email", "value": "a@example.org"})
    assert [t["value"] for t in walk(pat, "telecom(system=phone)")] == ["0812"]


def test_extract_rows_per_type() -> None:
    rows = extract_rows(b.observation("o1", "p1", value=7.5, unit="mmol/L"))
    tokens = {(param, system, code) for param, system, code, _ in rows["token"]}
    assert ("code", "http://loinc.org", "8480-6") in tokens and ("status", "", "final") in tokens
    # patient is subject restricted to Patient targets: its rows are subject's, not written twice.
    assert set(rows["reference"]) == {("subject", "Patient", "p1")}
    assert stored_as("Observation", "patient") == Stored("subject", ("Patient",))
    assert [(r[0], r[1], r[3]) for r in rows["quantity"]] == [("value-quantity", 7.5, "mmol/L")]
    names = extract_rows(b.patient("p1", family="Pérez", given="Ána"))
    assert {"perez", "ana"} <= {value for param, value, _ in names["string"] if param == "name"}
    assert normalize("  ÉLODIE ") == "elodie"


def _pk(rid: str) -> Any:
    return select(Resource.pk).where(Resource.id == rid).scalar_subquery()


def _count(engine: Engine, model: type, rid: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(model).where(model.resource_pk == _pk(rid))
            ).scalar_one()
        )


def _count_all(engine: Engine, model: type) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def test_index_follows_the_resource(engine: Engine) -> None:
    with session_scope(engine) as session:
        resources.upsert(session, b.observation("o1", "p1", code="8480-6"))
    assert _count(engine, SearchReference, "o1") == 1  # subject (patient searches read its rows)
    assert _count(engine, SearchDate, "o1") == 1
    assert _count(engine, SearchQuantity, "o1") == 1
    with session_scope(engine) as session:
        resources.upsert(session, b.observation("o1", "p1", code="8462-4", value=None))
    with engine.connect() as conn:
        codes = set(
            conn.execute(
                select(SearchToken.code).where(
                    SearchToken.resource_pk == _pk("o1"), SearchToken.param == "code"
                )
            ).scalars()
        )
    assert codes == {"8462-4"}
    assert _count(engine, SearchQuantity, "o1") == 0
    with session_scope(engine) as session:
        resources.delete(session, "Observation", "o1")
    for model in (SearchToken, SearchReference, SearchDate, SearchString):
        assert _count(engine, model, "o1") == 0


def test_index_rolls_back_with_the_resource(engine: Engine) -> None:
    try:
        with session_scope(engine) as session:
            resources.upsert(session, b.patient("p9"))
            raise RuntimeError("abort")
    except RuntimeError:
        pass
    assert _count_all(engine, SearchString) == 0  # the store was empty: no row of p9 is left behind
