"""Patient-context access for the FHIR routes: a token whose only grant for a type is a ``patient/…``
scope reaches the compartment of its ``patient`` claim — the golden record and every source Patient
linked to it — and nothing else. The role ceilings and the SMART scopes themselves are ``hub.auth``'s."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from hub.auth import Access, Principal
from hub.errors import Forbidden
from hub.fhir_api.search import Row
from hub.store.models import Resource
from hub.store.search_params import params_of

_TTL_S = 30.0
_cache: dict[str, tuple[float, frozenset[str]]] = {}


def compartment(session: Session, patient: str) -> frozenset[str]:
    """Every Patient id of the person ``patient`` names (cached briefly: links change rarely)."""
    now = time.monotonic()
    hit = _cache.get(patient)
    if hit is not None and now - hit[0] < _TTL_S:
        return hit[1]
    from hub.mpi.service import linked_patient_ids

    ids = frozenset(linked_patient_ids(session, patient))
    if len(_cache) > 10000:
        _cache.clear()
    _cache[patient] = (now, ids)
    return ids


def _outside(principal: Principal) -> Forbidden:
    return Forbidden(f"{principal.subject} may reach only its patient's records")


def check_patient(session: Session, principal: Principal, access: Access, patient_id: str) -> None:
    if access == "patient" and patient_id not in compartment(session, principal.patient or ""):
        raise _outside(principal)


def check_resource(session: Any, principal: Principal, access: Access, resource_type: str, rid: str) -> None:
    """A read by id under patient access: the resource must be one of the patient's."""
    if access != "patient":
        return
    ids = compartment(
        session if isinstance(session, Session) else Session(bind=session), principal.patient or ""
    )
    if resource_type == "Patient":
        if rid not in ids:
            raise _outside(principal)
        return
    owner = session.execute(
        select(Resource.patient_id).where(Resource.resource_type == resource_type, Resource.id == rid)
    ).scalar()
    if owner is not None and owner not in ids:  # resources of no patient (a Practitioner) are shared
        raise _outside(principal)


def restrict_search(
    session: Session, principal: Principal, access: Access, resource_type: str, params: list[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The search's parameters with the patient's compartment added under patient access."""
    if access != "patient":
        return params
    ids = compartment(session, principal.patient or "")
    if resource_type == "Patient":
        return [*params, ("_id", ",".join(sorted(ids)))]
    spec = params_of(resource_type).get("patient")
    if spec is None or spec.type != "reference":
        raise Forbidden(f"{resource_type} is not in a patient's compartment: patient access cannot search it")
    return [*params, ("patient", ",".join(f"Patient/{i}" for i in sorted(ids)))]


def filter_rows(session: Session, principal: Principal, rows: list[Row]) -> list[Row]:
    """Included rows under patient access: only the patient's own (and resources of no patient)."""
    if not rows:
        return rows
    ids = compartment(session, principal.patient or "")
    others = [r for r in rows if r.resource_type != "Patient"]
    owners: dict[int, str | None] = {}
    if others:
        owners = dict(
            session.execute(
                select(Resource.pk, Resource.patient_id).where(Resource.pk.in_([r.pk for r in others]))
            ).all()
        )
    kept = []
    for r in rows:
        owner = r.id if r.resource_type == "Patient" else owners.get(r.pk)
        if owner is None or owner in ids:
            kept.append(r)
    return kept
