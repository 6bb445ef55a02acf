"""The MLLP listener: asyncio TCP (optionally TLS with client certificates) on top of the pure framing
in ``mllp.py``. Each frame goes to :class:`~hub.ingest.service.Intake`; its ACK is written back only
after the message is committed. Frames on one connection are answered in order.

A connection is an :class:`asyncio.Protocol`, not a stream task: a frame costs one call into the intake
and no task, future or timeout object of its own. The committer thread wakes the event loop once per
commit (not once per message), and that wake-up writes every ACK that became ready, connection by
connection, in order.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from collections import deque
from pathlib import Path
from typing import Any, cast

from hub import hl7
from hub.config import Settings
from hub.ingest.mllp import END, START, FrameDecoder, Oversize
from hub.ingest.service import Accepted, Intake, Ticket
from hub.ratelimit import RateLimited, RateLimiter, rate_limited_ack

log = logging.getLogger(__name__)

# Frames a connection may have in flight (sent, not yet acknowledged) before the hub stops reading it
# until ACKs catch up: a sender that pipelines without reading cannot make the hub buffer without end.
MAX_IN_FLIGHT = 1000
# A connection that has sent bytes outside frames and no frame at all is closed after this long idle
# (not HUB_MLLP_IDLE_TIMEOUT_S): whatever it is, it is not an MLLP sender waiting between messages.
GARBAGE_IDLE_S = 10.0


def tls_context(cert: Path, key: Path, client_ca: Path | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if client_ca is not None:
        ctx.load_verify_locations(client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def parse_allow_list(spec: str) -> list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]]:
    """``FACILITY=ADDRESS[/PREFIX],…`` (HUB_MLLP_ALLOW) as (network, facility) pairs."""
    out: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]] = []
    for item in spec.split(","):
        if not item.strip():
            continue
        facility, sep, address = item.partition("=")
        if not sep or not facility.strip():
            raise ValueError(f"HUB_MLLP_ALLOW: {item!r} is not FACILITY=ADDRESS[/PREFIX]")
        out.append((ipaddress.ip_network(address.strip(), strict=False), facility.strip()))
    return out


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def certificate_facilities(peercert: dict[str, Any] | None) -> frozenset[str]:
    """The facilities a verified client certificate sends for: its subject's common name(s) (= MSH-4)."""
    if not peercert:
        return frozenset()
    names = set()
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.add(str(value))
    return frozenset(names)


class MLLPServer:
    def __init__(self, intake: Intake, settings: Settings) -> None:
        self.intake = intake
        self.settings = settings
        self.allow = parse_allow_list(settings.mllp_allow)
        # Without client certificates or an allow-list the MSH-4 a connection writes is believed only on
        # loopback; on any other address such a listener accepts no facility (every message AR, kept).
        self.trust_msh4 = (
            not self.allow and settings.mllp_tls_client_ca is None and _is_loopback(settings.mllp_host)
        )
        self.limiter: RateLimiter | None = None
        if settings.rate_intake_per_s > 0:
            self.limiter = RateLimiter(settings.rate_intake_per_s, settings.rate_intake_burst, "sender")
        self._server: asyncio.Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[_Connection, None] = {}  # connections with ACKs outstanding, in arrival order
        self._open: set[_Connection] = set()
        self._flush_scheduled = False
        intake.on_commit(self._committed)

    def throttled(self, frame_bytes: bytes) -> Ticket | None:
        """A done ticket answering AR (not stored) when the frame's facility is over its rate, else None."""
        if self.limiter is None:
            return None

        try:
            facility = hl7.peek_header(frame_bytes).sending_facility
        except hl7.HeaderError:
            facility = "-"
        try:
            self.limiter.check(facility or "-")
        except RateLimited as exc:
            return Ticket(
                Accepted(rate_limited_ack(frame_bytes, exc.retry_after), "AR", None, state="throttled"),
                done=True,
            )
        return None

    @property
    def connections(self) -> int:
        """Open MLLP connections."""
        return len(self._open)

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
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(
            lambda: _Connection(self), s.mllp_host, s.mllp_port, ssl=ctx, backlog=512
        )
        log.info("MLLP listening on %s:%s%s", s.mllp_host, self.port, " (TLS)" if ctx else "")
        if not self.trust_msh4 and not self.allow and s.mllp_tls_client_ca is None:
            log.warning(
                "MLLP on %s identifies no sender (set HUB_MLLP_TLS_CLIENT_CA or HUB_MLLP_ALLOW)", s.mllp_host
            )

    def facilities_for(self, transport: asyncio.BaseTransport) -> frozenset[str] | None:
        """What a new connection may send for: its client certificate's, else its address's on the
        allow-list, else anything (loopback without either), else nothing."""
        if self.settings.mllp_tls_client_ca is not None:
            found = certificate_facilities(transport.get_extra_info("peercert"))
            if found:
                return found
        if self.allow:
            peer = transport.get_extra_info("peername")
            try:
                addr = ipaddress.ip_address(peer[0]) if peer else None
            except ValueError:
                addr = None
            return frozenset(f for net, f in self.allow if addr is not None and addr in net)
        return None if self.trust_msh4 else frozenset()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for conn in list(self._open):  # idle ones too: waiting for senders to hang up could take hours
                conn.close()
            await self._server.wait_closed()
            self._server = None

    def _committed(self) -> None:
        """Called by the committer thread after each commit: one loop wake-up for all its ACKs. The
        flag is cleared by the flush before it looks at the tickets, so a commit that lands while a
        flush runs schedules the next one."""
        loop = self._loop
        if loop is None or self._flush_scheduled or not self._waiting:
            return
        self._flush_scheduled = True
        try:
            loop.call_soon_threadsafe(self._flush)
        except RuntimeError:  # the loop is closed: the hub is stopping
            self._flush_scheduled = False

    def _flush(self) -> None:
        self._flush_scheduled = False
        for conn in list(self._waiting):
            if conn.write_ready_acks():
                self._waiting.pop(conn, None)


class _Connection(asyncio.Protocol):
    """One sender's connection: frames in, ACKs out in the same order, each only once committed."""

    def __init__(self, server: MLLPServer) -> None:
        self.server = server
        self.decoder = FrameDecoder(server.settings.mllp_max_frame_bytes)
        self.tickets: deque[Ticket] = deque()
        self.transport: asyncio.Transport | None = None
        self.peer: object = None
        self.paused = False
        self.closing = False  # no more frames are read; close once the outstanding ACKs are written
        self._last_read = 0.0
        self._idle: asyncio.TimerHandle | None = None
        self.frames = 0  # frames received on this connection
        self._garbage_reported = False
        self._garbage_timer = False
        self.allowed: frozenset[str] | None = None

    # -- asyncio.Protocol --------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        self.peer = transport.get_extra_info("peername")
        self.allowed = self.server.facilities_for(transport)
        self.server._open.add(self)
        loop = asyncio.get_running_loop()
        self._last_read = loop.time()
        self._idle = loop.call_later(self.server.settings.mllp_idle_timeout_s, self._check_idle)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self._last_read = asyncio.get_running_loop().time()
        intake = self.server.intake
        # Listed as waiting before anything is submitted: a commit that lands before this method
        # returns must find the connection, or its ACK would wait for the next commit's wake-up.
        self.server._waiting[self] = None
        submitted = False
        items = self.decoder.feed(data)
        self.frames += len(items)
        if self.decoder.discarded > self.server.settings.mllp_max_garbage_bytes:
            self._report_garbage(closing=True)
            self.closing = True  # answer the frames it did send, then close
            self.transport.pause_reading()  # type: ignore[union-attr]
        elif self.decoder.discarded and not self.frames and not self._garbage_timer:
            self._garbage_timer = True  # not an MLLP sender so far: not held for the whole idle timeout
            if self._idle is not None:
                self._idle.cancel()
            self._idle = asyncio.get_running_loop().call_later(GARBAGE_IDLE_S, self._check_idle)
        for item in items:
            if isinstance(item, Oversize):
                self.tickets.append(
                    intake.submit_ticket(item.head, "mllp", oversize=item.size, allowed=self.allowed)
                )
                submitted = True
                self.closing = True  # the rest of that frame cannot be trusted; the sender reconnects
                self.transport.pause_reading()  # type: ignore[union-attr]
                break
            # Every frame of this read goes to the intake at once (a pipelining sender gets its messages
            # into one group commit); the ACKs go back in the order of the frames.
            refused = self.server.throttled(item)
            if refused is not None:  # over its sender's rate: AR, nothing stored, answered in its turn
                self.tickets.append(refused)
                submitted = True
                continue
            self.tickets.append(intake.submit_ticket(item, "mllp", allowed=self.allowed))
            submitted = True
        if not submitted and self.closing and not self.tickets:
            self.close()
        if submitted:
            if self.tickets[-1].done:  # committed on this thread (an intake that was not started)
                self.server._flush()
            elif len(self.tickets) >= MAX_IN_FLIGHT and not self.paused:
                self.paused = True
                self.transport.pause_reading()  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        # The sender finished writing: answer what it sent, then close (MLLP has no half-closed use).
        self.closing = True
        return bool(self.tickets)  # True keeps the transport open for the outstanding ACKs

    def connection_lost(self, exc: Exception | None) -> None:
        if self.decoder.discarded:
            self._report_garbage(closing=False)
        if isinstance(exc, OSError):  # resets, TLS errors
            log.info("MLLP connection %s dropped: %s", self.peer, type(exc).__name__)
        elif exc is not None:
            log.warning("MLLP connection %s lost: %s", self.peer, type(exc).__name__)
        self.server._open.discard(self)
        self.server._waiting.pop(self, None)
        if self._idle is not None:
            self._idle.cancel()
        self.closing = True
        self.transport = None

    # -- ACKs -------------------------------------------------------------------------------------------
    def write_ready_acks(self) -> bool:
        """Write the ACKs of the leading committed frames, in order; True once none is outstanding.
        A frame that could not be stored is not acknowledged: the connection closes, so the sender
        resends it later (a later frame of the same read may be stored: its resend is a duplicate and
        gets its original ACK)."""
        transport = self.transport
        if transport is None:
            self.tickets.clear()
            return True
        tickets = self.tickets
        out: list[bytes] = []
        failed: Exception | None = None
        while tickets and tickets[0].done:
            ticket = tickets.popleft()
            if ticket.error is not None:
                failed = ticket.error
                break
            accepted = ticket.accepted
            if accepted is not None and accepted.ack is not None:
                out += (START, accepted.ack.encode("utf-8"), END)
        if out:
            transport.write(b"".join(out))
        if failed is not None:
            log.info("MLLP connection %s: a message was not stored (%s); closing", self.peer, failed)
            tickets.clear()
            self.close()
            return True
        if self.paused and len(tickets) < MAX_IN_FLIGHT // 2 and not self.closing:
            self.paused = False
            transport.resume_reading()
        if not tickets and self.closing:
            self.close()
        return not tickets

    def _report_garbage(self, *, closing: bool) -> None:
        """One log line per connection that sent bytes outside MLLP frames (never the bytes)."""
        if self._garbage_reported:
            return
        self._garbage_reported = True
        log.warning(
            "MLLP connection %s sent %d byte(s) outside frames (%d frame(s))%s",
            self.peer,
            self.decoder.discarded,
            self.frames,
            f"; over the {self.server.settings.mllp_max_garbage_bytes}-byte limit, closing"
            if closing
            else "",
        )

    def close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()  # flushes what was written, then connection_lost

    def _check_idle(self) -> None:
        if self.transport is None:
            return
        loop = asyncio.get_running_loop()
        timeout = self.server.settings.mllp_idle_timeout_s
        if self.decoder.discarded and not self.frames:
            timeout = min(timeout, GARBAGE_IDLE_S)
        idle_for = loop.time() - self._last_read
        if idle_for >= timeout and not self.tickets:
            log.info("MLLP connection %s idle, closing", self.peer)
            self.close()
            return
        self._idle = loop.call_later(max(timeout - idle_for, 0.05), self._check_idle)
