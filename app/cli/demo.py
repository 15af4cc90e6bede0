"""``lethe demo``: the whole flow on the embedded default (the flow itself is ``app.demo``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.cli.common import SubParsers


def cmd_demo(args: argparse.Namespace) -> int:
    # Lazily: the demo trains a model, so it imports torch; the rest of the CLI must not.
    if args.generation:
        from app.demo_generation import run_generation_demo

        return run_generation_demo(data_dir=Path(args.data_dir), port=args.port)
    from app.demo import run_demo

    return run_demo(data_dir=Path(args.data_dir), port=args.port, dataset=args.dataset)


def register(sub: SubParsers) -> None:
    p = sub.add_parser("demo", help="run the whole flow on the embedded default")
    p.add_argument("--data-dir", default=".lethe/demo")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--dataset", choices=["digits", "fashion-mnist"], default="digits")
    p.add_argument(
        "--generation",
        action="store_true",
        help="a diffusion model (a tiny denoiser on the digits) forgets a class instead",
    )
    p.set_defaults(func=cmd_demo)
