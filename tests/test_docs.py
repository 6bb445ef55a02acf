"""The user documentation: docs/configuration.md is what the settings class makes (every ``HUB_*``
setting, none stale), every ``HUB_*`` name README.md and docs/ mention is a real setting, every docs page
is linked from README.md, relative links resolve, every ``hub`` command (with its options) and every route
the pages show exists, and nothing speaks of how the hub was developed. Every page under docs/ is checked
as soon as it exists."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer

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


def test_readme_is_a_start_not_the_manual() -> None:
    """What the hub is, the two commands, the tour and where to go next: the rest is in docs/."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    assert "make run" in readme and "make test" in readme and "## A five-minute tour" in readme


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


# What the pages tell a reader to type must exist: every `hub` command and subcommand with the options
# used beside it, and every route of the hub they name (README.md, mappings/README.md and every docs/
# page, so a new page is checked as soon as it is added).
FENCE = re.compile(r"^[ \t]*```([^\n]*)\n(.*?)^[ \t]*```", re.M | re.S)
SHELL_BLOCKS = {"", "sh", "bash", "shell", "console"}
HUB_COMMAND = re.compile(r"(?<![\w.:-])hub +([a-z][\w|-]*)(?: +([a-z][\w|-]*))?([^\n]*)")
SHELL_BREAK = re.compile(r"\s\|\s|;|&&|\$\(|\|\|")
ROUTE = re.compile(
    r"(?:https?://(?:127\.0\.0\.1|localhost|hub\.example\.go\.id)(?::\d+)?|(?<![\w.:/-]))"
    r"(/(?:fhir|hl7|mpi|stats|auth|metrics|healthz|docs|\.well-known)(?:[/$][^\s`\"'()\[\],;|?#]*)?)"
)


def _code(text: str) -> list[str]:
    """A page's code: the lines of fenced shell blocks (comments dropped), inline code spans, and the
    indented command lines of indented blocks."""
    pieces = [
        re.sub(r"(^|\s)#\s.*$", "", line)
        for lang, block in FENCE.findall(text)
        if lang.strip() in SHELL_BLOCKS
        for line in block.splitlines()
    ]
    prose = FENCE.sub("", text)
    pieces += re.findall(r"`([^`\n]+)`", prose)
    pieces += [line.strip() for line in prose.splitlines() if re.match(r" {4,}(\.venv/bin/)?hub ", line)]
    return pieces


def _cli() -> Any:
    """The ``hub`` command as click sees it (typer's own click: groups have ``commands``)."""
    from hub.cli import app

    group = typer.main.get_command(app)
    assert "serve" in group.commands  # type: ignore[attr-defined]
    return group


def _options(command: Any) -> set[str]:
    return {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"--help"}


def test_every_hub_command_the_pages_use_exists() -> None:
    cli = _cli()
    wrong: list[str] = []
    seen = 0
    for path in USER_TEXTS:
        for code in _code(path.read_text(encoding="utf-8")):
            for name, sub, rest in HUB_COMMAND.findall(code):
                seen += 1
                where = f"{path.relative_to(ROOT)}: hub {name} {sub}".rstrip()
                command = cli.commands.get(name)
                if command is None:
                    wrong.append(f"{where}: no command {name!r}")
                    continue
                commands = [command]
                if hasattr(command, "commands"):
                    if not sub:
                        continue  # the group itself
                    commands = [command.commands.get(s) for s in sub.split("|")]
                    if None in commands:
                        wrong.append(f"{where}: {name} has no subcommand {sub!r}")
                        continue
                    options = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", SHELL_BREAK.split(rest)[0]))
                else:
                    options = set(
                        re.findall(r"(?<![\w-])--[a-z][a-z-]*", SHELL_BREAK.split(f"{sub}{rest}")[0])
                    )
                for cmd in commands:
                    assert cmd is not None
                    unknown = options - _options(cmd)
                    if unknown:
                        wrong.append(f"{where}: no option {', '.join(sorted(unknown))}")
    assert wrong == []
    assert seen > 50  # the pages do show commands: the pattern finds them


def test_every_route_the_pages_name_exists(tmp_path: Path) -> None:
    from starlette.routing import Match

    from hub.app import create_app

    app = create_app(Settings(var_dir=tmp_path / "var", database_url=f"sqlite:///{tmp_path / 'hub.db'}"))

    documented = list(app.openapi()["paths"])

    def known(route: str) -> bool:
        scope = {
            "type": "http",
            "path": route,
            "method": "GET",
            "root_path": "",
            "query_string": b"",
            "headers": [],
        }
        return any(r.matches(scope)[0] != Match.NONE for r in app.routes)

    def known_prefix(route: str) -> bool:  # `/mpi/…`: the routes under it
        return known(route) or any(p.startswith(route + "/") for p in documented)

    assert not known("/hl7/no-such-route") and known("/hl7/messages/1/release")
    wrong: list[str] = []
    seen = 0
    for path in USER_TEXTS:
        for code in _code(path.read_text(encoding="utf-8")):
            code = re.sub(r"<[^>]*>|\{[^}]*\}|\$[A-Z_]+\b", "X", code.replace("\\$", "$"))
            for route in ROUTE.findall(code):
                seen += 1
                prefix = route.endswith(("…", "/"))
                route = route.rstrip("….").rstrip("/") or "/"
                if not (known_prefix(route) if prefix else known(route)):
                    wrong.append(f"{path.relative_to(ROOT)}: {route}")
    assert wrong == []
    assert seen > 50


def _anchors(page: Path) -> set[str]:
    """The anchors of a page's headings, as GitHub makes them (lower case, punctuation dropped, spaces to
    hyphens)."""
    headings = re.findall(r"^#{1,6} +(.+?) *$", FENCE.sub("", page.read_text(encoding="utf-8")), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("path", USER_TEXTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_to_a_section_name_one_that_exists(path: Path) -> None:
    links = re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", path.read_text(encoding="utf-8"))
    broken = [
        f"{target}#{anchor}"
        for target, anchor in links
        if "://" not in target and anchor not in _anchors(path.parent / target if target else path)
    ]
    assert broken == []
