"""The production layout docs/operations.md describes works as written: PostgreSQL and RabbitMQ, two
``hub serve`` processes with one environment (one with the MLLP listener, one with
``HUB_MLLP_ENABLED=false``), a ``hub worker``, registration closed. A registered sender's messages reach
either process (MLLP, HTTP Basic) and are processed by the worker; an unregistered facility is answered
AR and kept; a token made with ``hub token`` works on both processes (one ``HUB_VAR_DIR``); a proxy's
``Host``/``X-Forwarded-Proto`` make the public URLs; the audit trail both processes wrote verifies."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from kombu import Connection

from tests.conftest import RABBITMQ_URL, fresh_pg_database, require_broker
from tests.processes import HubProcess, MLLPClient, free_port, hub_env, hub_run

pytestmark = [pytest.mark.slow, pytest.mark.broker, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures" / "hl7"
SECRET = "a long random sender secret"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    require_broker(RABBITMQ_URL)
    tmp = tmp_path_factory.mktemp("deployment")
    queue = f"hub-ops-{uuid.uuid4().hex[:8]}"
    with fresh_pg_database() as url:
        http_a, http_b, mllp = free_port(), free_port(), free_port()
        env = hub_env(
            url,
            tmp / "var",
            HUB_BROKER_URL=RABBITMQ_URL,
            HUB_CELERY_QUEUE=queue,
            HUB_OPEN_REGISTRATION="false",
            HUB_MLLP_PORT=str(mllp),
            PYTHONPATH=str(ROOT),
        )
        hub_run(["db", "upgrade"], env)
        hub_run(["sender", "add", "RSUD_SEHAT", "--name", "RSUD Sehat", "--secret", SECRET], env)
        procs = [
            HubProcess(["serve"], {**env, "HUB_HTTP_PORT": str(http_a)}, tmp / "serve-a.log"),
            HubProcess(
                ["serve"],
                {**env, "HUB_HTTP_PORT": str(http_b), "HUB_MLLP_ENABLED": "false"},
                tmp / "serve-b.log",
            ),
            HubProcess(["worker", "-c", "2"], env, tmp / "worker.log"),
        ]
        try:
            procs[0].wait_port(http_a)
            procs[0].wait_port(mllp)
            procs[1].wait_port(http_b)
            yield {**env, "A": f"http://127.0.0.1:{http_a}", "B": f"http://127.0.0.1:{http_b}"}
        finally:
            for p in procs:
                p.stop()
            with Connection(RABBITMQ_URL, connect_timeout=3) as conn:
                conn.default_channel.queue_delete(queue)


def _wait(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.3)


def test_two_hub_serves_one_worker_registration_closed(deployment: dict[str, str]) -> None:
    env = deployment
    mllp = MLLPClient(int(env["HUB_MLLP_PORT"]))
    try:
        for name, control in (("adt_a01.hl7", "ADTA010001"), ("oru_r01.hl7", "ORU0001")):
            assert f"MSA|AA|{control}" in mllp.send((FIXTURES / name).read_bytes())
        # A facility nobody registered: AR, kept as rejected (registration is closed).
        stranger = (FIXTURES / "adt_a01.hl7").read_bytes().replace(b"RSUD_SEHAT", b"RS_ASING")
        assert "MSA|AR|" in mllp.send(stranger)
    finally:
        mllp.close()

    # HL7 over HTTP to the other process, with the sender's password.
    vxu = (FIXTURES / "vxu_v04.hl7").read_bytes()
    r = httpx.post(f"{env['B']}/hl7/v2", content=vxu, auth=("RSUD_SEHAT", SECRET), timeout=30)
    assert r.status_code == 200 and "MSA|AA|VXU0001" in r.text

    # One token for both processes: they share HUB_VAR_DIR's signing key.
    admin = {"Authorization": "Bearer " + hub_run(["token", "--role", "admin"], env).stdout.strip()}
    clinician = {"Authorization": "Bearer " + hub_run(["token", "--role", "clinician"], env).stdout.strip()}

    def processed() -> bool:
        stats = httpx.get(f"{env['A']}/hl7/messages/stats", headers=admin, timeout=30).json()
        return bool(stats["by_state"]["processed"] == 3 and stats["by_state"]["received"] == 0)

    _wait(processed, "three messages processed by the hub worker")
    rejected = httpx.get(f"{env['B']}/hl7/messages", params={"state": "rejected"}, headers=admin, timeout=30)
    assert [(m["facility"], m["error_code"]) for m in rejected.json()["messages"]] == [
        ("RS_ASING", "hl7-204")
    ]

    # Behind a proxy: the public scheme and host make the links.
    proxy = {**clinician, "Host": "hub.example.go.id", "X-Forwarded-Proto": "https"}
    for base in (env["A"], env["B"]):
        bundle = httpx.get(
            f"{base}/fhir/Observation", params={"code": "http://loinc.org|718-7"}, headers=proxy, timeout=30
        ).json()
        assert bundle["total"] == 1
        assert bundle["entry"][0]["fullUrl"].startswith("https://hub.example.go.id/fhir/Observation/")
        assert httpx.get(f"{base}/metrics", headers=admin, timeout=30).status_code == 200
        assert httpx.get(f"{base}/healthz", timeout=30).json() == {"status": "ok"}

    # Both started with the same HUB_MLLP_PORT: the second opened no MLLP listener, or one would have
    # failed. Both say registration is closed.
    logs = {
        log: (Path(env["HUB_VAR_DIR"]).parent / log).read_text() for log in ("serve-a.log", "serve-b.log")
    }
    assert all("registration closed" in text for text in logs.values())
    assert f"MLLP on 127.0.0.1:{env['HUB_MLLP_PORT']}" in logs["serve-a.log"]
    assert "no MLLP listener" in logs["serve-b.log"] and "MLLP on" not in logs["serve-b.log"]

    # The audit trail both processes appended to is one intact chain.
    time.sleep(1)  # the writers flush every HUB_AUDIT_FLUSH_MS
    assert hub_run(["audit", "verify"], env).stdout.startswith("audit trail intact")
