"""``lethe receipts ...``: signed erasure receipts (check one with ``lethe verify``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from app.cli.common import EXIT_OK, _client, _listing, client_args

if TYPE_CHECKING:
    from app.cli.common import SubParsers


def cmd_receipts_download(args: argparse.Namespace) -> int:
    with _client(args) as client:
        envelope = client.erasure_receipt(args.receipt_id)
    Path(args.out).write_text(json.dumps(envelope, indent=2))
    print(f"receipt written to {args.out}; check it with: lethe verify {args.out} --key KEYS")
    return EXIT_OK


def register(sub: SubParsers) -> None:
    receipts = sub.add_parser("receipts", help="erasure receipts").add_subparsers(
        dest="receipts", required=True
    )
    p = receipts.add_parser("list", help="the tenant's erasure receipts, newest first")
    p.add_argument("--lineage")
    p.add_argument("--dataset")
    client_args(p, listing=True)
    p.set_defaults(
        func=_listing(
            lambda c, a: c.erasure_receipts(lineage_id=a.lineage, dataset_id=a.dataset),
            ["id", "created_at", "lineage_id", "dataset_id", "job_id"],
        )
    )
    p = receipts.add_parser("download", help="save a receipt (DSSE envelope JSON)")
    p.add_argument("receipt_id")
    p.add_argument("--out", required=True)
    client_args(p)
    p.set_defaults(func=cmd_receipts_download)
