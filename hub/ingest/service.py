"""Accepting messages: store, then ACK. Nothing acknowledged is ever lost.

Every transport (MLLP, HTTP, ``hub import``) hands raw bytes to :class:`Intake`. One committer thread
takes everything that arrived from all connections while its previous commit ran (at most
``HUB_COMMIT_MAX_BATCH``; ``HUB_COMMIT_WINDOW_MS`` > 0 also waits that long for company), inserts it in
one transaction and commits; only then are the ACKs released and the new message ids dispatched for
processing (group commit: one fsync for many messages keeps ACK latency low at high rates).

Per message, the header decides: unreadable MSH → kept as ``rejected`` with AR; unknown facility while
registration is closed → kept as ``rejected`` with AR; (MSH-4 facility, MSH-3 application, MSH-10) seen
before with the same bytes → the original ACK again, nothing stored; the same key with other content →
kept as ``held`` (not applied) with AE; otherwise stored as ``received`` with AA (CA in enhanced mode).
HL7 makes a control id unique per sending application: two applications of one facility that use the
same number send two messages. The sender is the MSH-4 facility; when MSH-4 is empty, the one facility
the connection's credential sends for (a sender token, HTTP password, TLS certificate), else the MSH-3
application (see :func:`sender_key`); a rejected message keeps the facility and application it named.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from hub import hl7, metrics
from hub.config import Settings
from hub.db import write_turn
from hub.hl7.reference import structure_for
from hub.ingest.ack import AckError, ack_code, build_ack, should_send
from hub.store import bulk
from hub.store.models import InboundMessage, Sender
from hub.tasks.pacing import IntakeBeacon

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
class Ticket:
    """What a transport that waits by polling holds for a submitted message (the MLLP listener: a
    ``Future`` and a loop wake-up per message cost more than the message's own commit). Set by the
    committer thread; ``done`` is written last. ``error`` is :class:`StorageUnavailable` when the
    message was not stored."""

    accepted: Accepted | None = None
    error: Exception | None = None
    done: bool = False


@dataclass(slots=True)
class _Item:
    raw: bytes
    transport: str
    future: Future[Accepted] | Ticket
    oversize: int = 0
    queued_at: float = 0.0  # time.perf_counter() when the transport handed it over (ACK latency)
    # The facilities (MSH-4) the transport's credential may send for; None: not checked (``hub import``).
    allowed: frozenset[str] | None = None
    header: hl7.Header | None = None
    error: AckError | None = None
    flag: str | None = None  # the error_code a rejected message is kept with, when not its ERR code
    text_sample: str = ""
    # Worked out by ``_prepare`` on the transport's thread, off the committer's (whose time is every
    # message's wait): the sha256 of the bytes, the patient key, and the ACK of a message that turns out
    # new (AA, or CA in enhanced mode).
    digest: str = ""
    patient_key: str | None = None
    new_ack: str = ""


@dataclass(slots=True)
class IntakeStats:
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    held: int = 0
    batches: int = 0
    rechecked: int = 0  # PostgreSQL: messages the pipelined INSERT found stored before (see _store_new)
    batch_sizes: list[int] = field(default_factory=list)


class StorageUnavailable(RuntimeError):
    """The store could not commit: the message is NOT accepted and must not be acknowledged."""


class Intake:
    def __init__(self, engine: Engine, settings: Settings, dispatch: Dispatch | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.dispatch = dispatch
        self._beacon = IntakeBeacon(settings.var_dir)  # tells the machine's workers of a burst
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._senders: dict[str, int] = {}
        self._committed: list[Callable[[], None]] = []
        self._raw: Any = None  # the committer's DBAPI connection
        self._sqlite = engine.dialect.name == "sqlite"
        self._earlier_cache: dict[tuple[int, int, int], str] = {}
        self._count_sql = bulk.placeholders(
            engine.dialect, "UPDATE inbound_message SET duplicate_count = duplicate_count + ? WHERE id = ?"
        )
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
        raw, self._raw = self._raw, None
        if raw is not None:
            with contextlib.suppress(Exception):
                raw.close()
        self._beacon.close()

    # -- API for transports ----------------------------------------------------------------------------
    def submit(
        self,
        raw: bytes,
        transport: str = "mllp",
        *,
        oversize: int = 0,
        allowed: frozenset[str] | None = None,
    ) -> Future[Accepted]:
        """Queue raw message bytes; the future resolves once they are committed (or raises
        :class:`StorageUnavailable`). With ``allowed``, a message whose MSH-4 is not one of those
        facilities is kept as ``rejected`` (error ``sender-not-authorized``) and answered AR."""
        fut: Future[Accepted] = Future()
        self._enqueue(_Item(raw=raw, transport=transport, future=fut, oversize=oversize, allowed=allowed))
        return fut

    def accept(self, raw: bytes, transport: str = "mllp") -> Accepted:
        return self.submit(raw, transport).result()

    def submit_ticket(
        self,
        raw: bytes,
        transport: str = "mllp",
        *,
        oversize: int = 0,
        allowed: frozenset[str] | None = None,
    ) -> Ticket:
        """As :meth:`submit`, answered through a :class:`Ticket`: the caller learns that tickets are done
        from the callbacks of :meth:`on_commit`, once per commit rather than once per message."""
        ticket = Ticket()
        self._enqueue(_Item(raw=raw, transport=transport, future=ticket, oversize=oversize, allowed=allowed))
        return ticket

    def on_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from the committer thread, so it must be cheap and thread-safe) after every
        commit attempt, once its messages' tickets and futures are resolved."""
        self._committed.append(callback)

    # -- internals -------------------------------------------------------------------------------------
    def _enqueue(self, item: _Item) -> None:
        item.queued_at = time.perf_counter()
        self._prepare(item)
        if self._thread is None:
            try:
                self._commit([item])
            finally:  # without a committer thread nothing keeps the connection: back to the pool
                raw, self._raw = self._raw, None
                if raw is not None:
                    with contextlib.suppress(Exception):
                        raw.close()
        else:
            self._queue.put(item)

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
            item.header = h = hl7.peek_header(item.raw)
        except hl7.HeaderError as exc:
            item.error = AckError(exc.code, exc.text, exc.location)
            return
        if item.allowed is not None and not h.sending_facility and len(item.allowed) == 1:
            # MSH-4 left empty: the connection's credential says which facility sends (its only one)
            item.header = h = replace(h, sending_facility=next(iter(item.allowed)))
        if item.allowed is not None and h.sending_facility not in item.allowed:
            item.error = AckError(
                "207", f"this sender is not authorized to send for facility {h.sending_facility!r}", "MSH^1^4"
            )
            item.flag = "sender-not-authorized"
        try:
            hl7.check_message(
                item.raw,
                h,
                max_segments=self.settings.hl7_max_segments,
                max_delimiters=self.settings.hl7_max_delimiters,
            )
        except hl7.HeaderError as exc:  # a second MSH, or a message past the limits: AR, bytes kept
            item.error = AckError(exc.code, exc.text, exc.location)
            return
        try:
            _derive(item, h)
        except Exception:  # left to the committer's turn, where any failure is answered, not raised here
            log.exception("could not prepare a message from %s", h.sending_facility)
            item.digest = ""

    def _run(self) -> None:
        window = self.settings.commit_window_ms / 1000.0
        gather = self.settings.commit_gather_ms / 1000.0
        max_batch = self.settings.commit_max_batch
        expected, last_commit = 1, 0.0
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            started = time.monotonic()
            if started - last_commit > max(0.05, 10 * gather):
                expected = 1  # after a pause nobody is known to be about to send
            deadline, gather_until = started + window, started + gather
            stop = False
            while len(batch) < max_batch:
                now = time.monotonic()
                remaining = deadline - now
                if remaining <= 0 and len(batch) < expected:
                    remaining = gather_until - now
                try:
                    nxt = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._commit(batch)
            expected, last_commit = len(batch), time.monotonic()
            if stop:
                return

    def _commit(self, batch: list[_Item]) -> None:
        try:
            senders = self._resolve_senders(batch)
            with write_turn(self.engine, urgent=True):
                reused = self._raw is not None
                try:
                    results = self._store(batch, senders)
                except Exception:
                    if not reused:
                        raise
                    # The kept connection may have died while idle (a database restart): once more on a
                    # fresh one. Should the failed attempt have committed after all, this one finds the
                    # messages stored and answers their ACKs as duplicates (the sweeper dispatches them).
                    log.warning("intake commit failed on its kept connection; retrying on a new one")
                    results = self._store(batch, senders)
        except Exception as exc:  # the store is down or broken: accept nothing, acknowledge nothing
            log.error("could not store %d message(s): %s", len(batch), type(exc).__name__)
            self._senders.clear()
            unavailable = StorageUnavailable(str(exc))
            for item in batch:
                _fail(item.future, unavailable)
            self._notify()
            return
        self._beacon.mark()
        to_dispatch: list[int] = []
        done_at = time.perf_counter()
        for item, row, accepted in results:
            metrics.INTAKE.labels(item.transport, accepted.code).inc()
            metrics.ACK_LATENCY.observe(done_at - item.queued_at)
            if accepted.state == "received" and not accepted.duplicate:
                to_dispatch.append(row.id)
            _resolve(
                item.future, Accepted(accepted.ack, accepted.code, row.id, accepted.duplicate, accepted.state)
            )
        self._notify()
        self.stats.batches += 1
        if to_dispatch and self.dispatch is not None:
            try:
                self.dispatch(to_dispatch)
            except Exception:  # the sweeper re-dispatches what was stored but not handed over
                log.exception("dispatch of %d message(s) failed; the sweeper will retry", len(to_dispatch))

    def _notify(self) -> None:
        for callback in self._committed:
            try:
                callback()
            except Exception:  # a listener's bug must not stop the committer
                log.exception("commit callback failed")

    def _store(
        self, batch: list[_Item], senders: dict[str, int | None]
    ) -> list[tuple[_Item, _Row, Accepted]]:
        if not self._sqlite:
            stored = self._store_new(batch, senders)
            if stored is not None:
                return stored
        return self._store_checked(batch, senders)

    def _store_new(
        self, batch: list[_Item], senders: dict[str, int | None]
    ) -> list[tuple[_Item, _Row, Accepted]] | None:
        """PostgreSQL's common case in one round trip: a batch whose control ids are all new. Its rows go in
        through one INSERT that skips a readable message whose (facility, MSH-10) is stored already
        (``_new_sql``); the INSERT and the COMMIT go to the server as one pipeline (the checked path costs
        four round trips: BEGIN, the SELECT of earlier messages, the INSERTs, COMMIT; each a wait for the
        server and a wake-up of this thread). A message the INSERT skipped is then stored by the checked
        path, in a transaction of its own: as a duplicate, or held. ``None`` when a control id repeats
        within the batch: the checked path then takes the whole batch."""
        keys = [
            (i.header.sending_facility, i.header.sending_application, i.header.control_id)
            for i in batch
            if i.header is not None and i.error is None
        ]
        if len(set(keys)) != len(keys):
            return None
        now = datetime.now(UTC)
        out: list[tuple[_Item, _Row, Accepted]] = []
        new: list[tuple[_Row, dict[str, Any]]] = []
        for item in batch:  # with no earlier rows, each readable message is `received` (or rejected)
            out.append(self._store_one(item, senders, {}, new, now))
        sql, bound = bulk.driver_rows(
            self.engine.dialect,
            _MESSAGES,
            _new_sql(len(new)),
            _NEW_COLUMNS,
            [tuple(v[c] for c in _NEW_COLUMNS) for _, v in new],
        )
        with self._cursor() as (driver, cursor):
            connection: Any = driver.dbapi_connection  # psycopg's: it has pipeline()
            with connection.pipeline():
                cursor.execute(sql, [v for row in bound for v in row])
                connection.commit()
            returned = sorted(cursor.fetchall())  # (id, facility, application, control_id), in order
        stored = {(facility, app, control) for _, facility, app, control in returned}
        inserted = iter(returned)
        assert len(new) == len(out), "each message of the batch is a new row"
        skipped: list[int] = []  # positions in ``out`` of the messages stored before
        for position, (row, values) in enumerate(new):
            key = (values["facility"], values["application"], values["control_id"])
            if values["state"] == "received" and key not in stored:
                skipped.append(position)
                continue
            rid, facility, app, control = next(inserted)
            if (facility, app, control) != key:  # never: the INSERT numbers its rows in the VALUES' order
                raise RuntimeError(f"intake INSERT returned message {rid} out of order")
            row.id = rid
        if skipped:
            self.stats.accepted -= len(skipped)  # counted again, as what they are, by the checked path
            self.stats.rechecked += len(skipped)
            again = self._store_checked([out[p][0] for p in skipped], senders)
            for position, result in zip(skipped, again, strict=True):
                out[position] = result
        return out

    def _store_checked(
        self, batch: list[_Item], senders: dict[str, int | None]
    ) -> list[tuple[_Item, _Row, Accepted]]:
        """One SELECT for the earlier messages with these control ids, one INSERT per new message and one
        UPDATE of duplicate counts, on a connection the committer keeps: statements go to the driver
        (no pool checkout, no SQLAlchemy execution context), so a commit of a few messages costs little
        more than its fsync."""
        now = datetime.now(UTC)
        keys = {
            (i.header.sending_facility, i.header.sending_application, i.header.control_id)
            for i in batch
            if i.header is not None and i.error is None
        }
        with self._cursor() as (driver, cursor):
            if self._sqlite:
                # The write lock up front (as the engine's own transactions take it).
                cursor.execute("BEGIN IMMEDIATE")
            existing: dict[tuple[str, str, str], list[_Row]] = {}
            if keys:
                # Plain INs (then the exact keys in Python) search the (facility, application,
                # control_id) index on every backend; a row-value IN makes SQLite scan the whole index.
                controls = sorted({c for _, _, c in keys})
                facilities = sorted({f for f, _, _ in keys})
                apps = sorted({a for _, a, _ in keys})
                cursor.execute(
                    self._earlier_sql(len(controls), len(facilities), len(apps)),
                    [*facilities, *apps, *controls],
                )
                for rid, facility, app, control, digest, state, code, ack in cursor.fetchall():
                    if (facility, app, control) in keys:
                        existing.setdefault((facility, app, control), []).append(
                            _Row(rid, digest, state, code, ack)
                        )
            out: list[tuple[_Item, _Row, Accepted]] = []
            new: list[tuple[_Row, dict[str, Any]]] = []
            for item in batch:
                out.append(self._store_one(item, senders, existing, new, now))
            if new:
                ids = self._insert(cursor, [values for _, values in new])
                for (row, _), rid in zip(new, ids, strict=True):
                    row.id = rid
            counted = {id(row): row for _, row, a in out if a.duplicate}.values()
            if counted:
                cursor.executemany(self._count_sql, [(row.duplicates, row.id) for row in counted])
            driver.commit()
        return out

    # -- the committer's connection ---------------------------------------------------------------------
    @contextlib.contextmanager
    def _cursor(self) -> Iterator[tuple[Any, Any]]:
        """The kept connection and a cursor on it; after an error the connection is dropped (the next
        commit starts on a fresh one)."""
        driver = self._driver()
        cursor: Any = None
        try:
            cursor = driver.cursor()
            yield driver, cursor
        except BaseException:
            self._drop_driver()
            raise
        finally:
            if cursor is not None:
                with contextlib.suppress(Exception):
                    cursor.close()

    def _driver(self) -> Any:
        """The committer's own DBAPI connection (from the engine's pool, with its connect-time settings),
        kept across commits; dropped after an error, so the next commit starts on a fresh one."""
        if self._raw is None:
            self._raw = self.engine.raw_connection()
        return self._raw

    def _drop_driver(self) -> None:
        raw, self._raw = self._raw, None
        if raw is None:
            return
        with contextlib.suppress(Exception):
            raw.rollback()
        with contextlib.suppress(Exception):
            raw.invalidate()  # a connection that failed mid-transaction is not reused

    def _earlier_sql(self, controls: int, facilities: int, applications: int) -> str:
        """Parameters: the facilities, then the applications, then the control ids."""
        sql = self._earlier_cache.get((controls, facilities, applications))
        if sql is None:
            sql = bulk.placeholders(
                self.engine.dialect,
                f"SELECT {', '.join(_EARLIER_COLUMNS)} FROM inbound_message"
                f" WHERE facility IN ({bulk.marks(facilities)}) AND application IN ({bulk.marks(applications)})"
                f" AND control_id IN ({bulk.marks(controls)}) ORDER BY id",
            )
            if len(self._earlier_cache) < 256:
                self._earlier_cache[(controls, facilities, applications)] = sql
        return sql

    def _insert(self, cursor: Any, rows: list[dict[str, Any]]) -> list[int]:
        """INSERT the new messages, their ids back in order."""
        sql, bound = bulk.driver_rows(
            self.engine.dialect, _MESSAGES, _INSERT_SQL, _INSERT_COLUMNS, [_insert_row(v) for v in rows]
        )
        if self._sqlite:
            ids = []
            for row in bound:
                cursor.execute(sql, row)
                ids.append(int(cursor.lastrowid))
            return ids
        # psycopg: one pipelined round trip for all rows, a result set per row.
        cursor.executemany(sql + " RETURNING id", bound, returning=True)
        ids = []
        while True:
            ids.append(int(cursor.fetchone()[0]))
            if not cursor.nextset():
                return ids

    def _resolve_senders(self, batch: list[_Item]) -> dict[str, int | None]:
        """Sender ids of the batch's facilities: from the cache, else looked up (and registered on first
        contact when registration is open) in a transaction of their own, before the messages'."""
        out: dict[str, int | None] = {}
        unknown: set[str] = set()
        for item in batch:
            if item.header is None or item.error is not None:
                continue
            facility = sender_key(item.header)
            cached = self._senders.get(facility)
            if cached is not None:
                out[facility] = cached
            else:
                unknown.add(facility)
        if unknown:
            with write_turn(self.engine, urgent=True), self.engine.begin() as conn:
                for facility in sorted(unknown):
                    out[facility] = self._sender_id(conn, facility)
        return out

    def _store_one(
        self,
        item: _Item,
        senders: dict[str, int | None],
        existing: dict[tuple[str, str, str], list[_Row]],
        new: list[tuple[_Row, dict[str, Any]]],
        now: datetime,
    ) -> tuple[_Item, _Row, Accepted]:
        h = item.header
        if h is not None and item.error is None and not item.digest:
            _derive(item, h)  # not prepared by a transport (a direct call)
        digest = item.digest or hashlib.sha256(item.raw).hexdigest()
        named = (h.sending_facility, h.sending_application) if h else _guess_sender(item.raw)
        values: dict[str, Any] = {
            "raw": item.raw,
            "content_hash": digest,
            "transport": item.transport,
            "received_at": now,
            "facility": named[0],
            "application": named[1],
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
        sender_id = senders.get(sender_key(h))
        if sender_id is None:
            return self._reject(item, values, new, self._unknown_sender(h))
        values["sender_id"] = sender_id
        key = (h.sending_facility, h.sending_application, h.control_id)
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
            values["patient_key"] = item.patient_key
            code = ack_code("AA", h)
            err = None
            self.stats.accepted += 1
        ack_text = item.new_ack if err is None else build_ack(h, code, error=err)
        row = self._add(values, new, state, code, ack_text)
        existing.setdefault(key, []).append(row)
        return item, row, Accepted(ack_text if should_send(code, h) else None, code, None, state=state)

    def _unknown_sender(self, h: hl7.Header) -> AckError:
        """Why a readable message has no sender: nothing names it, or (registration closed) it is not
        registered, or it was deactivated."""
        if not sender_key(h):
            return AckError(
                "101",
                "MSH-4 sending facility and MSH-3 sending application are both empty: the sender is unknown",
                "MSH^1^4",
            )
        if h.sending_facility:
            named = f"sending facility {h.sending_facility!r} (MSH-4)"
        else:
            named = f"sending application {h.sending_application!r} (MSH-3, MSH-4 empty)"
        if self.settings.registration_open:  # open registration registers everyone: this one was disabled
            return AckError("204", f"{named} is deactivated on the hub", "MSH^1^4")
        return AckError("204", f"{named} is not registered with the hub", "MSH^1^4")

    def _reject(
        self, item: _Item, values: dict[str, Any], new: list[tuple[_Row, dict[str, Any]]], err: AckError
    ) -> tuple[_Item, _Row, Accepted]:
        h = item.header
        code = ack_code("AR", h)
        control = h.control_id if h is not None else _guess_control_id(item.raw)
        ack_text = build_ack(h, code, error=err, control_id=control)
        values["error_code"] = item.flag or f"hl7-{err.code}"
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
_EARLIER_COLUMNS = ("id", "facility", "application", "control_id", "content_hash", "state", "ack_code", "ack")
_INSERT_COLUMNS = (
    "facility",
    "application",
    "control_id",
    "message_type",
    "message_structure",
    "version",
    "content_hash",
    "raw",
    "transport",
    "received_at",
    "state",
    "ack_code",
    "ack",
    "error_code",
    "error_text",
    "patient_key",
    "sender_id",
    "duplicate_count",
    "attempts",
)
_INSERT_SQL = (
    f"INSERT INTO inbound_message ({', '.join(_INSERT_COLUMNS)}) VALUES ({bulk.marks(len(_INSERT_COLUMNS))})"
)


def _insert_row(values: dict[str, Any]) -> tuple[Any, ...]:
    return (*(values[c] for c in _INSERT_COLUMNS[:-2]), 0, 0)


@lru_cache(maxsize=64)
def _new_sql(count: int) -> str:
    """PostgreSQL: INSERT ``count`` messages (their columns, row after row) in one statement, in their
    order, skipping each `received` one whose (facility, application, control_id) is stored already. One statement
    for the batch, not one per message: each statement costs the server a round of its own (parse,
    plan, execute) besides its rows. The test is a scalar
    subquery, which the planner cannot turn into a join over the whole table (as it may turn NOT EXISTS
    while the table has no statistics): one probe of the control-id index per row."""
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    typed = ", ".join(f"%s::{_MESSAGES.c[c].type.compile(dialect=dialect)}" for c in _NEW_COLUMNS)
    plain = ", ".join(["%s"] * len(_NEW_COLUMNS))
    rows = ", ".join(f"({typed if n == 1 else plain}, {n})" for n in range(1, count + 1))
    names = ", ".join(_NEW_COLUMNS)
    return (
        f"INSERT INTO inbound_message ({names}, duplicate_count, attempts)"
        f" SELECT {names}, 0, 0 FROM (VALUES {rows}) AS u({names}, n)"
        " WHERE u.state <> 'received' OR (SELECT 1 FROM inbound_message m"
        " WHERE m.facility = u.facility AND m.application = u.application"
        " AND m.control_id = u.control_id LIMIT 1) IS NULL"
        " ORDER BY n RETURNING id, facility, application, control_id"
    )


_NEW_COLUMNS = _INSERT_COLUMNS[:-2]


_SENDER = select(_SENDERS.c.id, _SENDERS.c.active).where(_SENDERS.c.facility == bindparam("facility"))


def _derive(item: _Item, h: hl7.Header) -> None:
    item.digest = hashlib.sha256(item.raw).hexdigest()
    item.patient_key = hl7.patient_key(hl7.decode(item.raw, h), h.encoding)
    item.new_ack = build_ack(h, ack_code("AA", h))


def _resolve(waiter: Future[Accepted] | Ticket, accepted: Accepted) -> None:
    if isinstance(waiter, Ticket):
        waiter.accepted = accepted
        waiter.done = True
    else:
        waiter.set_result(accepted)


def _fail(waiter: Future[Accepted] | Ticket, exc: Exception) -> None:
    if isinstance(waiter, Ticket):
        waiter.error = exc
        waiter.done = True
    elif not waiter.done():
        waiter.set_exception(exc)


def sender_key(h: hl7.Header) -> str:
    """Who sent a message, as the ``sender`` table knows it: the MSH-4 facility, else (MSH-4 empty) the
    MSH-3 application; "" when both are empty."""
    return h.sending_facility or h.sending_application


def _guess_sender(raw: bytes) -> tuple[str, str]:
    """(MSH-4, MSH-3) of a message whose MSH failed checks, as far as the line splits."""
    line = hl7.strip_bom(raw).lstrip(b"\r\n\t ").split(b"\r", 1)[0].split(b"\n", 1)[0]
    if not line.startswith(b"MSH") or len(line) < 8:
        return "", ""
    parts = line.split(line[3:4])
    comp = parts[1][:1] if len(parts) > 1 and parts[1] else b"^"

    def hd(n: int) -> str:
        if n >= len(parts):
            return ""
        first, _, rest = parts[n].partition(comp)
        value = first or rest.split(comp, 1)[0]
        return value.decode("latin-1", "replace").strip()[:200]

    return hd(3), hd(2)


def _guess_control_id(raw: bytes) -> str:
    """MSA-2 for a message whose MSH failed checks: MSH-10 if the line splits at all."""
    line = hl7.strip_bom(raw).split(b"\r", 1)[0].split(b"\n", 1)[0]
    if not line.startswith(b"MSH") or len(line) < 4:
        return ""
    parts = line.split(line[3:4])
    if len(parts) <= 9:
        return ""
    return "".join(c for c in parts[9].decode("latin-1")[:50] if c.isprintable())
