"""Database engine and the one place that commits.

The API's session dependency opens a session per request and commits once, after the endpoint
returned; services only ``flush``. Worker code uses :func:`session_scope` the same way.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

_log = logging.getLogger(__name__)


def make_engine(url: str, **kwargs: Any) -> Engine:
    if url.startswith("sqlite"):
        from pathlib import Path

        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # The API serves requests from a thread pool; SQLite's default forbids that.
        engine = create_engine(url, connect_args={"check_same_thread": False}, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            # Foreign keys are off by default in SQLite; WAL lets the worker read while the API
            # writes; busy_timeout turns "database is locked" into a short wait.
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, **kwargs)


def lock_for_write(session: Session) -> None:
    """Make a following ``SELECT … FOR UPDATE`` serialise writers on SQLite as it does on
    PostgreSQL (a no-op there).

    SQLite ignores ``FOR UPDATE``, and its Python driver runs a ``SELECT`` outside any
    transaction, so two requests could both read the audit chain's last ``seq`` and both append
    the next one (a unique-key 500 seen under concurrent load in embedded mode). A write that
    changes nothing still takes the database's write lock (waiting up to ``busy_timeout`` for
    another writer), so the read that follows sees the newest rows and nobody else can write
    until this transaction ends. ``alembic_version`` exists in every migrated database.
    """
    if session.get_bind().dialect.name == "sqlite":
        session.execute(text("UPDATE alembic_version SET version_num = version_num WHERE 1 = 0"))


# What "the database cannot serve us right now" looks like, as opposed to "this statement or its
# data is wrong" (IntegrityError, DataError, ProgrammingError): the connection was refused or
# lost, the server is shutting down or out of connections, or the pool had none to give in time.
# SQLAlchemy wraps the driver's errors; psycopg's own appear where code uses a raw connection.
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)


def database_unavailable(exc: BaseException) -> bool:
    """Whether *exc* means the database is unreachable or cannot serve right now (a retry later
    may succeed), rather than that the request or the code was wrong.

    >>> database_unavailable(sa_exc.TimeoutError("QueuePool limit reached"))
    True
    >>> database_unavailable(sa_exc.IntegrityError("INSERT ...", {}, Exception("duplicate")))
    False
    """
    if isinstance(exc, UNAVAILABLE_ERRORS):
        return True
    # SQLAlchemy recognised a disconnect (and invalidated the pool) under another DBAPI class.
    return isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated


def unavailable_reason(exc: BaseException) -> str:
    """One line saying why: the driver's first line, without SQLAlchemy's statement and link."""
    orig = exc.orig if isinstance(exc, sa_exc.DBAPIError) else None
    text = str(orig if orig is not None else exc).strip()
    first = text.splitlines()[0].strip() if text else ""
    return f"{type(orig or exc).__name__}: {first}" if first else type(orig or exc).__name__


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


_autocommit: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()


def read_session(factory: sessionmaker[Session]) -> Session:
    """A session for a hot read that needs no snapshot across statements (a status poll).

    On an engine its connection runs in autocommit, which saves the BEGIN and ROLLBACK round
    trips a transaction would cost; bound to a connection (tests, which roll back) it is a plain
    session. Never write through it: nothing would be committed as a unit.
    """
    bind = factory.kw.get("bind")
    if not isinstance(bind, Engine):
        return factory()
    engine = _autocommit.get(bind)
    if engine is None:
        engine = _autocommit[bind] = bind.execution_options(isolation_level="AUTOCOMMIT")
    return factory(bind=engine)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """Commit on success, roll back on any error: the worker's unit of work."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        try:
            session.rollback()
        except Exception as exc:
            # The connection died under the transaction, and the server rolled it back with it.
            # Keep the error that ended the unit of work (a 404, a 409) rather than this one,
            # and still run the rollback hooks: their files belong to no committed row.
            if not database_unavailable(exc):
                raise
        run_hooks(session, "on_rollback")
        raise
    else:
        run_hooks(session, "after_commit")
    finally:
        session.close()


# Deferred side effects of a unit of work. Services register them; the session owner runs them:
# tasks are sent only after the commit, and files written for a rolled-back transaction are
# removed, so neither a phantom job nor an orphan artifact can appear.
def after_commit(session: Session, fn: Callable[[], None]) -> None:
    session.info.setdefault("after_commit", []).append(fn)


def on_rollback(session: Session, fn: Callable[[], None]) -> None:
    session.info.setdefault("on_rollback", []).append(fn)


def run_hooks(session: Session, kind: str) -> None:
    hooks: list[Callable[[], None]] = session.info.pop(kind, [])
    session.info.pop("on_rollback" if kind == "after_commit" else "after_commit", None)
    for fn in hooks:
        try:
            fn()
        except Exception:
            # A failed hook must not undo a committed transaction; the sweeper retries sends.
            _log.exception("%s hook failed", kind)
