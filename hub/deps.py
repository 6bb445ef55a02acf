"""FastAPI dependencies shared by the routers: database sessions bound to the running hub's engines.
The request boundary commits; application code never does."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import Request
from sqlalchemy.orm import Session


def db_session(request: Request) -> Iterator[Session]:
    """A read-write session committed when the handler returns without error."""
    session = Session(bind=request.app.state.runtime.engine, expire_on_commit=False)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def read_session(request: Request) -> Iterator[Session]:
    """A session for reads only (on SQLite it never takes the write lock)."""
    session = Session(bind=request.app.state.runtime.read_engine)
    try:
        yield session
    finally:
        session.rollback()
        session.close()
