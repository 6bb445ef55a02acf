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
    first_version = stored is not None and str((stored.get("meta") or {}).get("versionId")) == "1"
    if not first_version:
        for model in INDEX_MODELS.values():
            session.execute(
                delete(model).where(model.resource_type == resource_type, model.resource_id == rid)
            )
    if stored is None:
        return
    extracted = extract(stored)
    for kind, model in INDEX_MODELS.items():
        rows = getattr(extracted, kind)
        if rows:
            for row in rows:
                row["resource_type"] = resource_type
                row["resource_id"] = rid
            session.execute(insert(model), rows)


def install() -> None:
    """Register the indexer with the resource store (idempotent)."""
    register_write_hook(index_resource)


install()
