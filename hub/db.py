"""Engines and sessions. Application code never commits; ``session_scope`` (tasks, CLI) and the request
dependency do, at the boundary."""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from hub.config import get_settings

log = logging.getLogger(__name__)
T = TypeVar("T")


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def _sqlite_pragmas(synchronous: str) -> Any:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        # WAL lets readers run beside the one writer; FULL makes every commit (so every ACK) survive
        # power loss. NORMAL (the processing engine) skips the fsync: such a commit survives a crash of
        # the process, and power loss rolls back at most the last few (WAL frames are synced in order,
        # so the next FULL commit makes them durable too); a rolled-back processing leaves the message
        # `received`, and the sweeper processes it again.
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        if synchronous == "NORMAL":
            # The processing connection writes ~170 index rows a message into B-trees keyed by uuids,
            # scattered over the file: with SQLite's default 2 MiB cache most of those pages are read
            # back from the OS on every transaction. 64 MiB (taken only as pages are used) keeps them.
            cur.execute("PRAGMA cache_size=-65536")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    return on_connect


def _binary_cursor() -> Any:
    """A psycopg cursor class whose results come in PostgreSQL's binary format: stored resources travel
    as their bytes instead of hex text twice their size, which the server encodes and the client decodes
    (a page of 500 resources is ≈300 KB)."""
    import psycopg

    class BinaryCursor(psycopg.Cursor[Any]):
        def execute(self, query: Any, params: Any = None, **kw: Any) -> Any:
            kw.setdefault("binary", True)
            return super().execute(query, params, **kw)

    return BinaryCursor


def make_engine(url: str, *, read_only: bool = False, durable: bool = True, **kw: Any) -> Engine:
    """An engine for ``url``. ``durable=False`` is for re-doable work only (processing stored messages):
    its commits do not wait for the disk (SQLite synchronous=NORMAL, PostgreSQL synchronous_commit=off);
    the intake, whose commits precede ACKs, always uses a durable engine."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "isolation_level": None}, **kw)
        event.listen(engine, "connect", _sqlite_pragmas("FULL" if durable else "NORMAL"))

        # pysqlite's own transaction handling is off (isolation_level=None); begin explicitly so that a
        # writing transaction takes the write lock up front (BEGIN IMMEDIATE) instead of failing mid-way
        # on a stale snapshot. Read-only engines (the FHIR read path) begin deferred and never block.
        begin_sql = "BEGIN" if read_only else "BEGIN IMMEDIATE"

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            conn.exec_driver_sql(begin_sql)

        return engine
    if read_only and url.startswith("postgresql"):
        # The FHIR read path is short OLTP queries over data that lives in memory: no parallel workers
        # (on a small machine their start-up costs more than a page of results), no JIT, and random
        # reads priced as cached ones, so that ordered index scans win over bitmap scans plus a sort; and
        # every execution of a (psycopg-prepared) search planned for its own values: a generic plan,
        # which PostgreSQL adopts after five executions when its estimate looks no worse, cannot tell a
        # patient with 60 Observations from a code with 87,000, and hashed the code's 87,000 ids (100 ms
        # instead of 1 ms for the bench's golden Patient).
        options = (
            "-c max_parallel_workers_per_gather=0 -c jit=off -c random_page_cost=1.1"
            " -c plan_cache_mode=force_custom_plan"
        )
        kw.setdefault("connect_args", {"options": options, "cursor_factory": _binary_cursor()})
        # Autocommit: a read runs its statements without BEGIN and ROLLBACK, two round trips fewer per
        # request (on a busy machine each round trip is a wait for a CPU); each statement still reads
        # one consistent snapshot, and nothing on this engine writes.
        kw.setdefault("isolation_level", "AUTOCOMMIT")
    elif url.startswith("postgresql"):
        # The writing engines (intake, workers) plan every execution for its values too. psycopg prepares a
        # statement after its fifth execution, and PostgreSQL then keeps a generic plan made from the
        # statistics of that moment: planned while `resource` was nearly empty (and autovacuum had not yet
        # analysed it), the store's read of a message's current resources kept a bitmap scan of every row
        # of the four types (ix_resource_type_updated) instead of its primary-key probes, 8-15 ms a
        # message after 2,000 messages and growing with the table (auto_explain in `bench intake`).
        options = "-c plan_cache_mode=force_custom_plan"
        if not durable:
            options += " -c synchronous_commit=off"  # see the docstring: the work can be redone
        kw.setdefault("connect_args", {"options": options})
    kw.setdefault("pool_size", 10)
    kw.setdefault("max_overflow", 20)
    # The read path skips the liveness ping (≈0.3 ms a read); a dropped connection is recycled instead.
    kw.setdefault("pool_pre_ping", not read_only)
    kw.setdefault("pool_recycle", 1800)
    return create_engine(url, **kw)


def processing_engine(engine: Engine) -> Engine:
    """A non-durable twin of ``engine`` (same database) for the workers: see :func:`make_engine`."""
    return make_engine(engine.url.render_as_string(hide_password=False), durable=False)


@lru_cache(maxsize=4)
def get_engine(url: str | None = None) -> Engine:
    return make_engine(url or get_settings().sqlalchemy_url)


@lru_cache(maxsize=4)
def get_read_engine(url: str | None = None) -> Engine:
    """Engine for read-only work (on SQLite its transactions do not take the write lock)."""
    return make_engine(url or get_settings().sqlalchemy_url, read_only=True)


def session_factory(engine: Engine | None = None) -> sessionmaker[Session]:
    return sessionmaker(bind=engine or get_engine(), expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """One transaction: commit on success, roll back on error."""
    session = session_factory(engine)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


class WriteGate:
    """One writing transaction at a time among the writers that share an SQLite database (the intake's
    committer first, then the workers), in this process and, through two lock files beside the
    database, in every other hub process that opens it (the embedded worker process).

    SQLite itself serialises writers, but a writer that finds the file locked sleeps in steps of up to
    100 ms (``busy_timeout``) before it looks again: an ACK waiting behind a worker batch would take that
    long. Waiting here instead wakes the next writer the moment the previous one commits.

    Across processes the gate is ``flock``: ``<db>-write`` is held for the whole writing transaction, and
    ``<db>-urgent`` by an intake for as long as it waits for its turn. A worker does not start a turn
    while ``-urgent`` is held, and a worker in a turn ends it after the current message when it is (see
    ``urgent_waiting``). The kernel drops the locks of a process that dies, so a killed worker never
    leaves the intake waiting."""

    def __init__(self, path: str = "") -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._urgent = 0
        self.last_urgent = float("-inf")  # time.monotonic() of the last urgent (intake) write, any process
        self._files = _GateFiles(path) if path and path != ":memory:" else None
        self._announce_lock = threading.Lock()
        self._announcing = 0

    @contextmanager
    def hold(self, *, urgent: bool = False) -> Iterator[None]:
        files = self._files
        if urgent:
            with self._cond:
                self._urgent += 1
                self.last_urgent = time.monotonic()
            if files is not None:
                self._announce(files)
        elif files is not None:
            files.await_no_urgent()
        announced = urgent and files is not None
        try:
            with self._cond:
                try:
                    self._cond.wait_for(lambda: not self._busy and (urgent or self._urgent == 0))
                finally:
                    if urgent:
                        self._urgent -= 1
                        self.last_urgent = time.monotonic()
                self._busy = True
            try:
                if files is not None:
                    files.lock()
                    if announced:  # the other processes' writers may go on once this turn is over
                        announced = False
                        self._withdraw(files)
                yield
            finally:
                if files is not None:
                    files.unlock()
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
        finally:
            if announced:
                self._withdraw(files)  # type: ignore[arg-type]

    def _announce(self, files: _GateFiles) -> None:
        """Hold ``-urgent`` while any urgent writer of this process waits (the first one takes it)."""
        with self._announce_lock:
            self._announcing += 1
            if self._announcing == 1:
                files.announce()

    def _withdraw(self, files: _GateFiles) -> None:
        with self._announce_lock:
            self._announcing -= 1
            if self._announcing == 0:
                files.withdraw()

    def urgent_waiting(self) -> bool:
        """Whether an urgent writer (an intake, in any process) waits for the current holder to finish."""
        return self._urgent > 0 or (self._files is not None and self._files.urgent_elsewhere())

    def seconds_since_urgent(self) -> float:
        """How long ago an intake last asked for a turn or got one (0 while one waits)."""
        if self._urgent > 0:
            return 0.0
        last = self.last_urgent
        if self._files is not None:
            waiting, elsewhere = self._files.urgent_state()
            if waiting:
                return 0.0
            last = max(last, elsewhere)
        return time.monotonic() - last


class _GateFiles:
    """The cross-process half of a :class:`WriteGate` (POSIX ``flock``). Files are opened per use (a few
    microseconds): a process that opens many databases (the test suite) keeps no descriptors for them.
    A lock belongs to an open file, so a probe opens its own and never touches a lock this process
    holds."""

    def __init__(self, path: str) -> None:
        self._write_path = f"{path}-write"
        self._urgent_path = f"{path}-urgent"
        self._write = -1
        self._urgent = -1

    @staticmethod
    def _open(path: str) -> int:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def announce(self) -> None:
        fd = self._open(self._urgent_path)
        fcntl.flock(fd, fcntl.LOCK_EX)
        # When the intake last asked, for the other processes' idle test (time.monotonic() is one clock
        # for every process of the machine: CLOCK_MONOTONIC).
        os.pwrite(fd, struct.pack("d", time.monotonic()), 0)
        self._urgent = fd

    def withdraw(self) -> None:
        fd, self._urgent = self._urgent, -1
        os.pwrite(fd, struct.pack("d", time.monotonic()), 0)  # ... and when it got its turn
        os.close(fd)  # drops the lock

    def await_no_urgent(self) -> None:
        fd = self._open(self._urgent_path)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        finally:
            os.close(fd)

    def urgent_elsewhere(self) -> bool:
        return self.urgent_state()[0]

    def urgent_state(self) -> tuple[bool, float]:
        """Whether an intake holds ``-urgent`` now, and when one last asked or got its turn (one open)."""
        fd = self._open(self._urgent_path)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                waiting = False
            except BlockingIOError:
                waiting = True
            raw = os.pread(fd, 8, 0)
        finally:
            os.close(fd)
        return waiting, float(struct.unpack("d", raw)[0]) if len(raw) == 8 else float("-inf")

    def lock(self) -> None:
        fd = self._open(self._write_path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._write = fd

    def unlock(self) -> None:
        fd, self._write = self._write, -1
        os.close(fd)


_gates: dict[str, WriteGate] = {}  # by database file: the intake's and the workers' engines share one
_gates_lock = threading.Lock()


def _gate(engine: Engine) -> WriteGate:
    path = str(engine.url.database or "")
    with _gates_lock:
        gate = _gates.get(path)
        if gate is None:
            gate = _gates[path] = WriteGate(os.path.abspath(path) if path and path != ":memory:" else "")
        return gate


def urgent_write_waiting(engine: Engine) -> bool:
    """Whether an intake waits to write to this SQLite database (always False on other backends)."""
    return is_sqlite(engine) and _gate(engine).urgent_waiting()


def seconds_since_urgent_write(engine: Engine) -> float:
    """How long ago an intake last asked to write to this SQLite database (infinite if never)."""
    return _gate(engine).seconds_since_urgent()


@contextmanager
def write_turn(engine: Engine, *, urgent: bool = False) -> Iterator[None]:
    """Hold the engine's :class:`WriteGate` around a writing transaction (SQLite; a no-op otherwise)."""
    if not is_sqlite(engine):
        yield
        return
    with _gate(engine).hold(urgent=urgent):
        yield


# Deadlock detected, serialization failure, and a unique violation: a concurrent transaction inserted the
# same new row (a shared Practitioner, say) first; run again, the transaction finds it and updates it.
TRANSIENT_SQLSTATES = ("40P01", "40001", "23505")


def is_transient(exc: BaseException) -> bool:
    """A database error that a retry of the whole transaction can cure (PostgreSQL picked this
    transaction as a deadlock victim, a serialization conflict, or a concurrent insert of the same row)."""
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) in TRANSIENT_SQLSTATES


def retry_transient(work: Callable[[bool], T], attempts: int = 3) -> T:
    """Run ``work`` (one whole transaction) again when it fails transiently, up to ``attempts`` times.
    ``work`` is told whether this is its last attempt: then it should settle what it can (the pipeline
    records a still-conflicting message as failed, replayable) rather than raise again."""
    for attempt in range(1, attempts + 1):
        try:
            return work(attempt == attempts)
        except Exception as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            log.warning(
                "transaction failed transiently (%s); retry %d of %d",
                type(exc).__name__,
                attempt,
                attempts - 1,
            )
    raise AssertionError("unreachable")
