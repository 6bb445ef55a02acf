"""Rows a pipeline batch holds back and writes at its end, one INSERT (``COPY`` on PostgreSQL) per table,
instead of one per table per message: on PostgreSQL each is two round trips and a statement's start-up,
and an ORU^R01 writes rows into seven tables (its resources' versions, its message links, five of the
index tables). Only rows nothing in the batch reads back are held: the pipeline reads resources by id and the
MPI its own tables.

A write that changes a resource whose index rows are still held writes everything held first
(``search_index``), so its DELETE finds them. Each message runs in a savepoint: :meth:`Held.mark` at its
start, then :meth:`Held.undo` if the savepoint was rolled back (its own held rows are dropped, and the
earlier messages' rows that a flush inside it wrote, which the rollback took away, are held again) or
:meth:`Held.done` if not.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy import Table
from sqlalchemy.orm import Session

from hub.store import bulk

_KEY = "hub.store.deferred"


class Held:
    def __init__(self) -> None:
        self.tables: dict[str, tuple[Table, tuple[str, ...], int | None]] = {}  # name → table, columns, pk at
        self.rows: dict[str, list[bulk.Row]] = {}
        self.pks: set[int] = set()  # the resources with index rows held
        self._mark: dict[str, int] | None = None  # where the current message's rows start, per table
        self._rewritten: dict[str, list[bulk.Row]] = {}  # earlier rows flushed inside its savepoint

    def hold(
        self, table: Table, columns: Sequence[str], rows: Sequence[bulk.Row], pk_at: int | None = None
    ) -> None:
        """Hold ``rows`` (tuples in the order of ``columns``) for ``table``; ``pk_at``: where a row carries
        the pk of the resource it indexes."""
        if not rows:
            return
        if table.name not in self.tables:
            self.tables[table.name] = (table, tuple(columns), pk_at)
            self.rows[table.name] = []
            if self._mark is not None:
                self._mark[table.name] = 0
                self._rewritten[table.name] = []
        self.rows[table.name].extend(rows)
        if pk_at is not None:
            self.pks.update(row[pk_at] for row in rows)

    def mark(self) -> None:
        self._mark = {name: len(rows) for name, rows in self.rows.items()}
        self._rewritten = {name: [] for name in self.rows}

    def done(self) -> None:
        self._mark = None
        self._rewritten = {}

    def undo(self) -> None:
        assert self._mark is not None, "undo() after mark()"
        for name, start in self._mark.items():
            self.rows[name][start:] = []
            self.rows[name][:0] = self._rewritten[name]
        self.pks = {
            row[pk_at]
            for name, (_, _, pk_at) in self.tables.items()
            if pk_at is not None
            for row in self.rows[name]
        }
        self.done()

    def flush(self, session: Session) -> None:
        """Write everything held (one statement per table)."""
        connection = session.connection()
        for name, (table, columns, _) in self.tables.items():
            rows = self.rows[name]
            if rows:
                bulk.insert_rows(connection, table, columns, rows)
            if self._mark is not None:  # inside a message's savepoint: its rollback would undo these
                self._rewritten[name].extend(rows[: self._mark[name]])
                self._mark[name] = 0
            self.rows[name] = []
        self.pks = set()


def held(session: Session) -> Held | None:
    """What the session's current batch holds, if it holds rows back."""
    found: Held | None = session.info.get(_KEY)
    return found


@contextmanager
def holding(session: Session) -> Iterator[Held]:
    """Hold back the rows of the writes made in the block; they are written when it ends without an error."""
    rows = Held()
    session.info[_KEY] = rows
    try:
        yield rows
        rows.flush(session)
    finally:
        session.info.pop(_KEY, None)
