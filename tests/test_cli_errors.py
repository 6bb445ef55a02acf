"""``hub`` commands refuse what cannot work, with one line on what was wrong and a non-zero exit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from hub.cli import app
from hub.config import get_settings
from hub.store.models import Sender

runner = CliRunner()


@pytest.fixture
def cli_env(
    database_url: str, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    monkeypatch.delenv("HUB_BROKER_URL", raising=False)
    monkeypatch.setenv("HUB_DATABASE_URL", database_url)
    monkeypatch.setenv("HUB_VAR_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    yield database_url
    get_settings.cache_clear()


def test_sender_add_with_an_unknown_overlay_fails(cli_env: str, engine: Engine) -> None:
    r = runner.invoke(app, ["sender", "add", "RS_X", "--overlay", "doesnotexist"])
    assert r.exit_code != 0 and "overlay 'doesnotexist' does not exist" in r.output
    with Session(engine) as s:
        assert s.scalars(select(Sender).where(Sender.facility == "RS_X")).first() is None


def test_sender_add_charset(cli_env: str, engine: Engine) -> None:
    bad = runner.invoke(app, ["sender", "add", "RS_Y", "--charset", "klingon"])
    assert bad.exit_code != 0 and "unknown character set" in bad.output
    ok = runner.invoke(app, ["sender", "add", "RS_Y", "--charset", "8859/1"])
    assert ok.exit_code == 0, ok.output
    with Session(engine) as s:
        sender = s.scalars(select(Sender).where(Sender.facility == "RS_Y")).one()
        assert sender.charset == "8859/1"


def test_replay_of_an_unknown_id_fails(cli_env: str) -> None:
    r = runner.invoke(app, ["replay", "--id", "9999"])
    assert r.exit_code != 0 and "no stored message with id 9999" in r.output
