"""read, vread, instance/type/system history, ETag/If-None-Match and Last-Modified/If-Modified-Since."""

from __future__ import annotations

from collections.abc import Callable
from email.utils import format_datetime, parsedate_to_datetime

from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from hub.db import make_engine, session_scope
from hub.store import resources
from tests.fhir_api import builders as b


def test_read_serves_stored_bytes(client: TestClient, auth: dict[str, str], put: Callable[..., None]) -> None:
    put(b.patient("p1", family="Santoso"))
    r = client.get("/fhir/Patient/p1", headers=auth)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/fhir+json")
    assert r.headers["etag"] == 'W/"1"'
    body = r.json()
    assert body["name"][0]["family"] == "Santoso" and body["meta"]["versionId"] == "1"
    assert "null" not in r.text
    parsedate_to_datetime(r.headers["last-modified"])


def test_read_errors(
    client: TestClient, auth: dict[str, str], engine: Engine, put: Callable[..., None]
) -> None:
    r = client.get("/fhir/Patient/nope", headers=auth)
    assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"
    put(b.patient("p1"))
    with session_scope(engine) as session:
        resources.delete(session, "Patient", "p1")
    r = client.get("/fhir/Patient/p1", headers=auth)
    assert r.status_code == 410 and r.json()["issue"][0]["code"] == "deleted"
    assert client.get("/fhir/patient/p1", headers=auth).status_code == 404


def test_conditional_read(client: TestClient, auth: dict[str, str], put: Callable[..., None]) -> None:
    put(b.patient("p1"))
    r = client.get("/fhir/Patient/p1", headers=auth)
    etag, modified = r.headers["etag"], r.headers["last-modified"]
    assert client.get("/fhir/Patient/p1", headers={**auth, "If-None-Match": etag}).status_code == 304
    assert client.get("/fhir/Patient/p1", headers={**auth, "If-None-Match": 'W/"7"'}).status_code == 200
    assert client.get("/fhir/Patient/p1", headers={**auth, "If-Modified-Since": modified}).status_code == 304
    earlier = format_datetime(parsedate_to_datetime(modified).replace(year=2000), usegmt=True)
    assert client.get("/fhir/Patient/p1", headers={**auth, "If-Modified-Since": earlier}).status_code == 200
    put(b.patient("p1", family="Baru"))
    r = client.get("/fhir/Patient/p1", headers={**auth, "If-None-Match": etag})
    assert r.status_code == 200 and r.headers["etag"] == 'W/"2"'


def test_vread_and_history(
    client: TestClient, auth: dict[str, str], engine: Engine, put: Callable[..., None]
) -> None:
    put(b.patient("p1", family="Satu"))
    put(b.patient("p1", family="Dua"))
    put(b.patient("p2"))
    with session_scope(engine) as session:
        resources.delete(session, "Patient", "p2")
    v1 = client.get("/fhir/Patient/p1/_history/1", headers=auth)
    assert (
        v1.status_code == 200 and v1.json()["name"][0]["family"] == "Satu" and v1.headers["etag"] == 'W/"1"'
    )
    assert client.get("/fhir/Patient/p1/_history/2", headers=auth).json()["name"][0]["family"] == "Dua"
    assert client.get("/fhir/Patient/p1/_history/3", headers=auth).status_code == 404
    assert client.get("/fhir/Patient/p2/_history/2", headers=auth).status_code == 410
    assert client.get("/fhir/Patient/p1/_history/x", headers=auth).status_code == 400

    hist = client.get("/fhir/Patient/p1/_history", headers=auth).json()
    assert hist["type"] == "history"
    assert [e["resource"]["meta"]["versionId"] for e in hist["entry"]] == ["2", "1"]
    assert [e["request"]["method"] for e in hist["entry"]] == ["PUT", "POST"]
    assert client.get("/fhir/Patient/zz/_history", headers=auth).status_code == 404

    # Type history pages newest first without repeats, the deletion included.
    seen = []
    url: str | None = "/fhir/Patient/_history?_count=2"
    while url:
        page = client.get(url, headers=auth).json()
        seen += [(e["fullUrl"].rsplit("/", 1)[-1], e["response"]["etag"]) for e in page["entry"]]
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert sorted(seen) == [("p1", 'W/"1"'), ("p1", 'W/"2"'), ("p2", 'W/"1"'), ("p2", 'W/"2"')]
    system = client.get("/fhir/_history", headers=auth).json()
    deletions = [e for e in system["entry"] if e["request"]["method"] == "DELETE"]
    assert len(deletions) == 1 and "resource" not in deletions[0]


def test_history_since(client: TestClient, auth: dict[str, str], put: Callable[..., None]) -> None:
    put(b.patient("p1"))
    stamp = client.get("/fhir/Patient/p1", headers=auth).json()["meta"]["lastUpdated"]
    put(b.patient("p1", family="Kedua"), b.patient("p2"))
    page = client.get(f"/fhir/Patient/_history?_since={stamp}", headers=auth).json()
    got = sorted((e["resource"]["id"], e["resource"]["meta"]["versionId"]) for e in page["entry"])
    assert got == [("p1", "1"), ("p1", "2"), ("p2", "1")]
    later = client.get("/fhir/Patient/p1/_history?_since=2999-01-01", headers=auth).json()
    assert "entry" not in later
    assert client.get("/fhir/Patient/_history?_since=soon", headers=auth).status_code == 400


def test_read_engine_on_postgres(pg_database_url: str) -> None:
    """The FHIR read engine on PostgreSQL sends no BEGIN (autocommit), fetches results in binary (stored
    bytes as they are, not hex) and plans each execution for its values (no generic plans)."""
    engine = make_engine(pg_database_url, read_only=True)
    try:
        with engine.connect() as conn:
            assert conn.connection.driver_connection.autocommit is True
            assert conn.execute(text("SHOW plan_cache_mode")).scalar() == "force_custom_plan"
            result = conn.execute(text("SELECT decode('7b7d', 'hex'), now()"))
            assert result.cursor.pgresult.fformat(0) == 1  # binary format
            content, now = result.one()
            assert content == b"{}" and now.tzinfo is not None
    finally:
        engine.dispose()
