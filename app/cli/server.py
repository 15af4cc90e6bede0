"""``lethe api``, ``lethe worker`` and ``lethe db upgrade``: run the service and its schema."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from typing import TYPE_CHECKING, Any

from app.cli.common import EXIT_OK, EXIT_USAGE, _settings

if TYPE_CHECKING:
    from app.cli.common import SubParsers


def cmd_api(args: argparse.Namespace) -> int:
    import shutil

    import uvicorn

    from app.core.config import get_settings
    from app.core.observability import logging_config

    settings = get_settings()
    workers = args.workers or settings.api_workers
    # Migrate (embedded) or refuse an unmigrated schema (production) here, before uvicorn: a
    # refusal is then one line, and N processes do not race to migrate or publish the key.
    from app.main import prepare_database

    prepare_database(settings)
    common: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        # Our middleware writes the access lines; uvicorn's loggers go through the JSON handler.
        "log_config": logging_config(args.log_level),
        "access_log": False,
        "log_level": args.log_level,
    }
    if workers == 1:
        from app.main import create_app

        uvicorn.run(create_app(), **common)
        return EXIT_OK
    # Several processes: their lifespans only check the schema (migrated above), and they share
    # a folder for their metrics (unless the operator gave one).
    os.environ["LETHE_AUTO_MIGRATE"] = "false"
    own_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        own_dir = tempfile.mkdtemp(prefix="lethe-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_dir
    try:
        uvicorn.run("app.main:create_app", factory=True, workers=workers, **common)
    finally:
        if own_dir:
            shutil.rmtree(own_dir, ignore_errors=True)
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    # The worker is its own program: exec Celery rather than importing it into the API package.
    # Its start-up checks the schema too (worker.celery_app); checking here first makes a bad
    # setting or an unmigrated database one line before Celery and torch load.
    from app.core.migrate import ensure_schema
    from app.core.tasks import worker_command

    if args.queue == "gpu" and args.concurrency != 1:
        # One job per GPU: a second training on the same device would halve both and can run
        # it out of memory. Run one worker process per GPU instead (see --gpu).
        print(
            "error: a gpu worker runs one job at a time (--concurrency 1); start one worker"
            " per GPU with --gpu N",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.gpu is not None:
        if args.queue != "gpu":
            print("error: --gpu needs --queue gpu", file=sys.stderr)
            return EXIT_USAGE
        # Before Celery (and torch) start: this process and its children see only that device.
        os.environ["CUDA_VISIBLE_DEVICES"] = args.gpu

    ensure_schema(_settings())

    argv = worker_command(
        args.queue, pool=args.pool, concurrency=args.concurrency, loglevel=args.log_level
    )
    os.execv(sys.executable, argv)  # noqa: S606 - fixed argv, no shell
    return EXIT_OK  # pragma: no cover


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from alembic.util.exc import CommandError

    from app.core.db import make_engine
    from app.core.migrate import SchemaNotCurrent, current_revisions, upgrade

    settings = _settings()
    url = settings.resolved_database_url
    engine = make_engine(url)
    try:
        current_revisions(engine)  # an unreachable database is one line (exit 3), not a trace
        try:
            upgrade(url, args.revision)
        except CommandError as exc:  # an unknown revision, or a schema newer than this code
            raise SchemaNotCurrent(f"cannot upgrade the database: {exc}") from None
        now = ", ".join(sorted(current_revisions(engine))) or "base"
    finally:
        engine.dispose()
    print(f"database at {now}" + (f" ({args.revision})" if args.revision != now else ""))
    return EXIT_OK


def register(sub: SubParsers) -> None:
    p = sub.add_parser("api", help="run the HTTP API")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--workers", type=int, default=None, help="API processes (default: $LETHE_API_WORKERS, 1)"
    )
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=cmd_api)

    p = sub.add_parser("worker", help="run a Celery worker (needs the [worker] extra)")
    p.add_argument("--queue", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--pool", choices=["solo", "prefork", "threads"], default="solo")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument(
        "--gpu",
        metavar="N",
        help="the GPU this worker uses (sets CUDA_VISIBLE_DEVICES; one worker per GPU)",
    )
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=cmd_worker)

    db = sub.add_parser("db", help="database schema").add_subparsers(dest="db", required=True)
    p = db.add_parser("upgrade", help="apply Alembic migrations")
    p.add_argument("revision", nargs="?", default="head")
    p.set_defaults(func=cmd_db_upgrade)
