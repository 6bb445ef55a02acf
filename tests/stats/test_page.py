"""The ministry dashboard (``/stats/page``) in headless Chromium: weekly cases of a disease by province
(chart and table), immunisation coverage, lab positivity, suppressed cells shown as suppressed, both
languages, the chart library served by the hub itself. A screenshot is taken."""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient

from hub.app import create_app
from hub.auth import issue_token
from hub.config import Settings
from tests.mpi.test_review_page import _NO_CHROMIUM, CHROMIUM, Browser, _free_port, _launch, _stop
from tests.stats.conftest import Population

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason=_NO_CHROMIUM)


@pytest.fixture
def hub_url(stats_settings: Settings, population: Population) -> Iterator[tuple[str, str]]:
    app = create_app(stats_settings)
    port = _free_port()
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
        yield f"http://127.0.0.1:{port}", issue_token(stats_settings, "ministry")
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    from websockets.sync.client import connect

    process, ws_url = _launch(tmp_path / "chromium-profile")
    try:
        with connect(ws_url, max_size=None) as ws:
            yield Browser(ws)
    finally:
        _stop(process)


def _wait(browser: Browser, expression: str, timeout: float = 20) -> object:
    deadline = time.monotonic() + timeout
    while not (value := browser.evaluate(expression)):
        assert time.monotonic() < deadline, expression
        time.sleep(0.1)
    return value


def test_the_page_shell_is_public_and_the_library_local(stats_client: TestClient) -> None:
    page = stats_client.get("/stats/page")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'src="/stats/static/chart.umd.min.js"' in page.text and "https://" not in page.text
    lib = stats_client.get("/stats/static/chart.umd.min.js")
    assert lib.status_code == 200 and "Chart.js v4" in lib.text[:200]
    assert "MIT" in stats_client.get("/stats/static/CHARTJS-LICENSE.md").text
    assert stats_client.get("/stats/static/secrets.txt").status_code == 404


def test_dashboard_in_chromium(
    hub_url: tuple[str, str], browser: Browser, tmp_path: Path, population: Population
) -> None:
    base, token = hub_url
    browser.call(
        "Emulation.setDeviceMetricsOverride", width=1200, height=2200, deviceScaleFactor=1, mobile=False
    )
    browser.open(f"{base}/stats/page")
    assert (
        browser.evaluate("document.querySelectorAll('#casesTable tr').length") == 0
    )  # nothing without a token
    assert browser.evaluate("typeof Chart") == "function"  # the library, from the hub
    browser.evaluate(
        f"document.getElementById('token').value = {json.dumps(token)};"
        "document.getElementById('weeks').value = '2026W10,2026W11,2026W12';"
        "document.getElementById('year').value = '2026';"
        "document.getElementById('labperiod').value = '2026Q1';"
        "load()"
    )
    _wait(browser, "document.getElementById('status').textContent.startsWith('Data dimuat')")
    rows = browser.evaluate("document.querySelectorAll('#casesTable tr[data-province]').length")
    assert rows == 3  # the provinces with dengue in those weeks
    header = browser.evaluate("[...document.querySelectorAll('#casesTable th')].map(t => t.textContent)")
    assert header == ["Provinsi", "2026W10", "2026W11", "2026W12"]
    hidden = browser.evaluate(
        "[...document.querySelectorAll('#casesTable td.suppressed')].map(t => t.textContent)"
    )
    assert hidden and set(hidden) == {"disamarkan"}
    shown = browser.evaluate(
        "[...document.querySelectorAll('#casesTable td:not(.suppressed)')].slice(1).map(t => t.textContent)"
    )
    assert all(v == "0" or not v.isdigit() or int(v) >= 10 for v in shown), shown
    assert browser.evaluate("Chart.getChart('casesChart').data.datasets.length") == 3
    assert browser.evaluate("document.querySelectorAll('#coverageTable tr[data-province]').length") >= 1
    assert browser.evaluate("document.querySelectorAll('#positivityTable tr[data-province]').length") >= 1
    shot = browser.call("Page.captureScreenshot", format="png")
    png = base64.b64decode(shot["data"])
    (tmp_path / "stats-page.png").write_bytes(png)
    if shots := os.environ.get("HUB_TEST_SCREENSHOTS"):  # keep it for a look
        Path(shots).mkdir(parents=True, exist_ok=True)
        (Path(shots) / "stats-page.png").write_bytes(png)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    # English labels.
    browser.evaluate("document.getElementById('lang').value = 'en'; load()")
    _wait(browser, "document.getElementById('status').textContent.startsWith('Data loaded')")
    assert browser.evaluate("document.querySelector('#casesTable th').textContent") == "Province"
    assert set(
        browser.evaluate(
            "[...document.querySelectorAll('#casesTable td.suppressed')].map(t => t.textContent)"
        )
    ) == {"suppressed"}
    # A wrong token is told, not a blank page.
    browser.evaluate("sessionStorage.clear(); document.getElementById('token').value = 'nonsense'; load()")
    _wait(browser, "document.getElementById('status').textContent.includes('HTTP 401')")
