"""The FHIR bench (``python -m bench fhir``) runs end to end on a small load into a database it creates,
and a database it cannot use is a one-line message, not a trace (the figures come from ``make bench``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from bench.fhir_bench import ensure_database, main, run
from tests.conftest import PG_URL, require_postgres


@pytest.fixture
def new_database_url() -> Iterator[str]:
    """The URL of a PostgreSQL database that does not exist yet; dropped afterwards if something made it."""
    require_postgres()
    name = f"hub_test_bench_{uuid.uuid4().hex[:10]}"
    yield PG_URL.rsplit("/", 1)[0] + "/" + name
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _exists(url: str) -> bool:
    admin = create_engine(PG_URL)
    with admin.connect() as conn:
        found = conn.execute(
            text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": url.rsplit("/", 1)[1]}
        ).first()
    admin.dispose()
    return found is not None


def test_bench_loads_into_a_new_database_and_times_every_query(new_database_url: str) -> None:
    figures = run(
        resources=1_200, patients=12, repeats=2, page=300, database_url=new_database_url, count_cpu=True
    )
    assert figures.resources == 1_200
    assert set(figures.timings) == {
        "read by id",
        "Patient?identifier=",
        "Observation?patient&code&date range (20)",
        "Observation?patient&_include=performer (20)",
        "Observation?patient=golden&code (20)",
        "$everything golden 1,000 (all pages of 300)",
        "$everything golden 1,000 (default pages of 1000)",
    }
    assert len(figures.timings["read by id"]) == 10
    assert all(t > 0 for values in figures.timings.values() for t in values)
    # CPU is counted for every query kind, for the server and for PostgreSQL (clock ticks, so it can be 0)
    assert set(figures.cpu) == set(figures.timings)
    assert all(server >= 0 and postgres >= 0 for server, postgres in figures.cpu.values())
    assert sum(server for server, _ in figures.cpu.values()) > 0
    assert "server ms CPU" in figures.report()
    assert ensure_database(new_database_url) is False  # kept, so --no-load can measure it again


def test_no_load_on_a_missing_database_is_one_line(
    new_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--resources", "100", "--no-load", "--database-url", new_database_url]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench fhir: ") and "does not exist" in err and "Traceback" not in err
    assert not _exists(new_database_url)  # measuring never creates an empty database


def test_no_load_on_an_empty_database_says_to_load_first(
    new_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert ensure_database(new_database_url) is True
    assert main(["--no-load", "--database-url", new_database_url]) == 2
    assert "run once without --no-load" in capsys.readouterr().err
