"""``lethe forget``: ask a model to forget classes or samples (and optionally follow the job)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from app.cli.common import (
    EXIT_OK,
    _client,
    _ints,
    _load_json_arg,
    _read_ids,
    _watch,
    client_args,
)

if TYPE_CHECKING:
    from app.cli.common import SubParsers

# The default JSON limit (8 MiB) carries ~380,000 IDs at int64's widest; well below that.
FILE_UPLOAD_ABOVE = 50_000


def cmd_forget(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"reason": args.reason or "", "method": args.method}
    if args.subject:
        body["subject_ref"] = args.subject
    if args.config:
        body["config"] = _load_json_arg(args.config, "--config")
    if args.reference:
        body["reference_eval"] = True
    if args.allow_uncertified_base:
        body["allow_uncertified_base"] = True
    if args.evaluator:
        body["evaluator_model_id"] = args.evaluator
    classes = _ints(args.classes, "--classes") if args.classes else None
    samples = _read_ids(args.samples_file) if args.samples_file else None
    if args.samples:
        samples = (samples or []) + _ints(args.samples, "--samples")
    with _client(args) as client:
        if samples is not None and len(samples) > FILE_UPLOAD_ABOVE:
            # Past this many IDs a JSON body nears the API's body limit: send them as a file.
            fr = client.forget_samples_file(
                args.model_id, samples, idempotency_key=args.idempotency_key, **body
            )
        else:
            fr = client.forget(
                args.model_id,
                class_ids=classes,
                sample_ids=samples,
                idempotency_key=args.idempotency_key,
                **body,
            )
        print(f"request_id: {fr['id']}\njob_id:     {fr['job_id']}\ndue_at:     {fr['due_at']}")
        if not args.wait:
            return EXIT_OK
        return _watch(client, fr["job_id"])


def register(sub: SubParsers) -> None:
    p = sub.add_parser("forget", help="ask a model to forget classes or samples")
    p.add_argument("model_id")
    p.add_argument("--classes", help="comma-separated class IDs")
    p.add_argument("--samples", help="comma-separated sample IDs")
    p.add_argument(
        "--samples-file", help="file of sample IDs (one per line, or a JSON list; - is stdin)"
    )
    p.add_argument("--method", default="sfr_on")
    p.add_argument("--config", help="the method's hyperparameters as JSON")
    p.add_argument("--reference", action="store_true", help="also retrain and report the gap")
    p.add_argument("--reason")
    p.add_argument(
        "--evaluator",
        help="diffusion models: the registered classifier (model ID) that judges generated images",
    )
    p.add_argument("--subject", help="opaque data-subject reference")
    p.add_argument("--idempotency-key")
    p.add_argument(
        "--allow-uncertified-base",
        action="store_true",
        help="build on the named uncertified version (its certificate will disclose it)",
    )
    p.add_argument(
        "--wait",
        action="store_true",
        help="follow the job until it ends (exit 1 unless it made a certified version)",
    )
    client_args(p)
    p.set_defaults(func=cmd_forget)
