"""The MLLP listener over real sockets: framing in the wild, limits, timeouts, concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from hub.config import Settings
from hub.hl7 import parse
from hub.ingest import listener
from hub.ingest.listener import MLLPServer
from hub.ingest.mllp import FrameDecoder, frame
from hub.ingest.service import Intake
from hub.store.models import InboundMessage
from tests.builders import adt


def _run(engine: Engine, body: Callable[[int], Awaitable[None]], **kw: object) -> Intake:
    settings = Settings(mllp_port=0, **kw)  # type: ignore[arg-type]
    intake = Intake(engine, settings)

    async def main() -> None:
        intake.start()
        server = MLLPServer(intake, settings)
        await server.start()
        try:
            await body(server.port)
        finally:
            await server.stop()
            intake.stop()

    asyncio.run(main())
    return intake


async def _read_acks(reader: asyncio.StreamReader, n: int, timeout: float = 10) -> list[str]:
    dec = FrameDecoder()
    acks: list[str] = []
    while len(acks) < n:
        data = await asyncio.wait_for(reader.read(65536), timeout)
        if not data:
            break
        acks += [a.decode() for a in dec.feed(data) if isinstance(a, bytes)]
    return acks


def _count(engine: Engine) -> int:
    with Session(engine) as s:
        return int(s.scalar(select(func.count()).select_from(InboundMessage)) or 0)


def test_several_frames_in_one_write_and_one_frame_in_many(engine: Engine) -> None:
    async def body(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"noise" + frame(adt("A").encode()) + frame(adt("B", mrn="M2").encode()))
        await writer.drain()
        acks = await _read_acks(reader, 2)
        assert [parse(a).get("MSA-2") for a in acks] == ["A", "B"]
        payload = frame(adt("C", mrn="M3").encode())
        for i in range(0, len(payload), 7):
            writer.write(payload[i : i + 7])
            await writer.drain()
            await asyncio.sleep(0)
        (ack,) = await _read_acks(reader, 1)
        assert parse(ack).get("MSA-1") == "AA" and parse(ack).get("MSA-2") == "C"
        writer.close()

    _run(engine, body)
    assert _count(engine) == 3


def test_oversize_frame_is_answered_and_closed(engine: Engine) -> None:
    async def body(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        big = adt("BIG").encode() + b"OBX|1|TX|X||" + b"x" * 5000 + b"\r"
        writer.write(frame(big))
        await writer.drain()
        (ack,) = await _read_acks(reader, 1)
        msg = parse(ack)
        assert msg.get("MSA-1") == "AR" and msg.get("MSA-2") == "BIG"
        assert "exceeds" in msg.get("ERR-8")
        assert await asyncio.wait_for(reader.read(100), 5) == b""  # closed by the hub
        writer.close()

    _run(engine, body, mllp_max_frame_bytes=1024)
    with Session(engine) as s:
        row = s.scalars(select(InboundMessage)).one()
        assert row.state == "rejected" and row.control_id == "BIG"


def test_idle_connection_is_closed(engine: Engine) -> None:
    async def body(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await asyncio.wait_for(reader.read(100), 5) == b""
        writer.close()

    _run(engine, body, mllp_idle_timeout_s=0.2)


def test_hundred_concurrent_connections(engine: Engine) -> None:
    async def one(port: int, n: int) -> str:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(frame(adt(f"K{n}", mrn=f"P{n}").encode()))
        await writer.drain()
        (ack,) = await _read_acks(reader, 1, timeout=30)
        writer.close()
        return ack

    async def body(port: int) -> None:
        acks = await asyncio.gather(*(one(port, n) for n in range(100)))
        assert sorted(parse(a).get("MSA-2") for a in acks) == sorted(f"K{n}" for n in range(100))
        assert all(parse(a).get("MSA-1") == "AA" for a in acks)

    _run(engine, body)
    assert _count(engine) == 100


def test_pipelined_frames_share_a_commit_and_are_acked_in_order(engine: Engine) -> None:
    async def body(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(frame(adt(f"PL{i:02d}", mrn=f"PL{i}").encode()) for i in range(20)))
        await writer.drain()
        acks = await _read_acks(reader, 20)
        assert [parse(a).get("MSA-2") for a in acks] == [f"PL{i:02d}" for i in range(20)]
        assert {parse(a).get("MSA-1") for a in acks} == {"AA"}
        writer.close()

    intake = _run(engine, body)
    assert intake.stats.batches < 20  # the frames of one read went to the intake together
    with Session(engine) as s:
        ids = list(s.scalars(select(InboundMessage.control_id).order_by(InboundMessage.id)))
    assert ids == [f"PL{i:02d}" for i in range(20)]  # stored in the order sent


def test_a_sender_that_pipelines_past_the_in_flight_limit_gets_every_ack_in_order(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_IN_FLIGHT unanswered frames the hub stops reading the connection until ACKs catch up;
    nothing is lost or reordered by the pause."""
    monkeypatch.setattr(listener, "MAX_IN_FLIGHT", 8)

    async def body(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"".join(frame(adt(f"FC{i:02d}", mrn=f"FC{i}").encode()) for i in range(40)))
        await writer.drain()
        acks = await _read_acks(reader, 40)
        assert [parse(a).get("MSA-2") for a in acks] == [f"FC{i:02d}" for i in range(40)]
        writer.close()

    _run(engine, body)
    assert _count(engine) == 40


def test_a_message_that_could_not_be_stored_is_not_acknowledged(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Store, then ACK: when the commit fails the sender gets no ACK for that message (the connection is
    closed, so it resends later), and the ACKs of what was stored before still arrive."""
    real_store = Intake._store

    def failing_store(self: Intake, batch: list[Any], senders: dict[str, int | None]) -> Any:
        if any(b"|DOWN" in item.raw for item in batch):
            raise OSError("disk unavailable")
        return real_store(self, batch, senders)

    monkeypatch.setattr(Intake, "_store", failing_store)

    async def body(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(frame(adt("UP1", mrn="U1").encode()))
        await writer.drain()
        (ack,) = await _read_acks(reader, 1)
        assert parse(ack).get("MSA-2") == "UP1"
        writer.write(frame(adt("DOWN", mrn="U2").encode()))
        await writer.drain()
        assert await asyncio.wait_for(reader.read(65536), 10) == b""  # closed, no ACK
        writer.close()
        # The store is back: the sender's resend on a new connection is stored and acknowledged.
        monkeypatch.setattr(Intake, "_store", real_store)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(frame(adt("DOWN", mrn="U2").encode()))
        await writer.drain()
        (ack,) = await _read_acks(reader, 1)
        assert parse(ack).get("MSA-1") == "AA" and parse(ack).get("MSA-2") == "DOWN"
        writer.close()

    _run(engine, body)
    assert _count(engine) == 2


def test_stopping_closes_idle_connections(engine: Engine) -> None:
    """`hub serve` stops even while senders keep idle connections open: the hub closes them."""
    settings = Settings(mllp_port=0)
    intake = Intake(engine, settings)

    async def main() -> None:
        intake.start()
        server = MLLPServer(intake, settings)
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(frame(adt("IDLE1").encode()))
        await writer.drain()
        assert len(await _read_acks(reader, 1)) == 1
        await asyncio.wait_for(server.stop(), 10)  # does not wait for the sender to hang up
        assert await asyncio.wait_for(reader.read(100), 5) == b""
        writer.close()
        intake.stop()

    asyncio.run(main())


def test_garbage_outside_frames_is_reported_and_the_connection_closed(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(frame(adt("G1").encode()) + b"GET / HTTP/1.1\r\n" + b"x" * 3000)
        await writer.drain()
        (ack,) = await _read_acks(reader, 1)
        assert parse(ack).get("MSA-2") == "G1"
        writer.write(b"y" * 2000)  # past the 4 KiB of garbage a connection may send
        await writer.drain()
        assert await asyncio.wait_for(reader.read(100), 5) == b""  # closed by the hub
        writer.close()

    with caplog.at_level("INFO", logger="hub.ingest.listener"):
        _run(engine, body)
    lines = [r.getMessage() for r in caplog.records if "outside frames" in r.getMessage()]
    assert len(lines) == 1 and "closing" in lines[0] and "(1 frame(s))" in lines[0]


def test_a_connection_sending_only_garbage_is_not_held(
    engine: Engine, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listener, "GARBAGE_IDLE_S", 0.3)

    async def body(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello?\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(100), 5) == b""  # not the 300 s idle timeout
        writer.close()

    with caplog.at_level("INFO", logger="hub.ingest.listener"):
        _run(engine, body)
    assert any("sent 8 byte(s) outside frames (0 frame(s))" in r.getMessage() for r in caplog.records)
