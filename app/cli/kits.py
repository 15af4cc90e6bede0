"""``lethe kits ...``: reference kits for the per-example membership audit."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from app.cli.common import EXIT_FAILED, EXIT_OK, _client, _listing, client_args

if TYPE_CHECKING:
    from app.cli.common import SubParsers


def cmd_kits_build(args: argparse.Namespace) -> int:
    with _client(args) as client:
        kit = client.request_reference_kit(args.model_id, k=args.k, seed=args.seed)
        print(f"kit_id: {kit['id']}  status: {kit['status']}  job_id: {kit['job_id']}")
        if not args.wait or kit["status"] != "building":
            return EXIT_OK if kit["status"] != "failed" else EXIT_FAILED
        client.wait_for_job(kit["job_id"], timeout=args.timeout)
        kit = client.reference_kit(kit["id"])
    print(f"status: {kit['status']}")
    return EXIT_OK if kit["status"] == "ready" else EXIT_FAILED


def register(sub: SubParsers) -> None:
    kits = sub.add_parser("kits", help="reference kits (per-example membership audit)")
    ksub = kits.add_subparsers(dest="kits", required=True)
    p = ksub.add_parser(
        "build", help="build the kit for a model's manifest and recipe (about k/2 trainings)"
    )
    p.add_argument("model_id")
    p.add_argument("--k", type=int, default=16, help="shadow models (2-64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--wait", action="store_true", help="follow the job (exit 1 unless ready)")
    p.add_argument("--timeout", type=float, default=24 * 3600)
    client_args(p)
    p.set_defaults(func=cmd_kits_build)
    p = ksub.add_parser("list", help="the tenant's kits, newest first")
    p.add_argument("--dataset")
    client_args(p, listing=True)
    p.set_defaults(
        func=_listing(
            lambda c, a: c.reference_kits(dataset_id=a.dataset),
            ["id", "status", "k", "dataset_id", "model_id", "created_at"],
        )
    )
