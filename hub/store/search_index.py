"""Writing the search-index rows of a resource in the same transaction as the resource itself.

``index_resource`` is registered as a write hook of ``hub.store.resources``: after every upsert the rows
of the resource are replaced by the values ``search_params.extract`` finds; after a delete they are
removed, so a deleted resource is never found by search. A first version (``meta.versionId`` 1) has no
old rows to remove, which keeps bulk loads at one INSERT per table.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert
from sqlalchemy.orm import Session

from hub.store.models import (
    SearchDate,
    SearchNumber,
    SearchQuantity,
    SearchReference,
    SearchString,
    SearchToken,
    SearchUri,
)
from hub.store.resources import register_write_hook
from hub.store.search_params import extract

INDEX_MODELS: dict[str, type[Any]] = {
    "token": SearchToken,
    "string": SearchString,
    "date": SearchDate,
    "reference": SearchReference,
    "quantity": SearchQuantity,
    "number": SearchNumber,
    "uri": SearchUri,
}


def index_resource(session: Session, resource_type: str, rid: str, stored: dict[str, Any] | None) -> None:
    index_resources(session, [(resource_type, rid, stored)])


def index_resources(session: Session, items: list[tuple[str, str, dict[str, Any] | None]]) -> None:
    """Replace the index rows of many resources: one DELETE per table and type for those that had rows,
    one INSERT per table for all new rows (Core statements: the ORM's bulk path costs more than the SQL)."""
    stale: dict[str, list[str]] = {}
    rows: dict[str, list[dict[str, Any]]] = {kind: [] for kind in INDEX_MODELS}
    for resource_type, rid, stored in items:
        if stored is None or str((stored.get("meta") or {}).get("versionId")) != "1":
            stale.setdefault(resource_type, []).append(rid)
        if stored is None:
            continue
        extracted = extract(stored)
        for kind in INDEX_MODELS:
            found = getattr(extracted, kind)
            for row in found:
                row["resource_type"] = resource_type
                row["resource_id"] = rid
            rows[kind].extend(found)
    for resource_type, rids in stale.items():
        for model in INDEX_MODELS.values():
            table = model.__table__
            session.execute(
                delete(table).where(table.c.resource_type == resource_type, table.c.resource_id.in_(rids))
            )
    for kind, model in INDEX_MODELS.items():
        if rows[kind]:
            session.execute(insert(model.__table__), rows[kind])


def install() -> None:
    """Register the indexer with the resource store (idempotent)."""
    register_write_hook(index_resource, batch=index_resources)


install()
