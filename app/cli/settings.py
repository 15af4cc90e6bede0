"""``lethe settings ...``: the tenant's unlearning policy settings."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from app.cli.common import EXIT_OK, EXIT_USAGE, _client, _print_json, client_args

if TYPE_CHECKING:
    from app.cli.common import SubParsers


def cmd_settings_set(args: argparse.Namespace) -> int:
    """Change some of the tenant's settings: ``fallback_retrain=true policy.class_fa_max=0.5``.

    Values are JSON (``true``, ``0.5``, ``null`` to return to the service default)."""
    changes: dict[str, Any] = {}
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
        node = changes
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    # A merge patch: only the named fields change, and a concurrent change to others survives.
    with _client(args) as client:
        client.patch_tenant_settings(changes)
        _print_effective(client.effective_settings())
    return EXIT_OK


def _print_effective(values: dict[str, Any]) -> None:
    width = max(len(k) for k in values)
    for name, item in values.items():
        print(f"{name:<{width}}  {json.dumps(item['value']):<8}  {item['source']}")


def cmd_settings_show(args: argparse.Namespace) -> int:
    with _client(args) as client:
        values = client.effective_settings()
    if args.json:
        _print_json(values)
    else:
        _print_effective(values)
    return EXIT_OK


def register(sub: SubParsers) -> None:
    st = sub.add_parser("settings", help="the tenant's unlearning policy settings")
    stsub = st.add_subparsers(dest="settings", required=True)
    p = stsub.add_parser("show", help="every value as it applies, and who set it")
    client_args(p, listing=True)
    p.set_defaults(func=cmd_settings_show)
    p = stsub.add_parser("set", help="KEY=VALUE ... (JSON values; admin key)")
    p.add_argument("assignments", nargs="+", metavar="KEY=VALUE")
    client_args(p)
    p.set_defaults(func=cmd_settings_set)
