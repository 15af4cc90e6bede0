"""``lethe jobs ...``: follow, cancel and show jobs."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from app.cli.common import EXIT_OK, _client, _listing, _show, _watch, client_args

if TYPE_CHECKING:
    from app.cli.common import SubParsers


def cmd_jobs_watch(args: argparse.Namespace) -> int:
    with _client(args) as client:
        return _watch(client, args.job_id)


def cmd_jobs_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.cancel_job(args.job_id)
    print(f"{job['state']}{' (stop requested)' if job['cancel_requested'] else ''}")
    return EXIT_OK


def register(sub: SubParsers) -> None:
    jobs = sub.add_parser("jobs", help="jobs").add_subparsers(dest="jobs", required=True)
    p = jobs.add_parser(
        "watch", help="follow a job until it ends (exit 1 unless it succeeded and passed the gate)"
    )
    p.add_argument("job_id")
    client_args(p)
    p.set_defaults(func=cmd_jobs_watch)
    p = jobs.add_parser("cancel", help="cancel a queued or running job")
    p.add_argument("job_id")
    client_args(p)
    p.set_defaults(func=cmd_jobs_cancel)
    p = jobs.add_parser("show", help="a job's state, progress and history (JSON)")
    p.add_argument("job_id")
    client_args(p)
    p.set_defaults(func=_show(lambda c, a: c.get_job(a.job_id)))
    p = jobs.add_parser("list", help="jobs, newest first")
    p.add_argument("--state", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    p.add_argument("--kind", choices=["validate_model", "unlearn", "purge"])
    p.add_argument("--lineage")
    p.add_argument("--model", help="jobs that started from or made this version")
    client_args(p, listing=True)
    p.set_defaults(
        func=_listing(
            lambda c, a: c.list_jobs(
                state=a.state, kind=a.kind, lineage_id=a.lineage, model_id=a.model
            ),
            ["id", "kind", "state", "method", "attempts", "created_at", "result_model_id"],
        )
    )
