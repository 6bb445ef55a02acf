"""The pages a browser opens: ``/`` answers HTML linking where to go next, and the API reference at
``/docs`` references no URL outside the hub (it works on a network without internet) and every asset
it references loads from the hub."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from hub.app import create_app
from hub.config import Settings


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(var_dir=tmp_path / "var", database_url=f"sqlite:///{tmp_path / 'hub.db'}")
    yield TestClient(create_app(settings), base_url="http://hub.test")


REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url:\s*'([^']+)'""")


def _references(html: str) -> list[str]:
    """Every URL the page loads or links: src/href attributes and Swagger UI's `url:`."""
    return [a or b for a, b in REFERENCE.findall(html)]


def test_landing_page_is_html_and_links_the_entry_points(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    links = set(_references(r.text))
    for path in ("/docs", "/fhir/metadata", "/stats/page", "/mpi/review/page", "/healthz"):
        assert path in links, path
    assert not [u for u in links if re.match(r"(https?:)?//", u)]
    for path in ("/docs", "/fhir/metadata", "/stats/page", "/mpi/review/page", "/healthz"):
        assert client.get(path).status_code == 200, path  # public pages: no token needed


def test_docs_reference_no_external_url_and_their_assets_load(client: TestClient) -> None:
    r = client.get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", r.text, re.I), r.text
    refs = _references(r.text)
    assert "/openapi.json" in refs and len(refs) >= 4
    kinds: dict[str, httpx.Response] = {}
    for ref in refs:
        asset = client.get(ref)
        assert asset.status_code == 200, ref
        kinds[ref.rsplit(".", 1)[-1]] = asset
    assert kinds["js"].headers["content-type"].startswith("text/javascript")
    assert b"SwaggerUIBundle" in kinds["js"].content and len(kinds["js"].content) > 100_000
    assert kinds["css"].headers["content-type"].startswith("text/css")
    assert kinds["json"].json()["openapi"].startswith("3.")
    # The stylesheet pulls nothing from outside either (its images are data: URLs).
    assert not re.search(r"url\(\s*[\"']?(https?:)?//", kinds["css"].text)
    # The online validator badge is off: the page sends the OpenAPI document nowhere.
    assert '"validatorUrl": null' in r.text


def test_an_unknown_asset_is_a_clear_404(client: TestClient) -> None:
    r = client.get("/docs/static/core.py")  # a file beside the assets, not one of them
    assert r.status_code == 404 and "not a file of the API reference" in r.text
    assert client.get("/docs/static/..%2Fcore.py").status_code == 404
