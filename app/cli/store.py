"""``lethe store check``: compare the artifact store with the database (no service needed).

It reports files that no row names (with their age), rows whose file is missing (with the model
versions and datasets that reference them), files whose size or SHA-256 disagrees with their
name and row, and staging files left by killed uploads. ``--repair`` deletes the orphan files
older than ``LETHE_STORE_ORPHAN_GRACE_SECONDS`` (at once those whose bytes a purge destroyed)
and the stale staging files, the same repair every worker's sweeper runs; it changes no row.
Exit 0 when nothing is wrong (after ``--repair``: nothing is left), 1 otherwise.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from app.cli.common import EXIT_FAILED, EXIT_OK, _database, _print_json, _settings

if TYPE_CHECKING:
    from app.cli.common import SubParsers


def cmd_store_check(args: argparse.Namespace) -> int:
    from app.artifacts import service as artifacts
    from app.core.db import make_sessionmaker
    from app.core.storage import open_store

    settings = _settings()
    engine = _database()
    try:
        report = artifacts.check_store(
            make_sessionmaker(engine),
            open_store(settings.resolved_artifact_uri, settings),
            grace_seconds=settings.store_orphan_grace_seconds,
            repair=args.repair,
            verify_digests=not args.quick,
        )
    finally:
        engine.dispose()
    if args.json:
        _print_json({"store": settings.resolved_artifact_uri, **report.to_json()})
    else:
        hashed = "sizes only (--quick)" if args.quick else "sizes and SHA-256 digests"
        print(
            f"{settings.resolved_artifact_uri}: {report.files} files, {report.rows} rows,"
            f" {report.staging_files} staging files; checked {hashed}"
        )
        for finding in report.findings:
            print(finding.line())
        repaired = sum(f.repaired for f in report.findings)
        left = len(report.problems)
        summary = f"{left} problem{'s' if left != 1 else ''}"
        if args.repair:
            summary += f" left, {repaired} repaired"
        elif left and any(f.kind in ("orphan_file", "stale_staging") for f in report.problems):
            summary += " (--repair deletes the orphan and staging files)"
        print(summary)
    return EXIT_FAILED if report.problems else EXIT_OK


def register(sub: SubParsers) -> None:
    store = sub.add_parser(
        "store", help="the artifact store against the database (talks to both directly)"
    )
    ssub = store.add_subparsers(dest="store", required=True)
    p = ssub.add_parser(
        "check",
        help="report files without rows, rows without files and damaged files",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--repair",
        action="store_true",
        help="delete orphan files past the grace period and stale staging files",
    )
    p.add_argument("--quick", action="store_true", help="compare sizes only; hash nothing")
    p.add_argument("--json", action="store_true", help="print JSON for scripts")
    p.set_defaults(func=cmd_store_check)
