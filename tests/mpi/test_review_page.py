"""The review queue page in headless Chromium: a steward pastes a token and sees the total in the queue,
one entry per pair, 20 to a page; each pair side by side with every identifier, address and phone, and
each field's comparison level (exact with a check mark, partial without one, disagree); names shown as
text, never as markup; a decision with a click. A screenshot of the page is taken and checked.

Chromium is driven over the DevTools protocol (``websockets``, already pinned, speaks it); nothing is
installed for this. Without a ``chromium`` binary on PATH (Debian: ``apt-get install chromium``) the test
is skipped with that reason.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from websockets.sync.client import ClientConnection, connect

from hub.app import create_app
from hub.auth import issue_token
from hub.config import Settings
from hub.db import session_scope
from hub.mpi.router import get_session
from hub.mpi.service import review_pairs
from hub.store.models import MpiReview
from tests.conftest import ON_CI
from tests.mpi.builders import ingest, patient, refer

HEAD_NIK = "3273011505620004"  # a man born 1962-05-15

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_NO_CHROMIUM = "no chromium on PATH (Debian: apt-get install chromium) for the page test"
if CHROMIUM is None and ON_CI:  # .ci/run installs it: CI must not pass without running this test
    pytest.fail(_NO_CHROMIUM + " — CI must run the review page in a browser", pytrace=False)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=_NO_CHROMIUM)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def hub_url(engine: Engine, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The hub's HTTP app on a loopback port (a thread of this process, on the test's database); yields its
    base URL and a steward's token."""
    settings = Settings(var_dir=tmp_path)
    app = create_app(settings)

    def session_dependency() -> Iterator[Session]:
        with session_scope(engine) as session:
            yield session

    app.dependency_overrides[get_session] = session_dependency
    port = _free_port()
    # No lifespan: the page and its API need no intake worker (it would open the default database).
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the hub did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", issue_token(settings, "steward", subject="steward:ani")
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _launch(profile: Path) -> tuple[subprocess.Popen[str], str]:
    """A headless Chromium, and the DevTools WebSocket URL of its page."""
    assert CHROMIUM is not None
    process = subprocess.Popen(
        [
            CHROMIUM,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-extensions",
            "--no-first-run",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    port = None
    deadline = time.monotonic() + 30
    while port is None and time.monotonic() < deadline:
        line = process.stderr.readline()
        found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
        port = int(found.group(1)) if found else None
        if not line and process.poll() is not None:
            break
    if port is None:
        _stop(process)
        raise RuntimeError("chromium did not open its DevTools port")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
        targets = json.load(resp)
    return process, next(t for t in targets if t["type"] == "page")["webSocketDebuggerUrl"]


def _stop(process: subprocess.Popen[str]) -> None:
    process.kill()
    process.wait(timeout=10)
    if process.stderr is not None:
        process.stderr.close()


class Browser:
    """One headless Chromium page, driven over the DevTools protocol."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=30))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg.get("result") or {})

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (awaited when it is a promise)."""
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.call("Page.enable")
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + 20
        while self.evaluate("document.readyState") != "complete":
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not load")
            time.sleep(0.05)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    process, ws_url = _launch(tmp_path / "chromium-profile")
    try:
        with connect(ws_url, max_size=None) as ws:
            yield Browser(ws)
    finally:
        _stop(process)


def _seed_queue(engine: Engine) -> dict[str, Any]:
    """22 possible matches (a typo in the family name, the same birth date), a NIK conflict with every
    identifier, address and phone filled in, and a second review row of that same pair."""
    families = [
        "Lestari", "Hidayat", "Saputra", "Pratama", "Kurniawan", "Setiawan", "Nugroho", "Wibowo", "Susanto",
        "Hakim", "Ramadhan", "Handayani", "Rahmawati", "Purnama", "Utami", "Suryani", "Maharani", "Permata",
        "Kusuma", "Anggraini", "Hasibuan", "Siregar",
    ]  # fmt: skip
    with session_scope(engine) as session:
        for i, family in enumerate(families):
            birth = f"19{60 + i}-0{1 + i % 9}-1{i % 10}"
            ingest(session, "RSUD-A", patient("RSUD-A", f"{i}", f"Dewi <b>{family}</b>", birth, "female"))
            typo = re.sub(r"(?<=.)[aiueo]", lambda m: "e" if m.group() != "e" else "a", family, count=1)
            ingest(session, "RS-B", patient("RS-B", f"{i}", f"Dewi {typo}", birth, "female"))
        head = patient(
            "RSUD-A", "h1", "Budi Santoso", "1962-05-15", "male", nik=HEAD_NIK, bpjs="0001234567890",
            phone="081234567890", district="327301", line="Jl. Mawar No. 1 RT 02/RW 03",
        )  # fmt: skip
        member = patient(
            "RS-B", "m1", "Agus Santoso", "1969-08-02", "male", nik=HEAD_NIK, bpjs="0009876543210",
            phone="+62 812-3456-7890", district="327301", line="Jl. Mawar No. 1 RT 02/RW 03",
        )  # fmt: skip
        ingest(session, "RSUD-A", head)
        ingest(session, "RS-B", member)
        conflict = session.scalars(select(MpiReview).where(MpiReview.reason == "NIK conflict")).one()
        # The same two people asked about again from the other side: still one entry.
        session.add(
            MpiReview(
                source_id=conflict.candidate_source_id,
                candidate_source_id=conflict.source_id,
                golden_id=refer(member),
                weight=conflict.weight - 5,
                reason=conflict.reason,
                comparisons=conflict.comparisons,
                status="open",
            )
        )
        session.flush()
        total = len(review_pairs(session))
        rows = len(session.scalars(select(MpiReview).where(MpiReview.status == "open")).all())
    return {"conflict": conflict.id, "head": head, "member": member, "total": total, "rows": rows}


def _screenshot(browser: Browser) -> bytes:
    """The whole page as a PNG (checked to be one, and not blank)."""
    shot = browser.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
    png = base64.b64decode(shot["data"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000
    return png


def _wait_for(browser: Browser, expression: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := browser.evaluate(expression)):
        assert time.monotonic() < deadline, expression
        time.sleep(0.05)
    return value


def test_steward_reviews_side_by_side_pages_and_decides(
    engine: Engine, hub_url: tuple[str, str], browser: Browser, tmp_path: Path
) -> None:
    base, token = hub_url
    seeded = _seed_queue(engine)
    assert seeded["total"] == 23 and seeded["rows"] == 24  # 24 review rows, 23 pairs

    browser.call(
        "Emulation.setDeviceMetricsOverride", width=1280, height=1600, deviceScaleFactor=1, mobile=False
    )
    browser.open(f"{base}/mpi/review/page")
    assert (
        browser.evaluate("document.querySelectorAll('#rows section').length") == 0
    )  # nothing before the token
    browser.evaluate(f"document.getElementById('token').value = {json.dumps(token)}; load()")
    _wait_for(browser, "document.querySelectorAll('#rows section').length")
    # The total in the queue, one entry per pair, 20 to a page.
    assert browser.evaluate("document.getElementById('count').textContent") == "23"
    assert browser.evaluate("document.querySelectorAll('#rows section').length") == 20
    assert browser.evaluate("document.getElementById('range').textContent") == "1\u201320 of 23"
    ids = browser.evaluate("[...document.querySelectorAll('#rows section')].map(s => s.id)")
    assert len(ids) == len(set(ids))

    # A typo in the family name: partial, without a check mark; the same birth date: exact, with one.
    partials = browser.evaluate(
        "[...document.querySelectorAll('#rows .grade.partial')].map(g => g.textContent)"
    )
    assert partials and not any("\u2713" in p for p in partials)
    assert all(p.startswith("\u2248") for p in partials)
    exact = browser.evaluate("[...document.querySelectorAll('#rows .grade.exact')].map(g => g.textContent)")
    assert exact and all(e.startswith("\u2713") for e in exact)
    # Names shown as text, never as markup.
    assert "Dewi <b>" in browser.evaluate("document.getElementById('rows').innerText")
    assert browser.evaluate("document.querySelectorAll('#rows b').length") == 0

    (tmp_path / "review-page-1.png").write_bytes(_screenshot(browser))

    # The next page: the last three.
    browser.evaluate("document.getElementById('next').click()")
    _wait_for(browser, "document.getElementById('range').textContent === '21\u201323 of 23'")
    assert browser.evaluate("document.querySelectorAll('#rows section').length") == 3
    assert browser.evaluate("document.getElementById('next').disabled") is True

    # On it, the NIK conflict (its weight leaves out the NIK): every identifier, address and phone of both
    # records side by side.
    conflict = f"document.getElementById('review-{seeded['conflict']}')"
    text = browser.evaluate(f"{conflict}.innerText")
    for side in (seeded["head"], seeded["member"]):
        for ident in side["identifier"]:
            assert ident["value"] in text
        assert side["telecom"][0]["value"] in text
        assert "Jl. Mawar No. 1 RT 02/RW 03" in text and "district 327301" in text
    assert "NIK conflict" in text and "birth dates 7 years apart" in text
    levels = browser.evaluate(
        f"Object.fromEntries([...{conflict}.querySelectorAll('.grade')].map(g => [g.dataset.field, g.textContent]))"
    )
    assert levels["nik"].startswith("\u2713") and levels["nik"].endswith("exact")
    assert levels["birthDate"].endswith("disagree") and "\u2713" not in levels["birthDate"]
    assert levels["telecom"].endswith("exact") and levels["line"].endswith("exact")
    assert levels["name"].endswith(("partial", "disagree")) and "\u2713" not in levels["name"]

    (tmp_path / "review-page-2.png").write_bytes(_screenshot(browser))

    # Not the same person: both review rows of the pair are answered, the total goes down by one.
    browser.evaluate("document.getElementById('why').value = 'household member under the head NIK'")
    browser.evaluate(f"{conflict}.querySelector('button[data-action=not-duplicate]').click()")
    _wait_for(browser, "document.getElementById('status').textContent.includes('recorded')")
    assert browser.evaluate(f"{conflict}") is None
    assert browser.evaluate("document.getElementById('count').textContent") == "22"
    with session_scope(engine) as session:
        decided = session.scalars(select(MpiReview).where(MpiReview.status == "not-duplicate")).all()
        assert len(decided) == 2

    # Same person, with a click, on the first page.
    browser.evaluate("document.getElementById('prev').click()")
    _wait_for(browser, "document.getElementById('range').textContent === '1\u201320 of 22'")
    browser.evaluate("document.querySelector('#rows button[data-action=link]').click()")
    _wait_for(browser, "document.getElementById('status').textContent.includes('link recorded')")
    assert browser.evaluate("document.getElementById('count').textContent") == "21"
    with session_scope(engine) as session:
        assert len(session.scalars(select(MpiReview).where(MpiReview.status == "linked")).all()) == 1

    # A wrong token is told, not a blank page or a stack trace.
    browser.evaluate("sessionStorage.clear(); document.getElementById('token').value = 'nonsense'; load()")
    _wait_for(browser, "document.getElementById('status').textContent.includes('HTTP 401')")
    assert "could not be loaded (HTTP 401)" in browser.evaluate(
        "document.getElementById('status').textContent"
    )
