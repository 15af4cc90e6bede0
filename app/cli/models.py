"""``lethe models ...``: upload, list, show, download model versions and follow their lineage."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from app.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    _client,
    _listing,
    _load_json_arg,
    _progress_bar,
    _show,
    client_args,
)

if TYPE_CHECKING:
    from app.cli.common import SubParsers


def cmd_models_download(args: argparse.Namespace) -> int:
    with _client(args) as client:
        out = client.download_weights(
            args.model_id, args.out, allow_uncertified=args.allow_uncertified
        )
        print(f"weights: {out}")
        if args.certificate:
            import json

            Path(args.certificate).write_text(json.dumps(client.certificate(args.model_id)))
            print(f"certificate: {args.certificate}")
    return EXIT_OK


def cmd_models_samples(args: argparse.Namespace) -> int:
    with _client(args) as client:
        png = client.sample_grid(args.model_id, args.class_id, args.n)
    Path(args.out).write_bytes(png)
    print(f"samples: {args.out} ({len(png)} bytes)")
    return EXIT_OK


def cmd_models_lineage(args: argparse.Namespace) -> int:
    with _client(args) as client:
        lineage = client.lineage(args.model_id)
    print("version  status       forgotten  id")
    for v in lineage["versions"]:
        print(f"{v['version']:>7}  {v['status']:<11}  {v['forgotten_count']:>9}  {v['id']}")
    return EXIT_OK


def cmd_models_upload(args: argparse.Namespace) -> int:
    spec = _load_json_arg(args.spec, "--spec")
    with _client(args) as client:
        model = client.upload_model(args.weights, spec, on_progress=_progress_bar("upload"))
        print(f"model_id: {model['id']}  status: {model['status']}")
        if not args.wait:
            return EXIT_OK
        # The worker's deep check decides: ready, or rejected with the reason.
        client.wait_for_job(model["validation_job_id"], timeout=args.timeout)
        model = client.get_model(model["id"])
    reason = model.get("status_reason")
    print(f"status: {model['status']}{'  (' + reason + ')' if reason else ''}")
    return EXIT_OK if model["status"] == "ready" else EXIT_FAILED


def register(sub: SubParsers) -> None:
    models = sub.add_parser("models", help="models").add_subparsers(dest="models", required=True)
    p = models.add_parser("download", help="download a version (and its certificate)")
    p.add_argument("model_id")
    p.add_argument("--out", required=True)
    p.add_argument("--certificate", help="also save the certificate to this file")
    p.add_argument("--allow-uncertified", action="store_true")
    client_args(p)
    p.set_defaults(func=cmd_models_download)
    p = models.add_parser("samples", help="a diffusion version's generated images (PNG grid)")
    p.add_argument("model_id")
    p.add_argument("--class", dest="class_id", type=int, help="one class (default: every class)")
    p.add_argument("-n", type=int, help="images per class (default: all stored)")
    p.add_argument("--out", required=True, help="PNG file to write")
    client_args(p)
    p.set_defaults(func=cmd_models_samples)
    p = models.add_parser("lineage", help="the chain of versions")
    p.add_argument("model_id")
    client_args(p)
    p.set_defaults(func=cmd_models_lineage)
    p = models.add_parser("upload", help="upload weights (safetensors) with their JSON spec")
    p.add_argument("weights")
    p.add_argument("--spec", required=True, help="the spec as JSON, @file, or - for stdin")
    p.add_argument(
        "--wait", action="store_true", help="wait for the worker's check (exit 1 if rejected)"
    )
    p.add_argument("--timeout", type=float, default=3600)
    client_args(p)
    p.set_defaults(func=cmd_models_upload)
    p = models.add_parser("list", help="the tenant's model versions, newest first")
    client_args(p, listing=True)
    p.set_defaults(
        func=_listing(
            lambda c, a: c.list_models(),
            ["id", "name", "version", "status", "architecture", "created_at"],
        )
    )
    p = models.add_parser("show", help="one model version (JSON)")
    p.add_argument("model_id")
    client_args(p)
    p.set_defaults(func=_show(lambda c, a: c.get_model(a.model_id)))
