"""A real OpenID provider for the tests: node's ``oidc-provider`` (pinned in ``oidc_provider/package.json``,
installed by ``.ci/run`` with ``npm ci``) run as a separate process by ``oidc_provider/server.mjs``, issuing
client-credentials access tokens as signed JWTs. Locally the tests that need it are skipped when node or
the package is missing; on CI (``CI=true``) that is an error."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from base64 import b64encode
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tests.conftest import ON_CI
from tests.processes import free_port

HERE = Path(__file__).resolve().parent / "oidc_provider"
AUDIENCE = "https://hub.test/fhir"


def require_provider() -> str:
    node = shutil.which("node")
    if node is None or not (HERE / "node_modules" / "oidc-provider").is_dir():
        message = "node and oidc-provider are needed (npm ci --prefix tests/auth/oidc_provider)"
        if ON_CI:
            pytest.fail(message)
        pytest.skip(message)
    return node


def new_key(kid: str, alg: str = "RS256") -> dict[str, Any]:
    """A private JWK for the provider."""
    if alg.startswith("ES"):
        jwk = json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1())))
    else:
        jwk = json.loads(RSAAlgorithm.to_jwk(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


@dataclass
class Client:
    client_id: str
    scope: str
    roles: list[str]
    facility: str | None = None
    client_secret: str = field(default_factory=lambda: "secret-" + os.urandom(16).hex())


@dataclass
class Provider:
    """One running provider process; :meth:`restart` starts it again with other keys (rotation)."""

    node: str
    workdir: Path
    clients: list[Client]
    keys: list[dict[str, Any]]
    alg: str = "RS256"
    ttl: int = 300
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[str] | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cfg = {
            "port": self.port,
            "issuer": self.issuer,
            "audience": AUDIENCE,
            "ttl": self.ttl,
            "alg": self.alg,
            "keys": self.keys,
            "clients": [
                {
                    "client_id": c.client_id,
                    "client_secret": c.client_secret,
                    "scope": c.scope,
                    "roles": c.roles,
                    "facility": c.facility,
                }
                for c in self.clients
            ],
        }
        path = self.workdir / f"oidc-{self.port}.json"
        path.write_text(json.dumps(cfg))
        self.proc = subprocess.Popen(
            [self.node, str(HERE / "server.mjs"), str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("ready"):
                return
            if not line and self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError("the OpenID provider did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None

    def restart(self, keys: list[dict[str, Any]]) -> None:
        self.stop()
        self.keys = keys
        self.start()

    def token(self, client: Client, scope: str | None = None) -> str:
        data = urllib.parse.urlencode(
            {"grant_type": "client_credentials", "scope": scope or client.scope}
        ).encode()
        basic = b64encode(f"{client.client_id}:{client.client_secret}".encode()).decode()
        req = urllib.request.Request(
            f"{self.issuer}/token", data=data, headers={"Authorization": f"Basic {basic}"}
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            body: dict[str, Any] = json.loads(resp.read())
        return str(body["access_token"])
