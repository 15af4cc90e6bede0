"""``lethe keys generate``: create an Ed25519 signing key file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from app.cli.common import EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:
    from app.cli.common import SubParsers


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from app.certificates.signing import generate_key_file, public_pem

    try:
        signer = generate_key_file(Path(args.path))
    except FileExistsError:
        print(f"error: {args.path} exists; refusing to overwrite a signing key", file=sys.stderr)
        return EXIT_FAILED
    print(f"key_id: {signer.key_id}\nprivate key written to {args.path} (mode 0600)")
    print(public_pem(signer.public), end="")
    return EXIT_OK


def register(sub: SubParsers) -> None:
    keys = sub.add_parser("keys", help="signing keys").add_subparsers(dest="keys", required=True)
    p = keys.add_parser("generate", help="create an Ed25519 signing key (PEM)")
    p.add_argument("path")
    p.set_defaults(func=cmd_keys_generate)
