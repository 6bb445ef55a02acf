"""Store, then ACK, nothing lost: kill -9 a real ``hub serve`` while 4 connections send, restart it on the
same database. Every message that got an AA is stored exactly once, and after the restart every stored
message is processed exactly once (the sweeper re-dispatches what was left ``received``)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from hub.db import make_engine
from hub.hl7 import parse
from hub.store.models import InboundMessage
from tests.builders import adt
from tests.processes import HubProcess, MLLPClient, free_port, hub_env, hub_run

pytestmark = pytest.mark.slow

CONNECTIONS = 4
PER_CONNECTION = 500  # at most 2,000 messages; the kill comes well before the end
KILL_AFTER_ACKS = 200


class Sender(threading.Thread):
    """One hospital connection: sends its messages one at a time, waiting for each ACK."""

    def __init__(self, n: int, port: int, stop: threading.Event) -> None:
        super().__init__(name=f"sender-{n}", daemon=True)
        self.port = port
        self.stop_event = stop
        # Three patients per connection share the stream, so per-patient order matters on replay too.
        self.messages = [
            (
                f"C{n}-{i:04d}",
                adt(f"C{n}-{i:04d}", ("A01", "A08", "A03")[i % 3], mrn=f"P{n}-{i // 3}").encode(),
            )
            for i in range(PER_CONNECTION)
        ]
        self.acked: list[str] = []
        self.in_flight: tuple[str, bytes] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            client = MLLPClient(self.port)
        except OSError as exc:
            self.error = exc
            return
        try:
            for control_id, raw in self.messages:
                if self.stop_event.is_set():
                    return
                self.in_flight = (control_id, raw)
                try:
                    ack = client.send(raw)
                except OSError:
                    return  # the hub died: this message may or may not be stored, it was not ACKed
                msg = parse(ack)
                assert msg.get("MSA-2") == control_id
                assert msg.get("MSA-1") == "AA", ack
                self.acked.append(control_id)
                self.in_flight = None
        except BaseException as exc:
            self.error = exc
        finally:
            client.close()


@pytest.fixture
def hub_processes() -> Iterator[list[HubProcess]]:
    procs: list[HubProcess] = []
    yield procs
    for p in procs:
        p.stop()


def _counts(engine: Engine) -> Counter[str]:
    with Session(engine) as s:
        return Counter(s.scalars(select(InboundMessage.control_id)))


def _wait_all_processed(engine: Engine, stall_s: float = 20, cap_s: float = 180) -> int:
    """Wait until nothing is left ``received``; give up when no message was processed for ``stall_s``
    (processing with the real maps is slow on a busy 2-core machine, but it must keep moving)."""
    cap = time.monotonic() + cap_s
    left, last_change = -1, time.monotonic()
    while time.monotonic() < cap:
        with Session(engine) as s:
            now_left = int(
                s.scalar(
                    select(func.count()).select_from(InboundMessage).where(InboundMessage.state == "received")
                )
                or 0
            )
        if now_left == 0:
            return 0
        if now_left != left:
            left, last_change = now_left, time.monotonic()
        elif time.monotonic() - last_change > stall_s:
            break
        time.sleep(0.2)
    return left


def test_kill9_mid_stream_loses_nothing_and_processes_once(
    fresh_database_url: str, tmp_path: Path, hub_processes: list[HubProcess]
) -> None:
    mllp_port, http_port = free_port(), free_port()
    env = hub_env(
        fresh_database_url,
        tmp_path / "var",
        HUB_MLLP_PORT=str(mllp_port),
        HUB_HTTP_PORT=str(http_port),
        HUB_SWEEP_INTERVAL_S="1",
    )
    hub_run(["db", "upgrade"], env)

    first = HubProcess(["serve"], env, tmp_path / "serve-1.log")
    hub_processes.append(first)
    first.wait_port(mllp_port)

    stop = threading.Event()
    senders = [Sender(n, mllp_port, stop) for n in range(CONNECTIONS)]
    for s in senders:
        s.start()
    deadline = time.monotonic() + 20
    while sum(len(s.acked) for s in senders) < KILL_AFTER_ACKS and time.monotonic() < deadline:
        time.sleep(0.005)
    assert all(s.is_alive() for s in senders), "the senders finished before the kill: send more"
    first.kill9()
    for s in senders:
        s.join(timeout=15)
    assert not any(s.is_alive() for s in senders)
    assert [s.error for s in senders] == [None] * CONNECTIONS
    acked = [c for s in senders for c in s.acked]
    assert len(acked) >= KILL_AFTER_ACKS

    engine = make_engine(fresh_database_url)
    try:
        # Every ACKed message is stored, exactly once; nothing was stored that nobody sent.
        counts = _counts(engine)
        assert [c for c in acked if counts[c] != 1] == []
        assert max(counts.values()) == 1
        sent = {c for s in senders for c, _ in s.messages}
        assert set(counts) <= sent
        # At most the message in flight on each connection was stored without its ACK reaching the sender.
        assert len(set(counts) - set(acked)) <= CONNECTIONS

        second = HubProcess(["serve"], env, tmp_path / "serve-2.log")
        hub_processes.append(second)
        second.wait_port(mllp_port)
        # Like real senders, each connection sends again the message it got no ACK for: a stored one is a
        # duplicate and gets its original ACK, an unstored one is accepted now. Either way: AA, stored once.
        for s in senders:
            if s.in_flight is not None:
                control_id, raw = s.in_flight
                client = MLLPClient(mllp_port)
                try:
                    ack = parse(client.send(raw))
                finally:
                    client.close()
                assert ack.get("MSA-1") == "AA" and ack.get("MSA-2") == control_id
                acked.append(control_id)

        assert _wait_all_processed(engine) == 0, second.log()
        counts = _counts(engine)
        assert [c for c in acked if counts[c] != 1] == []
        assert max(counts.values()) == 1
        with Session(engine) as s:
            rows = s.scalars(select(InboundMessage)).all()
            assert {r.control_id for r in rows} == set(acked)
            # Processed exactly once, whatever the outcome (failed until the maps exist).
            assert {r.state for r in rows} <= {"processed", "failed"}
            assert [r.control_id for r in rows if r.attempts != 1] == []
    finally:
        engine.dispose()
