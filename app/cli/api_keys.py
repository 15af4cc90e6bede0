"""``lethe api-keys ...``: the tenant's API keys, through the API (admin key)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from app.cli.common import EXIT_OK, _client, _listing, client_args

if TYPE_CHECKING:
    from app.cli.common import SubParsers


def cmd_api_keys_create(args: argparse.Namespace) -> int:
    with _client(args) as client:
        key = client.create_api_key(args.role, args.name)
    print(f"key_id:  {key['id']}\nrole:    {key['role']}\napi_key: {key['key']}")
    print("(shown once; store it now)", file=sys.stderr)
    return EXIT_OK


def cmd_api_keys_revoke(args: argparse.Namespace) -> int:
    with _client(args) as client:
        key = client.revoke_api_key(args.key_id)
    print(f"revoked {key['id']} at {key['revoked_at']}")
    return EXIT_OK


def register(sub: SubParsers) -> None:
    ak = sub.add_parser("api-keys", help="the tenant's API keys, through the API (admin key)")
    aksub = ak.add_subparsers(dest="api_keys", required=True)
    p = aksub.add_parser("list")
    client_args(p, listing=True)
    p.set_defaults(
        func=_listing(
            lambda c, a: c.list_api_keys(), ["id", "role", "name", "created_at", "revoked_at"]
        )
    )
    p = aksub.add_parser("create", help="create a key and print it once")
    p.add_argument("--role", required=True, choices=["admin", "member", "auditor"])
    p.add_argument("--name", default="")
    client_args(p)
    p.set_defaults(func=cmd_api_keys_create)
    p = aksub.add_parser("revoke", help="revoke a key by its ID")
    p.add_argument("key_id")
    client_args(p)
    p.set_defaults(func=cmd_api_keys_revoke)
