"""Shared fixtures: a migrated database on SQLite always and on PostgreSQL when it is reachable.

The PostgreSQL URL comes from HUB_TEST_POSTGRES_URL (``.ci/run`` sets it). Tests skip with a reason when
the server is unreachable outside CI; under CI (``CI=true``) an unreachable server is an error, so what
lands has really run against PostgreSQL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings
from sqlalchemy import Engine, create_engine, text

from hub.db import make_engine
from hub.store.models import Base
from hub.store.schema import scratch_database, upgrade

PG_URL = os.environ.get("HUB_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
RABBITMQ_URL = os.environ.get("HUB_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
REDIS_URL = os.environ.get("HUB_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
ON_CI = os.environ.get("CI", "").lower() == "true"
SHARED = Path(__file__).resolve().parents[2] / "shared"

# CI explores the same examples on every run (a landing never hinges on a lucky draw); local runs explore
# new ones, which is where property tests find new bugs.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if ON_CI:
    hypothesis_settings.load_profile("ci")


def _pg_reachable() -> str | None:
    try:
        eng = create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with eng.connect() as conn:
            conn.execute(text("select 1"))
        eng.dispose()
        return None
    except Exception as exc:  # any failure to connect means "not reachable"
        return f"PostgreSQL at {PG_URL} is not reachable ({type(exc).__name__})"


def require_postgres() -> None:
    reason = _pg_reachable()
    if reason is not None:
        if ON_CI:
            pytest.fail(reason + " — CI must run the PostgreSQL tests")
        pytest.skip(reason)


def require_broker(url: str) -> None:
    """Skip (fail under CI) unless the Celery broker at ``url`` answers: a real AMQP or Redis handshake."""
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:  # any failure to connect means "not reachable"
        reason = f"broker at {url} is not reachable ({type(exc).__name__})"
        if ON_CI:
            pytest.fail(reason + " — CI must run the broker tests")
        pytest.skip(reason)


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A PostgreSQL database of its own (empty, not migrated), dropped afterwards."""
    require_postgres()
    with scratch_database(PG_URL, "hub_test") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def fresh_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of this test's own, not migrated (for tests that run ``hub db upgrade`` themselves and
    start real processes on it): a SQLite file under tmp_path, or a new PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hub.db'}"
        return
    with fresh_pg_database() as url:
        yield url


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, migrated to head, dropped at the end."""
    require_postgres()
    with scratch_database(PG_URL, "hub_test") as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def sqlite_database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'hub.db'}"
    upgrade(url)
    return url


def _truncate(engine: Engine) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(
                text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE")
            )
        else:
            for t in tables:
                conn.execute(text(f'DELETE FROM "{t}"'))


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """The URL of a migrated, empty database: every test using it runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_database_url"))
    return str(request.getfixturevalue("pg_database_url"))


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url)
    _truncate(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def shared_corpus() -> Path:
    corpus = SHARED / "corpus"
    if not corpus.is_dir():
        pytest.skip("../shared/corpus is absent (a fresh clone has no ../shared); corpus tests need it")
    return corpus
