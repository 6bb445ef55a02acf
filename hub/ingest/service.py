"""Accepting messages: store, then ACK. Nothing acknowledged is ever lost.

Every transport (MLLP, HTTP, ``hub import``) hands raw bytes to :class:`Intake`. One committer thread
takes everything that arrived from all connections while its previous commit ran (at most
``HUB_COMMIT_MAX_BATCH``; ``HUB_COMMIT_WINDOW_MS`` > 0 also waits that long for company), inserts it in
one transaction and commits; only then are the ACKs released and the new message ids dispatched for
processing (group commit: one fsync for many messages keeps ACK latency low at high rates).

Per message, the header decides: unreadable MSH → kept as ``rejected`` with AR; unknown facility while
registration is closed → kept as ``rejected`` with AR; (facility, MSH-10) seen before with the same bytes
→ the original ACK again, nothing stored; the same control id with other content → kept as ``held`` (not
applied) with AE; otherwise stored as ``received`` with AA (CA in enhanced mode).
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from hub import hl7
from hub.config import Settings
from hub.db import write_turn
from hub.hl7.reference import structure_for
from hub.ingest.ack import AckError, ack_code, build_ack, should_send
from hub.store.models import InboundMessage, Sender

log = logging.getLogger(__name__)

Dispatch = Callable[[Sequence[int]], None]


@dataclass(frozen=True, slots=True)
class Accepted:
    """What the transport answers. ``ack`` is None when MSH-15 says not to acknowledge."""

    ack: str | None
    code: str  # AA AE AR CA CE CR
    message_id: int | None
    duplicate: bool = False
    state: str = "received"


@dataclass(slots=True)
class _Item:
    raw: bytes
    transport: str
    future: Future[Accepted]
    oversize: int = 0
    header: hl7.Header | None = None
    error: AckError | None = None
    text_sample: str = ""


@dataclass(slots=True)
class IntakeStats:
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    held: int = 0
    batches: int = 0
    batch_sizes: list[int] = field(default_factory=list)


class StorageUnavailable(RuntimeError):
    """The store could not commit: the message is NOT accepted and must not be acknowledged."""


class Intake:
    def __init__(self, engine: Engine, settings: Settings, dispatch: Dispatch | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.dispatch = dispatch
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._senders: dict[str, int] = {}
        self.stats = IntakeStats()

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="hub-intake-commit", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None

    # -- API for transports ----------------------------------------------------------------------------
    def submit(self, raw: bytes, transport: str = "mllp", *, oversize: int = 0) -> Future[Accepted]:
        """Queue raw message bytes; the future resolves once they are committed (or raises
        :class:`StorageUnavailable`)."""
        fut: Future[Accepted] = Future()
        item = _Item(raw=raw, transport=transport, future=fut, oversize=oversize)
        self._prepare(item)
        if self._thread is None:
            self._commit([item])
        else:
            self._queue.put(item)
        return fut

    def accept(self, raw: bytes, transport: str = "mllp") -> Accepted:
        return self.submit(raw, transport).result()

    # -- internals -------------------------------------------------------------------------------------
    def _prepare(self, item: _Item) -> None:
        """Header checks that need no database (done on the caller's thread)."""
        if item.oversize:
            item.error = AckError(
                "207",
                f"message of {item.oversize} bytes exceeds the {self.settings.mllp_max_frame_bytes}-byte limit",
                "MSH",
            )
            try:
                item.header = hl7.peek_header(item.raw)
            except hl7.HeaderError:
                item.header = None
            return
        try:
            item.header = hl7.peek_header(item.raw)
        except hl7.HeaderError as exc:
            item.error = AckError(exc.code, exc.text, exc.location)

    def _run(self) -> None:
        window = self.settings.commit_window_ms / 1000.0
        max_batch = self.settings.commit_max_batch
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + window
            stop = False
            while len(batch) < max_batch:
                remaining = deadline - time.monotonic()
                try:
                    nxt = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[_Item]) -> None:
        try:
            with write_turn(self.engine, urgent=True), self.engine.begin() as conn:
                results = self._store(conn, batch)
        except Exception as exc:  # the store is down or broken: accept nothing, acknowledge nothing
            log.error("could not store %d message(s): %s", len(batch), type(exc).__name__)
            self._senders.clear()
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(StorageUnavailable(str(exc)))
            return
        to_dispatch: list[int] = []
        for item, row, accepted in results:
            if accepted.state == "received" and not accepted.duplicate:
                to_dispatch.append(row.id)
            item.future.set_result(
                Accepted(accepted.ack, accepted.code, row.id, accepted.duplicate, accepted.state)
            )
        self.stats.batches += 1
        if to_dispatch and self.dispatch is not None:
            try:
                self.dispatch(to_dispatch)
            except Exception:  # the sweeper re-dispatches what was stored but not handed over
                log.exception("dispatch of %d message(s) failed; the sweeper will retry", len(to_dispatch))

    def _store(self, conn: Connection, batch: list[_Item]) -> list[tuple[_Item, _Row, Accepted]]:
        """One SELECT for the earlier messages with these control ids, one multi-row INSERT (ids back in
        parameter order) and one UPDATE of duplicate counts: Core statements, no ORM unit of work, so
        a commit of a few messages costs little more than its fsync."""
        now = datetime.now(UTC)
        keys = {
            (i.header.sending_facility, i.header.control_id)
            for i in batch
            if i.header is not None and i.error is None
        }
        existing: dict[tuple[str, str], list[_Row]] = {}
        if keys:
            # Two plain INs (then the exact pairs in Python) search the (facility, control_id) index on
            # every backend; a row-value IN makes SQLite scan the whole index, once per commit.
            found = conn.execute(
                _EARLIER,
                {"controls": sorted({c for _, c in keys}), "facilities": sorted({f for f, _ in keys})},
            )
            for r in found:
                if (r.facility, r.control_id) in keys:
                    existing.setdefault((r.facility, r.control_id), []).append(
                        _Row(r.id, r.content_hash, r.state, r.ack_code, r.ack)
                    )
        out: list[tuple[_Item, _Row, Accepted]] = []
        new: list[tuple[_Row, dict[str, Any]]] = []
        for item in batch:
            out.append(self._store_one(conn, item, existing, new, now))
        if new:
            ids = conn.execute(_INSERT, [values for _, values in new]).scalars().all()
            for (row, _), rid in zip(new, ids, strict=True):
                row.id = rid
        counted = {id(row): row for _, row, a in out if a.duplicate}.values()
        if counted:
            conn.execute(_COUNT_DUPLICATES, [{"rid": row.id, "n": row.duplicates} for row in counted])
        return out

    def _store_one(
        self,
        conn: Connection,
        item: _Item,
        existing: dict[tuple[str, str], list[_Row]],
        new: list[tuple[_Row, dict[str, Any]]],
        now: datetime,
    ) -> tuple[_Item, _Row, Accepted]:
        h = item.header
        digest = hashlib.sha256(item.raw).hexdigest()
        values: dict[str, Any] = {
            "raw": item.raw,
            "content_hash": digest,
            "transport": item.transport,
            "received_at": now,
            "facility": h.sending_facility if h else "",
            "control_id": h.control_id if h else "",
            "message_type": h.message_type if h else "",
            "message_structure": (
                h.message_structure or structure_for(h.message_code, h.trigger_event, h.version)
            )
            if h
            else "",
            "version": h.version if h else "",
            "sender_id": None,
            "patient_key": None,
            "error_code": None,
            "error_text": None,
        }
        if item.error is not None:
            return self._reject(item, values, new, item.error)
        assert h is not None
        sender_id = self._sender_id(conn, h.sending_facility)
        if sender_id is None:
            unknown = AckError(
                "204",
                f"sending facility {h.sending_facility!r} (MSH-4) is not registered with the hub",
                "MSH^1^4",
            )
            return self._reject(item, values, new, unknown)
        values["sender_id"] = sender_id
        key = (h.sending_facility, h.control_id)
        earlier = existing.get(key, [])
        err: AckError | None
        same = next((r for r in earlier if r.content_hash == digest), None)
        if same is not None:
            same.duplicates += 1
            self.stats.duplicates += 1
            ack = same.ack if should_send(same.ack_code, h) else None
            # ``same`` may be in this very batch, without an id until the INSERT: hand the row back.
            return item, same, Accepted(ack, same.ack_code, None, duplicate=True, state=same.state)
        if earlier:
            state = "held"
            values["error_code"] = "control-id-conflict"
            values["error_text"] = (
                f"MSH-10 {h.control_id!r} was already used by message {earlier[0].id} with other content; "
                "held, not applied (replay it by id to apply)"
            )
            code = ack_code("AE", h)
            err = AckError("205", values["error_text"], "MSH^1^10")
            self.stats.held += 1
        else:
            state = "received"
            values["patient_key"] = hl7.patient_key(hl7.decode(item.raw, h), h.encoding)
            code = ack_code("AA", h)
            err = None
            self.stats.accepted += 1
        ack_text = build_ack(h, code, error=err)
        row = self._add(values, new, state, code, ack_text)
        existing.setdefault(key, []).append(row)
        return item, row, Accepted(ack_text if should_send(code, h) else None, code, None, state=state)

    def _reject(
        self, item: _Item, values: dict[str, Any], new: list[tuple[_Row, dict[str, Any]]], err: AckError
    ) -> tuple[_Item, _Row, Accepted]:
        h = item.header
        code = ack_code("AR", h)
        control = h.control_id if h is not None else _guess_control_id(item.raw)
        ack_text = build_ack(h, code, error=err, control_id=control)
        values["error_code"] = f"hl7-{err.code}"
        values["error_text"] = err.text
        row = self._add(values, new, "rejected", code, ack_text)
        self.stats.rejected += 1
        return item, row, Accepted(ack_text if should_send(code, h) else None, code, None, state="rejected")

    @staticmethod
    def _add(
        values: dict[str, Any], new: list[tuple[_Row, dict[str, Any]]], state: str, code: str, ack: str
    ) -> _Row:
        values.update(state=state, ack_code=code, ack=ack)
        row = _Row(0, values["content_hash"], state, code, ack)
        new.append((row, values))
        return row

    def _sender_id(self, conn: Connection, facility: str) -> int | None:
        cached = self._senders.get(facility)
        if cached is not None:
            return cached
        sender = conn.execute(_SENDER, {"facility": facility}).first()
        if sender is None:
            if not self.settings.registration_open or not facility:
                return None
            try:
                with conn.begin_nested():
                    conn.execute(
                        insert(_SENDERS),
                        {
                            "facility": facility,
                            "name": facility,
                            "time_zone": self.settings.default_time_zone,
                            "auto_registered": True,
                            "active": True,
                            "created_at": datetime.now(UTC),
                        },
                    )
            except IntegrityError:  # another process registered it first
                pass
            sender = conn.execute(_SENDER, {"facility": facility}).one()
            log.info("registered sender %s on first contact", facility)
        if not sender.active:
            return None
        self._senders[facility] = sender.id
        return int(sender.id)

    def forget_sender(self, facility: str) -> None:
        """Drop a cached sender (after an operator changed it)."""
        self._senders.pop(facility, None)


@dataclass(slots=True)
class _Row:
    """What a commit needs to know of a stored message (new in this batch, or found from before)."""

    id: int
    content_hash: str
    state: str
    ack_code: str
    ack: str | None
    duplicates: int = 0  # duplicates seen in this batch, added to ``duplicate_count`` at the end


_MESSAGES = InboundMessage.metadata.tables["inbound_message"]
_SENDERS = Sender.metadata.tables["sender"]
_EARLIER = (
    select(
        _MESSAGES.c.id,
        _MESSAGES.c.facility,
        _MESSAGES.c.control_id,
        _MESSAGES.c.content_hash,
        _MESSAGES.c.state,
        _MESSAGES.c.ack_code,
        _MESSAGES.c.ack,
    )
    .where(
        _MESSAGES.c.control_id.in_(bindparam("controls", expanding=True)),
        _MESSAGES.c.facility.in_(bindparam("facilities", expanding=True)),
    )
    .order_by(_MESSAGES.c.id)
)
_INSERT = (
    insert(_MESSAGES)
    .values(duplicate_count=0, attempts=0)
    .returning(_MESSAGES.c.id, sort_by_parameter_order=True)
)
_COUNT_DUPLICATES = (
    update(_MESSAGES)
    .where(_MESSAGES.c.id == bindparam("rid"))
    .values(duplicate_count=_MESSAGES.c.duplicate_count + bindparam("n"))
)
_SENDER = select(_SENDERS.c.id, _SENDERS.c.active).where(_SENDERS.c.facility == bindparam("facility"))


def _guess_control_id(raw: bytes) -> str:
    """MSA-2 for a message whose MSH failed checks: MSH-10 if the line splits at all."""
    line = hl7.strip_bom(raw).split(b"\r", 1)[0].split(b"\n", 1)[0]
    if not line.startswith(b"MSH") or len(line) < 4:
        return ""
    parts = line.split(line[3:4])
    return parts[9].decode("latin-1", "replace")[:50] if len(parts) > 9 else ""
