"""The schema is built by Alembic only, and the models agree with the migrations, on both
PostgreSQL and SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, text

from app.core.db import make_engine
from app.core.migrate import upgrade
from app.models import Base
from tests.conftest import fresh_database


def _diff(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, Base.metadata))


def test_postgres_upgrade_from_empty_matches_models(db_engine: Engine) -> None:
    # The session database was created empty and upgraded to head by the conftest fixture.
    tables = set(inspect(db_engine).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables
    assert _diff(db_engine) == []


def test_sqlite_upgrade_from_empty_matches_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
        assert _diff(engine) == []
    finally:
        engine.dispose()


def test_upgrade_is_idempotent(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'twice.db'}"
    upgrade(url)
    upgrade(url)
    engine = create_engine(url)
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() is not None
    engine.dispose()


@pytest.mark.parametrize("name", sorted(p.name for p in Path("migrations/versions").glob("*.py")))
def test_revision_files_are_date_prefixed(name: str) -> None:
    assert name[:4].isdigit() and name[4] == "_", name


def _backfill_case(url: str) -> float:
    """Migrate to 0003, finish a job there, then go to head: its run time is backfilled."""
    upgrade(url, "0003")
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO tenants (id, name, settings, created_at)"
                    " VALUES ('t', 't', '{}', :at)"
                ),
                {"at": "2026-11-26 10:00:00"},
            )
            conn.execute(
                text(
                    "INSERT INTO jobs (id, tenant_id, kind, state, method_config, reference_eval,"
                    " seed, cancel_requested, coalesced, outcome, queue, attempts, max_attempts,"
                    " progress, created_at, updated_at, started_at, finished_at) VALUES"
                    " ('j', 't', 'unlearn', 'succeeded', '{}', false, 0, false, false, '{}',"
                    " 'cpu', 1, 3, '{}', :t0, :t0, :t0, :t1)"
                ),
                {"t0": "2026-11-26 10:00:00", "t1": "2026-11-26 10:01:30"},
            )
        upgrade(url)
        with engine.connect() as conn:
            return float(conn.execute(text("SELECT run_seconds FROM jobs")).scalar_one())
    finally:
        engine.dispose()


def test_run_seconds_backfill_on_sqlite(tmp_path: Path) -> None:
    assert _backfill_case(f"sqlite:///{tmp_path / 'old.db'}") == pytest.approx(90, abs=0.01)


def test_run_seconds_backfill_on_postgres() -> None:
    with fresh_database("lethe_backfill", revision="0003") as url:
        assert _backfill_case(url) == pytest.approx(90, abs=0.01)
