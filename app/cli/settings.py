"""``lethe settings ...``: the tenant's unlearning policy settings."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from app.cli.common import EXIT_OK, EXIT_USAGE, _client, _print_json, _show, client_args

if TYPE_CHECKING:
    from app.cli.common import SubParsers


def cmd_settings_set(args: argparse.Namespace) -> int:
    """Change some of the tenant's settings: ``fallback_retrain=true policy.class_fa_max=0.5``.

    Values are JSON (``true``, ``0.5``, ``null`` to return to the service default)."""
    import json

    with _client(args) as client:
        current = client.tenant_settings()
        for assignment in args.assignments:
            dotted, sep, raw = assignment.partition("=")
            if not sep or not dotted:
                print(f"error: expected KEY=VALUE, got {assignment!r}", file=sys.stderr)
                return EXIT_USAGE
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw
            *parents, leaf = dotted.split(".")
            node = current
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        _print_json(client.put_tenant_settings(current))
    return EXIT_OK


def register(sub: SubParsers) -> None:
    st = sub.add_parser("settings", help="the tenant's unlearning policy settings")
    stsub = st.add_subparsers(dest="settings", required=True)
    p = stsub.add_parser("show")
    client_args(p)
    p.set_defaults(func=_show(lambda c, a: c.tenant_settings()))
    p = stsub.add_parser("set", help="KEY=VALUE ... (JSON values; admin key)")
    p.add_argument("assignments", nargs="+", metavar="KEY=VALUE")
    client_args(p)
    p.set_defaults(func=cmd_settings_set)
