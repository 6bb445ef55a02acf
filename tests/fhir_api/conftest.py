"""Fixtures for the FHIR API: an app on the parametrised database (SQLite and PostgreSQL), an ASGI
client, bearer tokens per role, and a helper storing synthetic resources through the resource store."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from hub.app import create_app
from hub.auth import issue_token
from hub.config import Settings
from hub.db import get_engine, get_read_engine, session_scope
from hub.store import resources


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_url, var_dir=tmp_path / "var")


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    """An ASGI client (the lifespan, which starts listeners and workers, is not entered)."""
    app = create_app(settings)
    yield TestClient(app, base_url="http://hub.test")
    get_engine(settings.sqlalchemy_url).dispose()
    get_read_engine(settings.sqlalchemy_url).dispose()


@pytest.fixture
def token(settings: Settings) -> Callable[[str], dict[str, str]]:
    def make(role: str = "clinician") -> dict[str, str]:
        facilities = ["RS-TEST"] if role == "sender" else None  # a sender is bound to its facility
        return {"Authorization": f"Bearer {issue_token(settings, role, facilities=facilities)}"}

    return make


@pytest.fixture
def auth(token: Callable[[str], dict[str, str]]) -> dict[str, str]:
    return token("clinician")


@pytest.fixture
def put(engine: Engine) -> Callable[..., None]:
    def store(*items: dict[str, Any]) -> None:
        with session_scope(engine) as session:
            for item in items:
                resources.upsert(session, item)

    return store


def match_ids(bundle: dict[str, Any]) -> list[str]:
    """Ids of the entries a searchset Bundle returned as matches, in order."""
    return [
        e["resource"]["id"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "match"
    ]


def included_keys(bundle: dict[str, Any]) -> set[str]:
    return {
        f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode") == "include"
    }
