"""Engines and sessions. Application code never commits; ``session_scope`` (tasks, CLI) and the request
dependency do, at the boundary."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from hub.config import get_settings


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets readers run beside the one writer; FULL makes every commit (so every ACK) survive power loss.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str, *, read_only: bool = False, **kw: Any) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "isolation_level": None}, **kw)
        event.listen(engine, "connect", _sqlite_pragmas)

        # pysqlite's own transaction handling is off (isolation_level=None); begin explicitly so that a
        # writing transaction takes the write lock up front (BEGIN IMMEDIATE) instead of failing mid-way
        # on a stale snapshot. Read-only engines (the FHIR read path) begin deferred and never block.
        begin_sql = "BEGIN" if read_only else "BEGIN IMMEDIATE"

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql(begin_sql)

        return engine
    if read_only and url.startswith("postgresql"):
        # The FHIR read path is short OLTP queries over data that lives in memory: no parallel workers
        # (on a small machine their start-up costs more than a page of results), no JIT, and random
        # reads priced as cached ones, so that ordered index scans win over bitmap scans plus a sort.
        options = "-c max_parallel_workers_per_gather=0 -c jit=off -c random_page_cost=1.1"
        kw.setdefault("connect_args", {"options": options})
    kw.setdefault("pool_size", 10)
    kw.setdefault("max_overflow", 20)
    # The read path skips the liveness ping (≈0.3 ms a read); a dropped connection is recycled instead.
    kw.setdefault("pool_pre_ping", not read_only)
    kw.setdefault("pool_recycle", 1800)
    return create_engine(url, **kw)


@lru_cache(maxsize=4)
def get_engine(url: str | None = None) -> Engine:
    return make_engine(url or get_settings().sqlalchemy_url)


@lru_cache(maxsize=4)
def get_read_engine(url: str | None = None) -> Engine:
    """Engine for read-only work (on SQLite its transactions do not take the write lock)."""
    return make_engine(url or get_settings().sqlalchemy_url, read_only=True)


def session_factory(engine: Engine | None = None) -> sessionmaker[Session]:
    return sessionmaker(bind=engine or get_engine(), expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """One transaction: commit on success, roll back on error."""
    session = session_factory(engine)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
