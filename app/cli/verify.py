"""``lethe verify``: check a certificate offline (signature, model digest, verdict)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.cli.common import EXIT_FAILED, EXIT_OK, UsageError

if TYPE_CHECKING:
    from app.cli.common import SubParsers


def cmd_verify(args: argparse.Namespace) -> int:
    """Offline: signature, model digest and verdict. Needs no service and no database.

    Exit 0 verified, 1 refused (a bad signature, digest or verdict), 2 an input that cannot be
    read (the certificate, ``--key`` or ``--model``)."""
    import hashlib
    import json

    from app.certificates.signing import (
        RECEIPT_PREDICATE_TYPE,
        load_public_key,
        verify_envelope,
    )

    try:
        text = Path(args.certificate).read_text()
    except OSError as exc:  # bad local input, not a refused certificate
        raise UsageError(
            f"cannot read the certificate {args.certificate}: {exc.strerror}"
        ) from None
    try:
        envelope = json.loads(text)
    except ValueError as exc:
        print(f"FAILED: cannot read the certificate: {exc}", file=sys.stderr)
        return EXIT_FAILED
    keys = {}
    try:
        raw = Path(args.key).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read the public key {args.key}: {exc.strerror}") from None
    try:
        if raw.lstrip().startswith("{"):
            # The JSON of GET /v1/signing-keys, saved as it came.
            for item in json.loads(raw)["items"]:
                keys[item["key_id"]] = load_public_key(item["public_key_pem"])
        else:
            from app.certificates.signing import key_id_of

            key = load_public_key(raw)
            keys[key_id_of(key)] = key
    except (ValueError, KeyError) as exc:
        print(f"FAILED: cannot read the public key: {exc}", file=sys.stderr)
        return EXIT_FAILED
    digest = None
    if args.model:
        h = hashlib.sha256()
        try:
            with open(args.model, "rb") as fh:
                while chunk := fh.read(1024 * 1024):
                    h.update(chunk)
        except OSError as exc:
            raise UsageError(f"cannot read the model {args.model}: {exc.strerror}") from None
        digest = h.hexdigest()
    result = verify_envelope(
        envelope,
        keys,
        model_bytes_digest=digest,
        require_pass=True,
        accept_uncertified_ancestors=args.accept_uncertified_ancestors,
    )
    if not result.ok:
        print("FAILED:", file=sys.stderr)
        for problem in result.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_FAILED
    pred = (result.statement or {}).get("predicate", {})
    print(f"OK: signed by key {result.key_id}")
    if (result.statement or {}).get("predicateType") == RECEIPT_PREDICATE_TYPE:
        return _print_receipt(pred)
    forgotten = pred.get("forgotten", {})
    if digest:
        print(f"    model file sha256 {digest} is the certified subject")
    print(
        f"    verdict {pred.get('policy', {}).get('verdict')}; method"
        f" {pred.get('method', {}).get('name')}; forgotten this job"
        f" {forgotten.get('this_job', {}).get('count')}, cumulative"
        f" {forgotten.get('cumulative', {}).get('count')}"
    )
    for step in pred.get("chain") or []:
        digest_hex = (step.get("digest") or {}).get("sha256") or "-"
        print(
            f"    chain v{step.get('version')}: {step.get('verdict'):<9} {digest_hex[:16]}"
            f"  requests {', '.join(step.get('request_ids') or []) or '-'}"
        )
    print(f"    guarantee: {pred.get('guarantee')} ({pred.get('guarantee_meaning', '')[:80]}...)")
    return EXIT_OK


def _print_receipt(pred: dict[str, Any]) -> int:
    erased = pred.get("erased_samples") or {}
    job = (pred.get("job") or {}).get("id")
    print(f"    erasure receipt of job {job}, issued {pred.get('issued_at')}")
    for d in pred.get("destroyed") or []:
        what = f"version {d.get('version')}" if d.get("version") else d.get("dataset_id")
        digest = (d.get("digest") or {}).get("sha256")
        print(f"    destroyed {d.get('kind')} {what}: sha256 {digest}")
    print(f"    samples erased from the manifest: {erased.get('count', 0)}")
    held = pred.get("samples_held_by_lineages") or []
    if held:
        print(f"    still held by lineages (not yet forgotten there): {', '.join(held)}")
    return EXIT_OK


def register(sub: SubParsers) -> None:
    p = sub.add_parser("verify", help="verify a certificate offline")
    p.add_argument("certificate", help="the DSSE envelope (JSON) from GET .../certificate")
    p.add_argument("--model", help="the downloaded weights; their SHA-256 must be the subject")
    p.add_argument("--key", required=True, help="a PEM public key, or the JSON of /v1/signing-keys")
    p.add_argument(
        "--accept-uncertified-ancestors",
        action="store_true",
        help="accept a pass built on a version that failed the policy gate",
    )
    p.set_defaults(func=cmd_verify)
