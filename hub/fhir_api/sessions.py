"""Database sessions for the FHIR routes. The request boundary commits (writes) or rolls back (reads);
route and service code never commits. Engines come from the running hub (``app.state.runtime``) when
it has started, else from ``hub.db``'s cached engines for the app's settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import Request
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from hub.db import get_engine, get_read_engine


def _engines(request: Request) -> tuple[Engine, Engine]:
    runtime: Any = getattr(request.app.state, "runtime", None)
    if runtime is not None:
        return runtime.engine, runtime.read_engine
    url = request.app.state.settings.sqlalchemy_url
    return get_engine(url), get_read_engine(url)


def write_session(request: Request) -> Iterator[Session]:
    """A read-write session committed when the route returns without error (before the response)."""
    session = Session(bind=_engines(request)[0], expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def read_scope(request: Request) -> Iterator[Session]:
    """``read_session`` as a context manager, for the hot search routes: opened and closed in the
    route's own worker thread instead of two extra thread-pool hops of a generator dependency."""
    session = Session(bind=_engines(request)[1])
    try:
        yield session
    finally:
        session.rollback()
        session.close()


@contextmanager
def read_connection(request: Request) -> Iterator[Connection]:
    """A Core connection of the read engine for the single-statement read route (no ORM session);
    closing it returns it to the pool, which rolls its transaction back."""
    with _engines(request)[1].connect() as conn:
        yield conn


def read_session(request: Request) -> Iterator[Session]:
    """A session for reads only (on SQLite it never takes the write lock)."""
    session = Session(bind=_engines(request)[1])
    try:
        yield session
    finally:
        session.rollback()
        session.close()
