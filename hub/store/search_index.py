"""Writing the search-index rows of a resource in the same transaction as the resource itself.

``index_resources`` is registered as a write hook of ``hub.store.resources``. A new resource gets its
rows inserted; a deleted one loses its rows in every table. An update compares, table by table, the rows
``search_params.extract`` finds in the version it replaces with those of the new version, and rewrites
only the tables where they differ (an A08 that changes a name leaves the token, date and reference rows
alone). Rows go through the driver (``bulk``): one INSERT per table for all new rows of a write, one
DELETE per table for the rewritten ones; inside a pipeline batch (``hub.store.deferred``) the new rows
of all its messages wait for one INSERT per table at the batch's end. Rows belong to their resource by
``resource.pk`` (``resource_pk``) and carry its id too (see the index section of ``models``).

Skipping unchanged tables trusts that the stored rows are what today's ``extract`` makes of the old
version; after a change to the extraction itself, rewrite the index of the affected types.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.orm import Session

from hub.store import bulk, deferred
from hub.store.models import (
    SearchDate,
    SearchNumber,
    SearchQuantity,
    SearchReference,
    SearchString,
    SearchToken,
    SearchUri,
)
from hub.store.resources import Change, register_write_hook
from hub.store.search_params import KINDS, extract_rows

INDEX_MODELS: dict[str, type[Any]] = {
    "token": SearchToken,
    "string": SearchString,
    "date": SearchDate,
    "reference": SearchReference,
    "quantity": SearchQuantity,
    "number": SearchNumber,
    "uri": SearchUri,
}
assert tuple(INDEX_MODELS) == tuple(KINDS), "one index table per kind of extracted row"

_KEY = ("resource_type", "resource_id", "resource_pk")


def index_resources(session: Session, changes: list[Change]) -> None:
    """Bring the index rows of the changed resources in step with their new versions."""
    held = deferred.held(session)
    stale: dict[str, list[int]] = {kind: [] for kind in KINDS}  # kind → pks
    fresh: dict[str, list[bulk.Row]] = {kind: [] for kind in KINDS}
    net = _net(changes)
    if held is not None and any(old is not None and pk in held.pks for pk, old, _ in net.values()):
        held.flush(session)  # a rewrite of rows still held: they go in first, for its DELETE to find
    for (rtype, rid), (pk, old, new) in net.items():
        after = extract_rows(new) if new is not None else None
        owner = (rtype, rid, pk)
        if old is None:  # nothing indexed: a new resource, or one deleted before
            if after is not None:
                for kind, rows in after.items():
                    fresh[kind].extend((*owner, *row) for row in rows)
            continue
        if after is None:  # deleted: every table, whatever the extraction made of it then
            for kind in KINDS:
                stale[kind].append(pk)
            continue
        before = extract_rows(old)
        for kind, rows in after.items():
            if rows != before[kind]:
                stale[kind].append(pk)
                fresh[kind].extend((*owner, *row) for row in rows)
    connection = session.connection()
    for kind, model in INDEX_MODELS.items():
        table: Table = model.__table__
        if stale[kind]:
            _delete_rows(connection, table, stale[kind])
        if held is not None:
            held.hold(table, (*_KEY, *KINDS[kind]), fresh[kind], pk_at=2)
        elif fresh[kind]:
            bulk.insert_rows(connection, table, (*_KEY, *KINDS[kind]), fresh[kind])


_Net = tuple[int, dict[str, Any] | None, dict[str, Any] | None]


def _net(changes: list[Change]) -> dict[tuple[str, str], _Net]:
    """Per resource, its pk, the version it had before these changes and the one it has after them (a
    resource written twice in one call is indexed once, from its last version)."""
    net: dict[tuple[str, str], _Net] = {}
    for rtype, rid, pk, new, old in changes:
        first = net.get((rtype, rid))
        net[(rtype, rid)] = (pk, old if first is None else first[1], new)
    return net


def _delete_rows(connection: Connection, table: Table, pks: list[int]) -> None:
    sql = f"DELETE FROM {table.name} WHERE resource_pk IN ({bulk.marks(len(pks))})"
    connection.exec_driver_sql(bulk.placeholders(connection.dialect, sql), tuple(pks))


def install() -> None:
    """Register the indexer with the resource store (idempotent)."""
    register_write_hook(index_resources)


install()
