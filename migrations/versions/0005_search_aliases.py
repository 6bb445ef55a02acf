"""search index: no rows for parameters whose values other parameters hold

``hub.store.search_params.stored_as``: ``patient`` is read from ``subject`` rows with a Patient target,
``phonetic`` from ``name`` …, so their own rows (and their ``:identifier`` token rows) are no longer
written; this deletes the ones
written before. The downgrade writes them back from the rows they are read from. The list is frozen
here (a test checks it against ``search_params.ALIASES``).

Revision ID: 0005_search_aliases
Revises: 0004_search_perf
Create Date: 2026-11-29 15:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_search_aliases"
down_revision: str | Sequence[str] | None = "0004_search_perf"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (kind, resource type, parameter, the parameter holding its rows, target types it keeps (empty: all))
ALIASES: tuple[tuple[str, str, str, str, tuple[str, ...]], ...] = (
    ("string", "Patient", "phonetic", "name", ()),
    ("reference", "Encounter", "patient", "subject", ("Patient",)),
    ("reference", "Encounter", "practitioner", "participant", ("Practitioner",)),
    ("reference", "Observation", "patient", "subject", ("Patient",)),
    ("reference", "Condition", "patient", "subject", ("Patient",)),
    ("reference", "MedicationRequest", "patient", "subject", ("Patient",)),
    ("reference", "MedicationDispense", "patient", "subject", ("Patient",)),
    ("reference", "DiagnosticReport", "patient", "subject", ("Patient",)),
    ("reference", "Procedure", "patient", "subject", ("Patient",)),
    ("reference", "DocumentReference", "patient", "subject", ("Patient",)),
    ("reference", "ServiceRequest", "patient", "subject", ("Patient",)),
    ("reference", "Specimen", "patient", "subject", ("Patient",)),
    ("reference", "Appointment", "patient", "actor", ("Patient",)),
    ("reference", "Appointment", "practitioner", "actor", ("Practitioner",)),
    ("reference", "Appointment", "location", "actor", ("Location",)),
    ("reference", "Coverage", "patient", "beneficiary", ()),
    ("string", "RelatedPerson", "phonetic", "name", ()),
    ("string", "Practitioner", "phonetic", "name", ()),
    ("reference", "RiskAssessment", "patient", "subject", ("Patient",)),
    ("reference", "Provenance", "patient", "target", ("Patient",)),
)
# The value columns of each table, and the token rows a modifier search reads beside the rows themselves.
COLUMNS = {
    "token": ("search_token", ("system", "code", "text")),
    "string": ("search_string", ("value", "exact")),
    "reference": ("search_reference", ("target_type", "target_id")),
}
MODIFIER = {"token": ":of-type", "reference": ":identifier"}


def _row_sets() -> list[tuple[str, str, str, str, tuple[str, ...]]]:
    """(table, resource type, alias param, source param, target types) for every row set of an alias."""
    out = []
    for kind, rtype, name, source, targets in ALIASES:
        out.append((COLUMNS[kind][0], rtype, name, source, targets))
        if kind in MODIFIER:  # identifier token rows carry no target type
            suffix = MODIFIER[kind]
            out.append(("search_token", rtype, name + suffix, source + suffix, ()))
    return out


def upgrade() -> None:
    for table, rtype, name, _source, _targets in _row_sets():
        op.execute(
            sa.text(f"DELETE FROM {table} WHERE resource_type = :rtype AND param = :name").bindparams(
                rtype=rtype, name=name
            )
        )


def downgrade() -> None:
    tables = {table: columns for table, columns in COLUMNS.values()}
    for table, rtype, name, source, targets in _row_sets():
        columns = ", ".join(tables[table])
        where = "resource_type = :rtype AND param = :source"
        if targets:
            where += " AND target_type IN :targets"
        statement = sa.text(
            f"INSERT INTO {table} (resource_type, resource_id, param, {columns})"
            f" SELECT DISTINCT resource_type, resource_id, :name, {columns} FROM {table} WHERE {where}"
        ).bindparams(rtype=rtype, name=name, source=source)
        if targets:
            statement = statement.bindparams(sa.bindparam("targets", expanding=True), targets=list(targets))
        op.execute(statement)
