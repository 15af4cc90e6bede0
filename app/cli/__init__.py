"""The ``lethe`` command: run the service, administer tenants and keys, import datasets, demo.

Exit codes: 0 success, 1 the service refused or a check failed, 2 usage error (bad local input,
a bad ``LETHE_*`` setting), 3 could not reach the service (or the database). Each error is one
line on stderr.

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
    kits,
    models,
    receipts,
    requests,
    server,
    settings,
    store,
    verify,
    whoami,
)
from app.cli.common import EXIT_FAILED, EXIT_UNREACHABLE, EXIT_USAGE, UsageError

# What a shell reports for a command that SIGPIPE ended (128 + 13).
EXIT_BROKEN_PIPE = 141

__all__ = ["build_parser", "main"]

# In the order ``lethe --help`` lists them.
_COMMANDS = (
    server,
    admin,
    store,
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
    kits,
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
    try:
        args = build_parser().parse_args(argv)
        code = _run(args)
        # Output to a pipe is buffered: a reader that went away (`lethe ... | head`) shows here.
        if sys.stdout is not None:  # None when started with standard output closed
            sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _reader_went_away()


def _run(args: argparse.Namespace) -> int:
    """Run the command; every error a person can act on becomes one line on stderr and an exit
    code (see the module's docstring); anything else is a bug and keeps its traceback."""
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        raise
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        print(f"error: {_os_error(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:
        code = _explain(exc)
        if code is None:
            raise
        return code


def _explain(exc: Exception) -> int | None:
    """The exit code of an error explained on stderr, or None for a bug (a traceback)."""
    from pydantic import ValidationError

    from app.core.config import Settings, SettingsError, describe_settings_error

    if isinstance(exc, SettingsError):
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(exc, ValidationError) and exc.title == Settings.__name__:
        # Settings built directly (`lethe demo` builds its own) rather than by get_settings().
        print(f"error: {describe_settings_error(exc)}", file=sys.stderr)
        return EXIT_USAGE
    from app.core.migrate import DatabaseUnreachable, SchemaError

    if isinstance(exc, SchemaError):
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE if isinstance(exc, DatabaseUnreachable) else EXIT_FAILED
    from app.core.errors import LetheError

    if isinstance(exc, LetheError):
        print(f"error: {exc.detail}", file=sys.stderr)
        return EXIT_FAILED
    from app.client import LetheAPIError, LetheTimeout

    if isinstance(exc, (LetheAPIError, LetheTimeout)):
        print(f"error: {exc}", file=sys.stderr)
        for line in _field_errors(exc, str(exc)):
            print(f"  {line}", file=sys.stderr)
        return EXIT_FAILED
    import httpx

    if isinstance(exc, httpx.TransportError):
        print(f"error: cannot reach the service: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    return None


def _field_errors(exc: Exception, detail: str) -> list[str]:
    """The problem's per-field errors that its detail does not already say (many a refusal's
    detail is its one field error: printing both would say the same thing twice)."""
    lines = []
    for err in getattr(exc, "problem", {}).get("errors", [])[:10]:
        message = str(err.get("message") or "")
        if message and message in detail:
            continue
        lines.append(f"{err.get('field')}: {message}")
    return lines


def _os_error(exc: OSError) -> str:
    if exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


def _reader_went_away() -> int:
    """`lethe audit list | head`: the reader has what it wanted. Stop quietly, as a command
    killed by SIGPIPE would (exit 141), without Python's "Exception ignored ... BrokenPipeError"
    when it flushes standard output once more at exit."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (a test's capture)
        pass
    return EXIT_BROKEN_PIPE
