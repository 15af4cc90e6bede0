"""The ``lethe`` command: run the service, administer tenants and keys, import datasets, demo.

Exit codes: 0 success, 1 the service refused or a check failed, 2 usage error, 3 could not reach
the service.

One module per resource; each declares its subcommands beside their handlers in ``register``.
"""

from __future__ import annotations

import argparse
import sys

from app.cli import (
    admin,
    api_keys,
    audit,
    datasets,
    demo,
    forget,
    jobs,
    keys,
    models,
    receipts,
    requests,
    server,
    settings,
    verify,
    whoami,
)
from app.cli.common import EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE, UsageError

__all__ = ["build_parser", "main"]

# In the order ``lethe --help`` lists them.
_COMMANDS = (
    server,
    admin,
    datasets,
    whoami,
    forget,
    jobs,
    models,
    requests,
    api_keys,
    settings,
    verify,
    receipts,
    keys,
    audit,
    demo,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lethe", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for module in _COMMANDS:
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except (UsageError, FileNotFoundError, IsADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        from app.core.errors import LetheError

        if isinstance(exc, LetheError):
            print(f"error: {exc.detail}", file=sys.stderr)
            return EXIT_FAILED
        from app.client import LetheAPIError, LetheTimeout

        if isinstance(exc, (LetheAPIError, LetheTimeout)):
            print(f"error: {exc}", file=sys.stderr)
            for err in getattr(exc, "problem", {}).get("errors", [])[:10]:
                print(f"  {err.get('field')}: {err.get('message')}", file=sys.stderr)
            return EXIT_FAILED
        import httpx

        if isinstance(exc, httpx.TransportError):
            print(f"error: cannot reach the service: {exc}", file=sys.stderr)
            return EXIT_UNREACHABLE
        raise
