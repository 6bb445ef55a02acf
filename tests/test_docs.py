"""The user documentation: docs/configuration.md is what the settings class makes (every ``HUB_*``
setting, none stale), every ``HUB_*`` name README.md and docs/ mention is a real setting, every docs page
is linked from README.md, relative links resolve, and nothing speaks of how the hub was developed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hub import config_docs
from hub.config import Settings

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted((ROOT / "docs").glob("*.md"))
USER_TEXTS = [ROOT / "README.md", *PAGES, ROOT / "mappings" / "README.md"]
# Names a user may meet that are not settings of the hub: the test suite's own.
NOT_SETTINGS = {"HUB_TEST_POSTGRES_URL", "HUB_TEST_RABBITMQ_URL", "HUB_TEST_REDIS_URL", "HUB_UPDATE_GOLDEN"}


def _setting_names() -> set[str]:
    return {config_docs.env_name(n, f) for n, f in Settings.model_fields.items()}


def test_configuration_page_is_current() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert page == config_docs.render(), "docs/configuration.md is stale: run python -m hub.config_docs"
    assert config_docs.main(["--check"]) == 0


def test_every_setting_is_on_the_configuration_page() -> None:
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(HUB_[A-Z0-9_]+)` \|", page, re.M))
    assert documented == _setting_names()
    assert len(documented) == len(Settings.model_fields) > 50


def test_a_setting_without_text_stops_the_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    first_title, intro, entries = config_docs.SECTIONS[0]
    monkeypatch.setattr(
        config_docs, "SECTIONS", [(first_title, intro, entries[1:]), *config_docs.SECTIONS[1:]]
    )
    with pytest.raises(SystemExit, match=f"not documented: {entries[0][0]}"):
        config_docs.render()


def test_check_reports_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text(config_docs.render().replace("HUB_HTTP_PORT", "HUB_HTTP_PORTE"), encoding="utf-8")
    assert config_docs.main(["--check", "--output", str(stale)]) == 1
    assert config_docs.main(["--output", str(stale)]) == 0
    assert config_docs.main(["--check", "--output", str(stale)]) == 0


@pytest.mark.parametrize("path", USER_TEXTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_hub_name_mentioned_is_a_setting(path: Path) -> None:
    names = set(re.findall(r"\bHUB_[A-Z0-9]+(?:_[A-Z0-9]+)*\b", path.read_text(encoding="utf-8")))
    assert names - _setting_names() - NOT_SETTINGS == set()


def test_readme_links_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert [p.name for p in PAGES if f"(docs/{p.name})" not in readme] == []


@pytest.mark.parametrize("path", USER_TEXTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    broken = [t for t in targets if "://" not in t and not (path.parent / t).exists()]
    assert broken == []


# How the product was made is not the user's business: no work tracking, no version-control jargon.
DEVELOPMENT_WORDS = re.compile(
    r"\b(sessions?|helpers?|issues?|branch(es)?|worktrees?|pull requests?|commit hash(es)?|TODO|FIXME)\b"
    r"|\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b",
    re.I,
)


@pytest.mark.parametrize("path", USER_TEXTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_word_of_how_the_hub_was_developed(path: Path) -> None:
    hits = [
        f"{n}: {m.group(0)}"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        for m in DEVELOPMENT_WORDS.finditer(line)
    ]
    assert hits == []
