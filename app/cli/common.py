"""What the command modules share: exit codes, settings, the API client and its flags, output.

Exit codes: 0 success, 1 the service refused or a check failed, 2 usage error (bad local input),
3 could not reach the service.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from app.client import LetheClient
    from app.core.config import Settings

    # What ``add_subparsers`` returns; each command module's ``register`` adds its parsers to it.
    SubParsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


class UsageError(Exception):
    """Bad local input (a file that is not there, JSON that does not parse): exit 2."""


def _settings() -> Settings:
    from app.core.config import get_settings

    return get_settings()


def _database() -> Engine:
    """The engine of a command that uses the database directly, after the rule every process
    follows (:func:`app.core.migrate.ensure_schema`): embedded mode migrates a fresh or older
    database first; production mode refuses one that is not at head, naming `lethe db upgrade`
    (``SchemaError``, one line and exit 1 from ``main``). The caller disposes of it."""
    from app.core.db import make_engine
    from app.core.migrate import ensure_schema

    settings = _settings()
    engine = make_engine(settings.resolved_database_url)
    try:
        ensure_schema(settings, engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def client_args(parser: argparse.ArgumentParser, listing: bool = False) -> None:
    """The flags of every command that talks to the service (``--json`` too for listings)."""
    parser.add_argument("--url", default=os.environ.get("LETHE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--api-key", help="default: $LETHE_API_KEY")
    if listing:
        parser.add_argument("--json", action="store_true", help="print JSON for scripts")


def _client(args: argparse.Namespace) -> LetheClient:
    from app.client import LetheClient

    key = args.api_key or os.environ.get("LETHE_API_KEY")
    if not key:
        print("error: pass --api-key or set LETHE_API_KEY", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
    return LetheClient(args.url, key)


def _progress_bar(label: str) -> Callable[[int, int], None]:
    finished = False

    def show(done: int, total: int) -> None:
        nonlocal finished
        if finished:  # the reader's last call (end of file) repeats the full bar
            return
        finished = done >= total
        width = 30
        frac = done / total if total else 1.0
        bar = "#" * int(frac * width)
        sys.stderr.write(f"\r{label} [{bar:<{width}}] {frac * 100:5.1f}%")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def _read_ids(path: str) -> list[int]:
    """Sample IDs from a file: whitespace- or comma-separated integers, or a JSON list."""
    import json

    text = Path(path).read_text() if path != "-" else sys.stdin.read()
    if text.lstrip().startswith("["):
        try:
            return [int(x) for x in json.loads(text)]
        except (ValueError, TypeError) as exc:
            raise UsageError(f"{path}: not a JSON list of integers ({exc})") from None
    return _ints(text.replace(",", " ").replace("\n", " "), path, sep=None)


def _ints(text: str, what: str, sep: str | None = ",") -> list[int]:
    try:
        return [int(tok) for tok in text.split(sep) if tok.strip()]
    except ValueError as exc:
        raise UsageError(f"{what}: expected integers ({exc})") from None


def _print_json(value: Any) -> None:
    import json

    print(json.dumps(value, indent=2, default=str))


def _watch(client: Any, job_id: str) -> int:
    """Follow a job until it ends; exit 0 when it succeeded with a passing verdict, else 1."""
    last: tuple[Any, ...] = ()

    def show(job: dict[str, Any]) -> None:
        nonlocal last
        p = job.get("progress") or {}
        now = (job["state"], p.get("phase"), p.get("step"))
        if now != last:
            eta = f" eta {p['eta_seconds']:.0f}s" if p.get("eta_seconds") else ""
            step = f" {p.get('step')}/{p.get('total')}" if p.get("total") else ""
            print(f"{job['state']:<10} {p.get('phase') or '':<22}{step}{eta}", file=sys.stderr)
            last = now

    job = client.wait_for_job(job_id, timeout=7 * 24 * 3600, on_update=show)
    out = job.get("outcome") or {}
    if job["state"] == "succeeded" and out.get("verdict") == "fail":
        # The job ran, but what it made failed the gate: nothing was honoured.
        reasons = "; ".join(out.get("reasons") or [])
        print(
            f"uncertified: version {job.get('result_model_id')} failed the policy gate"
            f" ({reasons}); its requests stay open and are retried with the lineage's next request",
            file=sys.stderr,
        )
        return EXIT_FAILED
    if job["state"] == "succeeded":
        print(f"succeeded: new version {job.get('result_model_id')} (verdict {out.get('verdict')})")
        return EXIT_OK
    print(f"{job['state']}: {job.get('error') or ''}", file=sys.stderr)
    return EXIT_FAILED


def _table(rows: list[dict[str, Any]], columns: list[str], as_json: bool) -> None:
    """Rows as aligned columns for people, or as one JSON list for scripts (``--json``)."""
    if as_json:
        _print_json(rows)
        return
    cells = [[str(r.get(c) if r.get(c) is not None else "-") for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _load_json_arg(value: str, what: str) -> Any:
    """Inline JSON, ``@file``, or ``-`` for standard input."""
    import json

    try:
        if value == "-":
            return json.loads(sys.stdin.read())
        if value.startswith("@"):
            return json.loads(Path(value[1:]).read_text())
        return json.loads(value)
    except ValueError as exc:
        raise UsageError(f"{what} is not valid JSON: {exc}") from None


Fetch = Callable[["LetheClient", argparse.Namespace], Any]


def _show(fetch: Fetch) -> Callable[[argparse.Namespace], int]:
    """A command that prints one resource as JSON."""

    def command(args: argparse.Namespace) -> int:
        with _client(args) as client:
            _print_json(fetch(client, args))
        return EXIT_OK

    return command


def _listing(fetch: Fetch, columns: list[str]) -> Callable[[argparse.Namespace], int]:
    """A command that prints rows as columns, or as JSON with ``--json``."""

    def command(args: argparse.Namespace) -> int:
        with _client(args) as client:
            rows = list(fetch(client, args))
        _table(rows, columns, args.json)
        return EXIT_OK

    return command
