"""Certificates: an in-toto Statement v1 inside a DSSE envelope, signed with Ed25519.

Pure functions, no database: the worker signs with them and ``lethe verify`` checks offline.

- DSSE signs ``PAE(payloadType, payload)``: ``"DSSEv1" SP len(type) SP type SP len(body) SP body``
  (lengths in ASCII decimal), so a signature cannot be replayed under another payload type.
- The key ID is the first 16 hex digits of SHA-256 over the raw 32-byte public key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://lethe.dev/attestations/unlearning/v1"
# An erasure receipt: what a purge destroyed, by digest, and when (a second kind of statement).
RECEIPT_PREDICATE_TYPE = "https://lethe.dev/attestations/erasure/v1"
GUARANTEE = (
    "empirical: the new model was measured to behave like a model never trained on the forgotten"
    " samples on the listed metrics and thresholds; this is evidence, not a mathematical proof"
    " that no trace of them remains in the weights."
)


def pae(payload_type: str, payload: bytes) -> bytes:
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def key_id_of(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


@dataclass(frozen=True)
class Signer:
    private: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()

    @property
    def key_id(self) -> str:
        return key_id_of(self.public)

    def sign(self, statement: dict[str, Any]) -> dict[str, Any]:
        payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
        sig = self.private.sign(pae(PAYLOAD_TYPE, payload))
        return {
            "payloadType": PAYLOAD_TYPE,
            "payload": base64.b64encode(payload).decode(),
            "signatures": [{"keyid": self.key_id, "sig": base64.b64encode(sig).decode()}],
        }

    def sign_bytes(self, data: bytes) -> bytes:
        """A raw Ed25519 signature over ``data`` (the audit checkpoints' signed notes)."""
        return self.private.sign(data)


def generate_key_file(path: Path) -> Signer:
    """Create a new private key at ``path`` (mode 0600); refuse to overwrite one."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return Signer(private)


def load_signer(path: Path, *, create: bool = False) -> Signer:
    """Load the signing key; with ``create`` (embedded mode) make one on first use. Two
    processes racing to create it end up with the same key (O_EXCL, then load)."""
    if not path.exists():
        if not create:
            raise FileNotFoundError(
                f"signing key {path} does not exist; create one with `lethe keys generate {path}`"
                " and set LETHE_SIGNING_KEY_PATH"
            )
        try:
            return generate_key_file(path)
        except FileExistsError:
            pass
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return Signer(key)


def build_statement(
    *, model_name: str, model_digest: str, predicate: dict[str, Any]
) -> dict[str, Any]:
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": model_name, "digest": {"sha256": model_digest}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {**predicate, "guarantee": "empirical", "guarantee_meaning": GUARANTEE},
    }


def sign_erasure_receipt(
    signer: Signer, destroyed: list[dict[str, Any]], predicate: dict[str, Any]
) -> dict[str, Any]:
    """A DSSE envelope whose subjects are the destroyed artifacts, by digest."""
    subjects = [
        {
            "name": f"{d['kind']}/{d.get('model_id') or d.get('kit_id') or d.get('dataset_id')}",
            "digest": d["digest"],
        }
        for d in destroyed
    ]
    return signer.sign(
        {
            "_type": STATEMENT_TYPE,
            "subject": subjects,
            "predicateType": RECEIPT_PREDICATE_TYPE,
            "predicate": predicate,
        }
    )


@dataclass(frozen=True)
class Verification:
    ok: bool
    problems: list[str]
    statement: dict[str, Any] | None
    key_id: str | None


def verify_envelope(
    envelope: dict[str, Any],
    public_keys: dict[str, Ed25519PublicKey],
    *,
    model_bytes_digest: str | None = None,
    require_pass: bool = True,
    accept_uncertified_ancestors: bool = False,
) -> Verification:
    """Check the DSSE signature, the statement's shape, the model digest, the verdict and the
    chain of versions it discloses. Every failure is explained in ``problems``."""
    problems: list[str] = []
    if envelope.get("payloadType") != PAYLOAD_TYPE:
        problems.append(f"payloadType is {envelope.get('payloadType')!r}, not {PAYLOAD_TYPE}")
    try:
        payload = base64.b64decode(envelope["payload"], validate=True)
        statement = json.loads(payload)
    except (KeyError, ValueError):
        return Verification(False, ["the envelope's payload is not base64 JSON"], None, None)
    good_key = None
    for sig in envelope.get("signatures") or []:
        key = public_keys.get(str(sig.get("keyid")))
        if key is None:
            continue
        try:
            key.verify(base64.b64decode(sig.get("sig", "")), pae(PAYLOAD_TYPE, payload))
            good_key = str(sig["keyid"])
            break
        except (InvalidSignature, ValueError):
            problems.append(f"signature by key {sig.get('keyid')} does not match the payload")
    if good_key is None and not problems:
        ids = [s.get("keyid") for s in envelope.get("signatures") or []]
        problems.append(f"no signature by a known key (signed by {ids}, have {list(public_keys)})")
    if statement.get("_type") != STATEMENT_TYPE:
        problems.append("the payload is not an in-toto Statement v1")
    predicate = statement.get("predicate") or {}
    subjects = statement.get("subject") or []
    if statement.get("predicateType") == RECEIPT_PREDICATE_TYPE:
        problems += receipt_problems(predicate, subjects)
        return Verification(not problems, problems, statement, good_key)
    digest = subjects[0].get("digest", {}).get("sha256") if subjects else None
    if model_bytes_digest is not None and digest != model_bytes_digest:
        problems.append(
            f"the model file's SHA-256 is {model_bytes_digest} but the certificate is about"
            f" {digest}: this is not the certified file"
        )
    verdict = (predicate.get("policy") or {}).get("verdict")
    if require_pass and verdict != "pass":
        reasons = "; ".join((predicate.get("policy") or {}).get("reasons") or [])
        problems.append(
            f"the policy verdict is {verdict!r}, not 'pass'" + (f": {reasons}" if reasons else "")
        )
    problems += chain_problems(predicate, digest, accept_uncertified_ancestors)
    return Verification(not problems, problems, statement, good_key)


def receipt_problems(predicate: dict[str, Any], subjects: list[Any]) -> list[str]:
    """A receipt's subjects must be exactly what its predicate says was destroyed."""
    destroyed = predicate.get("destroyed")
    if not isinstance(destroyed, list) or not destroyed:
        return ["the receipt lists nothing destroyed"]
    said = sorted(str((d.get("digest") or {}).get("sha256")) for d in destroyed)
    signed = sorted(str((s.get("digest") or {}).get("sha256")) for s in subjects)
    if said != signed:
        return ["the receipt's subjects are not the artifacts it says were destroyed"]
    return []


def chain_problems(
    predicate: dict[str, Any], subject_digest: str | None, accept_uncertified: bool
) -> list[str]:
    """The chain must run from an uploaded original to this certificate's subject, through its
    parent; a ``pass`` built on a step that failed the gate is refused unless accepted."""
    chain = predicate.get("chain")
    if chain is None:
        return []  # issued before certificates carried their chain
    if not isinstance(chain, list) or not chain or not all(isinstance(s, dict) for s in chain):
        return ["the chain of versions is empty or malformed"]
    problems = []
    if chain[0].get("verdict") != "uploaded":
        problems.append("the chain does not start at an uploaded original")
    last = chain[-1]
    if (last.get("digest") or {}).get("sha256") != subject_digest:
        problems.append("the chain's last step is not the certified model")
    verdict = (predicate.get("policy") or {}).get("verdict")
    if last.get("verdict") != verdict:
        problems.append(f"the chain's last verdict {last.get('verdict')!r} is not {verdict!r}")
    parent = (predicate.get("parent") or {}).get("id")
    if len(chain) > 1 and chain[-2].get("id") != parent:
        problems.append("the chain's second-to-last step is not the certificate's parent")
    failed = [s.get("version") for s in chain[:-1] if s.get("verdict") == "fail"]
    if failed and verdict == "pass" and not accept_uncertified:
        problems.append(
            f"this version was built on uncertified step(s) {failed} of its lineage (they failed"
            " the policy gate); accept that explicitly to pass"
        )
    return problems
