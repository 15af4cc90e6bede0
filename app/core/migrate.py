"""Run Alembic migrations from code, and the one rule every process follows before it uses the
database (:func:`ensure_schema`): the CLI's database commands, the API's start-up and
``/readyz``, and the worker's start-up.

- Embedded mode (or ``LETHE_AUTO_MIGRATE=true``): bring the schema to Alembic's head. At head
  this is one query, so every command can afford it.
- Production mode: never migrate behind the operator's back. A schema that is not at head is
  refused with one line that names ``lethe db upgrade``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import command
from alembic.config import Config

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory
    from sqlalchemy import Engine

    from app.core.config import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
UPGRADE_HINT = "run `lethe db upgrade`"


class SchemaError(RuntimeError):
    """The database cannot be used as it is. The message is one line for a person."""


class SchemaNotCurrent(SchemaError):
    """The schema is not at head (an empty database, or one an older release migrated)."""


class DatabaseUnreachable(SchemaError):
    """The database did not answer at all."""


def alembic_config(url: str) -> Config:
    cfg = Config(str(REPO_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    cfg.attributes["url"] = url
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


@functools.cache
def _scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(""))


def head_revisions() -> frozenset[str]:
    """The revisions this code's migrations end at (read once per process)."""
    return frozenset(_scripts().get_heads())


def current_revisions(engine: Engine) -> frozenset[str]:
    """The revisions the database's ``alembic_version`` holds (none for an empty database)."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy.exc import OperationalError

    try:
        with engine.connect() as conn:
            return frozenset(MigrationContext.configure(conn).get_current_heads())
    except OperationalError as exc:
        # Connecting failed (refused, unknown database, unreadable file), not a query.
        reason = " ".join(str(exc.orig or exc).split()) or type(exc).__name__
        where = engine.url.render_as_string(hide_password=True)
        raise DatabaseUnreachable(f"cannot reach the database {where}: {reason}") from None


def schema_problem(engine: Engine) -> str | None:
    """None when the schema is at head; otherwise what is wrong, in one line."""
    current, head = current_revisions(engine), head_revisions()
    if current == head:
        return None
    if not current:
        return f"the database is empty (no Lethe schema yet): {UPGRADE_HINT} first"
    unknown = sorted(rev for rev in current if not _known(rev))
    if unknown:
        return (
            f"the database schema is at revision {', '.join(unknown)}, which this version of"
            f" Lethe does not know (a newer release migrated it); upgrade Lethe"
        )
    return (
        f"the database schema is at revision {', '.join(sorted(current))}, not"
        f" {', '.join(sorted(head))} (head): {UPGRADE_HINT} first"
    )


def _known(revision: str) -> bool:
    from alembic.util.exc import CommandError

    try:
        return _scripts().get_revision(revision) is not None
    except CommandError:
        return False


def ensure_schema(settings: Settings, engine: Engine | None = None) -> None:
    """Make sure the database's schema is at head before it is used, or refuse.

    With ``settings.should_auto_migrate`` (the embedded default) a database behind head is
    migrated; without it (the production default) :class:`SchemaNotCurrent` is raised, and
    :class:`DatabaseUnreachable` when the database does not answer. ``engine`` is used for the
    check when given (the caller's pool); migrations always run on their own connection.
    """
    from app.core.db import make_engine

    url = settings.resolved_database_url
    own = engine is None
    engine = engine or make_engine(url)
    try:
        problem = schema_problem(engine)
        if problem is None:
            return
        if not settings.should_auto_migrate:
            raise SchemaNotCurrent(problem)
        with _migration_lock(url):
            if schema_problem(engine) is None:  # another process migrated while we waited
                return
            _upgrade_or_explain(url)
    finally:
        if own:
            engine.dispose()


def _upgrade_or_explain(url: str) -> None:
    from alembic.util.exc import CommandError

    try:
        upgrade(url)
    except CommandError as exc:  # e.g. the database was migrated by a newer release
        raise SchemaNotCurrent(f"cannot migrate the database: {exc}") from None


@contextmanager
def _migration_lock(url: str) -> Iterator[None]:
    """Embedded mode: one migrating process per SQLite file (an API and a worker started at the
    same moment on a fresh data folder would otherwise both create the tables)."""
    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else ""
    if not path or path == ":memory:":
        yield
        return
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    lock = Path(path + ".migrate-lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
