"""``lethe requests ...``: forget requests, and the ones past their due date."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from app.cli.common import EXIT_FAILED, EXIT_OK, _client, _listing, client_args

if TYPE_CHECKING:
    from app.cli.common import SubParsers


def cmd_requests_overdue(args: argparse.Namespace) -> int:
    with _client(args) as client:
        late = list(client.overdue_requests())
    for r in late:
        print(f"{r['id']}  due {r['due_at']}  model {r['model_id']}  job {r['job_id']}")
    print(f"{len(late)} overdue request(s)", file=sys.stderr)
    # Scripts and cron jobs test the exit code: 1 while any request is past its due date.
    return EXIT_FAILED if late else EXIT_OK


def cmd_requests_withdraw(args: argparse.Namespace) -> int:
    with _client(args) as client:
        fr = client.withdraw_request(args.request_id, args.reason)
    print(f"{fr['id']}: {fr['status']}")
    return EXIT_OK


def register(sub: SubParsers) -> None:
    reqs = sub.add_parser("requests", help="forget requests").add_subparsers(
        dest="requests", required=True
    )
    p = reqs.add_parser("withdraw", help="take an open request back (audited, with a reason)")
    p.add_argument("request_id")
    p.add_argument("--reason", required=True)
    client_args(p)
    p.set_defaults(func=cmd_requests_withdraw)
    p = reqs.add_parser(
        "overdue", help="open requests past their due date (exit 1 when there is any)"
    )
    client_args(p)
    p.set_defaults(func=cmd_requests_overdue)
    p = reqs.add_parser("list", help="forget requests, newest first")
    p.add_argument("--lineage", help="only this lineage (a model's lineage_id)")
    p.add_argument("--status", choices=["pending", "completed", "failed", "cancelled"])
    client_args(p, listing=True)
    p.set_defaults(
        func=_listing(
            lambda c, a: c.list_requests(lineage_id=a.lineage, status=a.status),
            ["id", "status", "model_id", "job_id", "due_at", "created_at"],
        )
    )
