"""``lethe whoami``: the tenant and role of the API key."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.cli.common import _show, client_args

if TYPE_CHECKING:
    from app.cli.common import SubParsers


def register(sub: SubParsers) -> None:
    p = sub.add_parser("whoami", help="the tenant and role of the API key")
    client_args(p)
    p.set_defaults(func=_show(lambda c, a: c.whoami()))
