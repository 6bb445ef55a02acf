"""The MLLP listener: asyncio TCP (optionally TLS with client certificates) on top of the pure framing
in ``mllp.py``. Each frame goes to :class:`~hub.ingest.service.Intake`; its ACK is written back only
after the message is committed. Frames on one connection are answered in order."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from concurrent.futures import Future
from pathlib import Path

from hub.config import Settings
from hub.ingest.mllp import FrameDecoder, Oversize, frame
from hub.ingest.service import Accepted, Intake, StorageUnavailable

log = logging.getLogger(__name__)


def tls_context(cert: Path, key: Path, client_ca: Path | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if client_ca is not None:
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class MLLPServer:
    def __init__(self, intake: Intake, settings: Settings) -> None:
        self.intake = intake
        self.settings = settings
        self._server: asyncio.Server | None = None
        self.connections = 0

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        s = self.settings
        ctx = (
            tls_context(s.mllp_tls_cert, s.mllp_tls_key, s.mllp_tls_client_ca)
            if s.mllp_tls_cert and s.mllp_tls_key
            else None
        )
        self._server = await asyncio.start_server(
            self._handle, s.mllp_host, s.mllp_port, ssl=ctx, limit=1 << 20, backlog=512
        )
        log.info("MLLP listening on %s:%s%s", s.mllp_host, self.port, " (TLS)" if ctx else "")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        decoder = FrameDecoder(self.settings.mllp_max_frame_bytes)
        self.connections += 1
        try:
            while True:
                try:
                    data = await asyncio.wait_for(
                        reader.read(65536), timeout=self.settings.mllp_idle_timeout_s
                    )
                except TimeoutError:
                    log.info("MLLP connection %s idle, closing", peer)
                    return
                if not data:
                    return
                # Every frame of this read goes to the intake at once (a pipelining sender gets its
                # messages into one group commit); the ACKs go back in the order of the frames.
                pending: list[Future[Accepted]] = []
                close = False
                for item in decoder.feed(data):
                    if isinstance(item, Oversize):
                        pending.append(self.intake.submit(item.head, "mllp", oversize=item.size))
                        close = True  # the rest of that frame cannot be trusted; the sender reconnects
                        break
                    pending.append(self.intake.submit(item, "mllp"))
                if pending and not await self._answer(writer, pending):
                    return
                if close:
                    return
        except (ConnectionError, ssl.SSLError) as exc:
            log.info("MLLP connection %s dropped: %s", peer, type(exc).__name__)
        finally:
            self.connections -= 1
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    async def _answer(self, writer: asyncio.StreamWriter, pending: list[Future[Accepted]]) -> bool:
        """Write the ACK of each submitted frame in order; False (close) once one was not stored."""
        for fut in pending:
            try:
                accepted = await asyncio.wrap_future(fut)
            except StorageUnavailable:
                # Not stored, so not acknowledged: closing makes the sender resend later (a later frame
                # of this read may be stored: its resend is a duplicate and gets its original ACK).
                await writer.drain()
                return False
            if accepted.ack is not None:
                writer.write(frame(accepted.ack.encode("utf-8")))
        await writer.drain()
        return True
