"""``lethe datasets ...``: register datasets that ship offline, upload manifests, list them."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    _client,
    _ints,
    _listing,
    _progress_bar,
    _read_ids,
    client_args,
)

if TYPE_CHECKING:
    from app.cli.common import SubParsers


def cmd_import_dataset(args: argparse.Namespace) -> int:
    from app.datasets import sources

    try:
        arrays: dict[str, Any] = (
            sources.fashion_mnist(Path(args.path) if args.path else sources.FASHION_MNIST_DIR)
            if args.source == "fashion-mnist"
            else sources.digits()
        )
    except (FileNotFoundError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    with tempfile.TemporaryDirectory() as tmp:
        path = sources.write_manifest(arrays, Path(tmp) / f"{args.source}.safetensors")
        with _client(args) as client:
            ds = client.upload_dataset(
                path, name=args.name or args.source, on_progress=_progress_bar("upload")
            )
    print(f"dataset_id: {ds['id']}  samples: {ds['num_samples']}  classes: {ds['num_classes']}")
    return EXIT_OK


def cmd_datasets_upload(args: argparse.Namespace) -> int:
    with _client(args) as client:
        ds = client.upload_dataset(
            args.train, name=args.name, test=args.test, on_progress=_progress_bar("upload")
        )
    print(f"dataset_id: {ds['id']}  samples: {ds['num_samples']}  classes: {ds['num_classes']}")
    return EXIT_OK


def cmd_datasets_forget(args: argparse.Namespace) -> int:
    """One request per model lineage trained on the dataset; exit 0 once they are queued."""
    body: dict[str, Any] = {"reason": args.reason or ""}
    if args.subject:
        body["subject_ref"] = args.subject
    if args.classes:
        body["class_ids"] = _ints(args.classes, "--classes")
    else:
        body["sample_ids"] = _read_ids(args.samples_file) if args.samples_file else []
        if args.samples:
            body["sample_ids"] += _ints(args.samples, "--samples")
    with _client(args) as client:
        group = client.forget_dataset(args.dataset_id, idempotency_key=args.idempotency_key, **body)
    print(f"group_id: {group['id']}  status: {group['status']}")
    for r in group["requests"]:
        print(f"  lineage {r['lineage_id']}: request {r['id']}, job {r['job_id']}")
    for s in group["skipped"]:
        print(f"  lineage {s['lineage_id']}: skipped ({s['reason']})")
    return EXIT_OK


def register(sub: SubParsers) -> None:
    ds = sub.add_parser("datasets", help="datasets").add_subparsers(dest="datasets", required=True)
    p = ds.add_parser("import", help="register a dataset that ships offline")
    p.add_argument("source", choices=["fashion-mnist", "digits"])
    p.add_argument("--path", help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--name")
    client_args(p)
    p.set_defaults(func=cmd_import_dataset)

    p = ds.add_parser("upload", help="upload a training manifest (safetensors)")
    p.add_argument("train", help="safetensors: images, labels, optional sample_ids and test split")
    p.add_argument("--test", help="a separate safetensors test split")
    p.add_argument("--name", required=True)
    client_args(p)
    p.set_defaults(func=cmd_datasets_upload)
    p = ds.add_parser(
        "forget", help="forget samples or classes from every model trained on a dataset"
    )
    p.add_argument("dataset_id")
    p.add_argument("--classes", help="comma-separated class IDs")
    p.add_argument("--samples", help="comma-separated sample IDs")
    p.add_argument("--samples-file", help="file of sample IDs (one per line, or a JSON list)")
    p.add_argument("--reason")
    p.add_argument("--subject", help="opaque data-subject reference")
    p.add_argument("--idempotency-key")
    client_args(p)
    p.set_defaults(func=cmd_datasets_forget)
    p = ds.add_parser("list", help="the tenant's datasets")
    client_args(p, listing=True)
    p.set_defaults(
        func=_listing(
            lambda c, a: c.list_datasets(),
            ["id", "name", "num_samples", "num_classes", "created_at"],
        )
    )
