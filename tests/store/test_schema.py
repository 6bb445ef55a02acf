import importlib.util
from types import ModuleType

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, Engine, create_engine, text

from hub.store.models import Base
from hub.store.schema import ROOT, downgrade, upgrade
from hub.store.search_params import ALIASES, params_of


def test_migrations_match_models(engine: Engine) -> None:
    """The Alembic migrations build exactly the schema the ORM models describe."""
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def _alias_migration() -> ModuleType:
    path = ROOT / "migrations" / "versions" / "0005_search_aliases.py"
    spec = importlib.util.spec_from_file_location("migration_0005", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_alias_migration_lists_the_aliases_the_extraction_skips() -> None:
    frozen = {
        (rtype, name): (kind, sources, targets)
        for kind, rtype, name, sources, targets in _alias_migration().ALIASES
    }
    current = {
        (rtype, name): (params_of(rtype)[name].type, stored.param, stored.target_types)
        for rtype, aliases in ALIASES.items()
        for name, stored in aliases.items()
    }
    # Since 0008: Coverage's patient is beneficiary, subscriber or policy-holder (rows of its own, which
    # 0008 writes), and the types 0008 registers alias their patient to subject (they had no rows).
    del frozen[("Coverage", "patient")]
    for rtype in ("Account", "CareTeam", "ChargeItem", "MedicationAdministration"):
        frozen[(rtype, "patient")] = ("reference", "subject", ("Patient",))
    assert frozen == current


_OLD_ROWS = [  # as the extraction before 0005 wrote them for an Observation on a Patient and one on a Device
    ("search_reference", "o1", "subject", ("Patient", "p1")),
    ("search_reference", "o1", "patient", ("Patient", "p1")),
    ("search_reference", "o2", "subject", ("Device", "d1")),
    ("search_token", "o1", "code", ("http://loinc.org", "8480-6", "systolic")),
    ("search_token", "o1", "combo-code", ("http://loinc.org", "8480-6", "systolic")),
    ("search_token", "o1", "subject:identifier", ("urn:mrn", "RSA-1", "")),
    ("search_token", "o1", "patient:identifier", ("urn:mrn", "RSA-1", "")),
]
_VALUES = {"search_reference": "target_type, target_id", "search_token": "system, code, text"}


def _rows(conn: Connection) -> set[tuple[str, ...]]:
    out: set[tuple[str, ...]] = set()
    for table, columns in _VALUES.items():
        sql = f"SELECT resource_id, param, {columns} FROM {table} WHERE resource_type = 'Observation'"
        out |= {(table, rid, param, tuple(values)) for rid, param, *values in conn.execute(text(sql))}
    return out


def test_alias_migration_deletes_the_rows_and_its_downgrade_writes_them_back(fresh_database_url: str) -> None:
    upgrade(fresh_database_url, "0004_search_perf")
    engine = create_engine(fresh_database_url)
    try:
        with engine.begin() as conn:
            for table, rid, param, values in _OLD_ROWS:
                marks = ", ".join(f":v{i}" for i in range(len(values)))
                conn.execute(
                    text(
                        f"INSERT INTO {table} (resource_type, resource_id, param, {_VALUES[table]})"
                        f" VALUES ('Observation', :rid, :param, {marks})"
                    ),
                    {"rid": rid, "param": param, **{f"v{i}": v for i, v in enumerate(values)}},
                )
        upgrade(fresh_database_url, "0006_resource_patient_index")  # the rows keyed by resource_id still
        with engine.connect() as conn:
            kept = _rows(conn)
        # combo-code is code plus component-code: it keeps rows of its own (search_params._aliases).
        assert kept == {row for row in _OLD_ROWS if row[2] not in ("patient", "patient:identifier")}
        downgrade(fresh_database_url, "0004_search_perf")
        with engine.connect() as conn:
            assert _rows(conn) == set(_OLD_ROWS)
    finally:
        engine.dispose()
