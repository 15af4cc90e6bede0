"""``lethe audit ...``: verify the tenant's hash-chained audit log and list its events."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from app.cli.common import EXIT_FAILED, EXIT_OK, _client, _listing, client_args

if TYPE_CHECKING:
    from app.cli.common import SubParsers


def cmd_audit_verify(args: argparse.Namespace) -> int:
    with _client(args) as client:
        report = client.verify_audit_log()
    if report["ok"]:
        print(f"OK: {report['checked']} events, chain intact")
        return EXIT_OK
    print(
        f"BROKEN at event seq {report['first_broken_seq']} (id {report['first_broken_id']}):"
        f" {report['reason']}; {report['checked']} events before it are intact",
        file=sys.stderr,
    )
    return EXIT_FAILED


def register(sub: SubParsers) -> None:
    audit = sub.add_parser("audit", help="audit log").add_subparsers(dest="audit", required=True)
    p = audit.add_parser("verify", help="recompute the tenant's hash chain")
    client_args(p)
    p.set_defaults(func=cmd_audit_verify)
    p = audit.add_parser("list", help="the tenant's audit events, oldest first")
    p.add_argument("--action", help="e.g. job.succeeded")
    p.add_argument("--subject", help="a subject ID (model, job, request, key)")
    p.add_argument("--actor", help="a key ID, or worker:...")
    p.add_argument("--since", help="ISO 8601 time")
    client_args(p, listing=True)
    p.set_defaults(
        func=_listing(
            lambda c, a: c.audit_events(
                action=a.action, subject_id=a.subject, actor=a.actor, since=a.since
            ),
            ["seq", "at", "actor", "action", "subject_type", "subject_id"],
        )
    )
