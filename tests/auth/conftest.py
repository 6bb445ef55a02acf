"""Fixtures for the auth tests: an app on the parametrised database with its lifespan entered (HL7 over
HTTP needs the intake), a synthetic patient with a record, and tokens per role."""

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
from hub.db import session_scope
from hub.store import resources
from tests.fhir_api import builders as b

FACILITY = "RS-AUTH"


def make_settings(database_url: str, var_dir: Path, **kw: Any) -> Settings:
    return Settings(
        database_url=database_url,
        var_dir=var_dir,
        mllp_enabled=False,
        worker_enabled=False,
        audit_flush_ms=5,
        **kw,
    )


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "var")


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(settings), base_url="http://hub.test") as c:
        yield c


@pytest.fixture
def token(settings: Settings) -> Callable[..., dict[str, str]]:
    def make(role: str, **kw: Any) -> dict[str, str]:
        if role == "sender":
            kw.setdefault("facilities", [FACILITY])
        return {"Authorization": f"Bearer {issue_token(settings, role, **kw)}"}

    return make


@pytest.fixture
def record(engine: Engine) -> dict[str, str]:
    """Two patients (p1 and p2), an Observation of each, an Organization."""
    with session_scope(engine) as session:
        for item in (
            b.patient("p1"),
            b.patient("p2", family="Wibowo"),
            b.observation("o1", "p1"),
            b.observation("o2", "p2"),
            {"resourceType": "Organization", "id": "org1", "name": "RSUD Auth"},
        ):
            resources.upsert(session, item)
    return {"patient": "p1", "other": "p2", "observation": "o1"}
