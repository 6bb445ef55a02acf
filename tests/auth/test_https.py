"""HTTPS through uvicorn's TLS settings (HUB_HTTP_TLS_CERT / HUB_HTTP_TLS_KEY): `hub serve` answers over
TLS with the configured certificate, and a sender's token works there as over plain HTTP."""

from __future__ import annotations

import ssl
import urllib.request
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from hub.auth import issue_token
from hub.config import Settings
from hub.hl7 import parse
from tests.builders import adt
from tests.ingest.test_tls import _cert, _write
from tests.processes import HubProcess, free_port, hub_env, hub_run


def test_hub_serve_over_https(tmp_path: Path) -> None:
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert("hub test CA", ca_key, None, None)
    ca_crt, _ = _write(tmp_path / "ca", ca, ca_key)
    crt, key = _write(tmp_path / "server", _cert("localhost", server_key, ca, ca_key), server_key)
    var = tmp_path / "var"
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    port = free_port()
    env = hub_env(
        url,
        var,
        HUB_HTTP_PORT=str(port),
        HUB_MLLP_ENABLED="false",
        HUB_WORKER_ENABLED="false",
        HUB_HTTP_TLS_CERT=str(crt),
        HUB_HTTP_TLS_KEY=str(key),
    )
    hub_run(["db", "upgrade"], env)
    server = HubProcess(["serve"], env, tmp_path / "serve.log")
    try:
        server.wait_port(port)
        ctx = ssl.create_default_context(cafile=str(ca_crt))
        with urllib.request.urlopen(
            f"https://localhost:{port}/.well-known/smart-configuration", context=ctx, timeout=10
        ) as r:
            assert r.status == 200
        with pytest.raises(OSError):  # plain HTTP is not spoken on that port
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        token = issue_token(Settings(var_dir=var), "sender", facilities=["RSUD_SEHAT"])
        req = urllib.request.Request(
            f"https://localhost:{port}/hl7/v2",
            data=adt("TLS-HTTP1").encode(),
            headers={"Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            assert parse(r.read().decode()).get("MSA-1") == "AA"
    finally:
        server.stop()
