from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine

from hub.store.models import Base


def test_migrations_match_models(engine: Engine) -> None:
    """The Alembic migrations build exactly the schema the ORM models describe."""
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []
