"""Many-row statements sent straight to the driver, for the write path of the resource store.

A Core ``insert(table)`` given a list of dicts is compiled (or looked up in the cache), matched key by
key and run through the type processors once per row per call: for the ~170 small rows an ORU^R01 becomes
that cost more than the database's own work. Here the SQL text is built once per dialect, rows are tuples,
and the dialect's own bind processors are applied to the columns that have one (SQLite's datetime text,
booleans), so what lands is exactly what a Core insert writes. ``exec_driver_sql`` keeps SQLAlchemy's
connection, transaction (savepoints included) and error wrapping.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError

Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class _Prepared:
    sql: str
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]


_PREPARED: dict[tuple[str, str], _Prepared] = {}


def _prepare(dialect: Dialect, table: Table, sql: str, columns: Sequence[str]) -> _Prepared:
    key = (dialect.name, sql)
    prepared = _PREPARED.get(key)
    if prepared is None:
        processors = []
        for position, name in enumerate(columns):
            process = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                processors.append((position, process))
        prepared = _Prepared(placeholders(dialect, sql), tuple(processors))
        _PREPARED[key] = prepared
    return prepared


def placeholders(dialect: Dialect, sql: str) -> str:
    """``sql`` written with ``?`` placeholders, in the driver's own style (psycopg: ``%s``)."""
    if dialect.paramstyle == "qmark":
        return sql
    if dialect.paramstyle in ("format", "pyformat"):
        return sql.replace("?", "%s")
    raise NotImplementedError(f"parameter style {dialect.paramstyle} is not supported")


def marks(count: int) -> str:
    """``?, ?, …`` for an IN list or a VALUES row of ``count`` values."""
    return ", ".join("?" * count)


def driver_rows(
    dialect: Dialect, table: Table, sql: str, columns: Sequence[str], rows: Sequence[Row]
) -> tuple[str, list[Row]]:
    """``sql`` in the driver's placeholder style and ``rows`` as the driver must get them (the dialect's
    bind processors applied), for a statement sent to a DBAPI cursor directly."""
    prepared = _prepare(dialect, table, sql, columns)
    if prepared.processors:
        done: dict[tuple[int, Any], Any] = {}
        return prepared.sql, [_processed(row, prepared.processors, done) for row in rows]
    return prepared.sql, list(rows)


def execute_many(
    connection: Connection, table: Table, sql: str, columns: Sequence[str], rows: Sequence[Row]
) -> None:
    """Run ``sql`` (``?`` placeholders binding ``columns`` of ``table``, in order) once per row."""
    if not rows:
        return
    text, bound = driver_rows(connection.dialect, table, sql, columns, rows)
    connection.exec_driver_sql(text, bound)


def _processed(
    row: Row, processors: tuple[tuple[int, Callable[[Any], Any]], ...], done: dict[tuple[int, Any], Any]
) -> Row:
    """``row`` with its values bound. ``done`` keeps the datetimes bound already in this statement (a
    write's rows share their instant and a message's resources their dates; SQLite's datetime text
    costs a formatting per value)."""
    values = list(row)
    for position, process in processors:
        value = values[position]
        if value is None:
            continue
        if isinstance(value, datetime):
            key = (position, value)
            bound = done.get(key)
            if bound is None:
                bound = done[key] = process(value)
            values[position] = bound
        else:
            values[position] = process(value)
    return tuple(values)


def insert_rows(connection: Connection, table: Table, columns: Sequence[str], rows: Sequence[Row]) -> None:
    """INSERT ``rows`` (tuples in the order of ``columns``) into ``table``. SQLite runs one prepared
    statement per row in C (``executemany``); psycopg's ``executemany`` spends 15–30 µs of Python per
    row, so PostgreSQL gets the rows through ``COPY … FROM STDIN`` (rows written in C)."""
    if connection.dialect.name != "postgresql" or len(rows) < 2:
        sql = f"INSERT INTO {table.name} ({', '.join(columns)}) VALUES ({marks(len(columns))})"
        execute_many(connection, table, sql, columns, rows)
        return
    sql = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN"
    driver = connection.connection.dbapi_connection
    assert driver is not None, "a connection inside a transaction"
    cursor: Any = driver.cursor()  # psycopg's: it has copy()
    try:
        with cursor.copy(sql) as copy:
            for row in rows:
                copy.write_row(row)
    except connection.dialect.loaded_dbapi.Error as exc:
        # As SQLAlchemy raises it for any other statement (IntegrityError, OperationalError, … with .orig).
        raise DBAPIError.instance(sql, None, exc, connection.dialect.loaded_dbapi.Error) from exc
    finally:
        cursor.close()
