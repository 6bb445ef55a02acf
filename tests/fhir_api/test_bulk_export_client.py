"""A bulk-data client written against the Bulk Data Access IG alone (plain HTTP, none of the hub's code)
drives a real ``hub serve``: kick-off, polling as ``Retry-After`` says, the manifest, the NDJSON files,
and the DELETE that ends the job; the hub's own runner thread does the export."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.builders import adt
from tests.processes import HubProcess, MLLPClient, free_port, hub_env, hub_run

pytestmark = pytest.mark.slow


@pytest.fixture
def hub(fresh_database_url: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    mllp_port, http_port = free_port(), free_port()
    env = hub_env(
        fresh_database_url,
        tmp_path / "var",
        HUB_MLLP_PORT=str(mllp_port),
        HUB_HTTP_PORT=str(http_port),
        HUB_EXPORT_POLL_S="0.2",
        HUB_EXPORT_MIN_POLL_S="0",
        HUB_EXPORT_RETRY_AFTER_S="1",
    )
    hub_run(["db", "upgrade"], env)
    server = HubProcess(["serve"], env, tmp_path / "serve.log")
    try:
        server.wait_port(mllp_port)
        client = MLLPClient(mllp_port)
        for i in range(3):
            assert "MSA|AA" in client.send(
                adt(f"BULK-{i}", "A04", mrn=f"BULK-MRN-{i}", family=f"Bulk{i}").encode()
            )
        client.close()
        token = hub_run(["token", "--role", "admin"], env).stdout.strip()
        yield f"http://127.0.0.1:{http_port}/fhir", {"Authorization": f"Bearer {token}"}
    finally:
        server.stop()


def _wait_processed(base: str, auth: dict[str, str], want: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        bundle = httpx.get(f"{base}/Patient", params={"_summary": "count"}, headers=auth).json()
        if bundle.get("total", 0) >= want:
            return
        time.sleep(0.3)
    raise AssertionError("the messages were not processed")


def test_a_plain_bulk_data_client_exports_from_a_running_hub(hub: tuple[str, dict[str, str]]) -> None:
    base, auth = hub
    _wait_processed(base, auth, 3)
    kick = httpx.get(
        f"{base}/$export",
        params={"_type": "Patient"},
        headers={**auth, "Accept": "application/fhir+json", "Prefer": "respond-async"},
    )
    assert kick.status_code == 202
    status_url = kick.headers["Content-Location"]
    deadline = time.monotonic() + 60
    while True:
        status = httpx.get(status_url, headers=auth)
        if status.status_code != 202:
            break
        assert "X-Progress" in status.headers
        assert time.monotonic() < deadline, "the export never finished"
        time.sleep(min(float(status.headers.get("Retry-After", "1")), 1.0))
    assert status.status_code == 200
    manifest = status.json()
    assert manifest["requiresAccessToken"] is True and manifest["transactionTime"]
    families = set()
    for out in manifest["output"]:
        assert out["type"] == "Patient"
        body = httpx.get(out["url"], headers={**auth, "Accept": "application/fhir+ndjson"})
        assert body.status_code == 200
        lines = body.content.splitlines()
        assert len(lines) == out["count"]
        families |= {n["family"] for line in lines for n in orjson.loads(line).get("name", [])}
    assert {"Bulk0", "Bulk1", "Bulk2"} <= families
    # without the token, neither status nor files
    assert httpx.get(status_url).status_code == 401
    assert httpx.delete(status_url, headers=auth).status_code == 202
    assert httpx.get(status_url, headers=auth).status_code == 404
