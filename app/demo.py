"""``lethe demo``: the whole flow on the embedded default, through the same code paths as a
production deployment: a real API process, a real Celery worker (with a broker spool on disk
instead of Redis), SQLite instead of PostgreSQL, local artifacts.

Steps: start both processes, create a tenant, register a real dataset (scikit-learn's digits, or
Fashion-MNIST from Debian's package), train a small CNN on it, upload it, wait for the worker's
deep check, forget a class and then one person's samples (progress from the jobs themselves),
download the newest version, verify its certificate offline, and print the metrics and lineage.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.client import LetheClient
from app.core.tasks import worker_command

if TYPE_CHECKING:
    from app.core.config import Settings


class _ProgressLine:
    """One progress bar per phase on stderr: redrawn in place on a terminal, and one line per
    phase, when it ends, when the output goes to a file (so logs stay readable)."""

    def __init__(self) -> None:
        self.phase: str | None = None
        self.pct = -1
        self.tty = sys.stderr.isatty()

    def show(self, phase: str, done: int, total: int) -> None:
        pct = min(100, int(100 * done / total)) if total else 100
        if phase != self.phase:
            self.close()
            self.phase, self.pct = phase, -1
        if pct == self.pct:
            return
        self.pct = pct
        if not self.tty and pct < 100:
            return  # a file gets the phase's line once, at its end (or at close)
        bar = "#" * (pct * 28 // 100)
        line = f"  {phase:<22} [{bar:<28}] {pct:3d}%"
        sys.stderr.write(f"\r{line}" if self.tty else f"{line}\n")
        sys.stderr.flush()

    def job(self, job: dict[str, Any]) -> None:
        p = job.get("progress") or {}
        if p.get("total"):
            self.show(str(p.get("phase")), int(p.get("step") or 0), int(p["total"]))

    def close(self) -> None:
        if self.phase is not None and self.tty:
            sys.stderr.write("\n")
        elif self.phase is not None and 0 <= self.pct < 100:
            # The job moved on (polling saw the phase before its end): it is done; one line.
            sys.stderr.write(f"  {self.phase:<22} [{'#' * 28}] 100%\n")
        self.phase = None


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    # The child keeps its own copy of the descriptor; ours can close at once.
    with open(log, "wb") as fh:
        return subprocess.Popen(argv, env=env, stdout=fh, stderr=subprocess.STDOUT)


def _show_erasure(
    client: LetheClient,
    data_dir: Path,
    job: dict[str, Any],
    original_id: str,
    dataset_id: str,
    person: list[int],
) -> int:
    """Step 10: the superseded versions and the person's samples are gone, and the receipt that
    says so verifies offline."""
    from app.client import LetheAPIError

    purge_id = (job.get("outcome") or {}).get("purge_job_id")
    if purge_id is None:
        print("10. the newest version is not certified, so nothing was erased")
        return 0
    purge = client.wait_for_job(purge_id, timeout=300)
    if purge["state"] != "succeeded":
        print(f"   the purge {purge['state']}: {purge['error']}", file=sys.stderr)
        return 1
    try:
        client.download_weights(original_id, data_dir / "original.safetensors")
        print("   the original version still downloads: erasure did not happen", file=sys.stderr)
        return 1
    except LetheAPIError as exc:
        print(f"10. erasure: the original version answers {exc.status} ({exc.problem['title']})")
    held = [client.exposure(dataset_id, s) for s in person]
    stored = sum(len(e["stored_artifacts_holding"]) for e in held)
    in_manifest = sum(e["in_manifest"] for e in held)
    print(
        f"   the person's {len(person)} samples: {in_manifest} still in the dataset's manifest,"
        f" {stored} stored artifacts hold any of them"
    )
    receipt_id = purge["outcome"]["receipt_id"]
    path = data_dir / "erasure-receipt.json"
    path.write_text(json.dumps(client.erasure_receipt(receipt_id)))
    print(f"   the signed erasure receipt ({path.name}); `lethe verify` checks it:")
    sys.stdout.flush()
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "verify",
            str(path),
            "--key",
            str(data_dir / "signing-keys.json"),
        ],
        check=False,
    ).returncode


# Shadow models of the demo's reference kit: enough for a 5% false-positive rate on a person's
# 25 samples; a service would use the default 16 (see the README's per-example audit).
DEMO_KIT_SHADOWS = 8


def _build_kit(client: LetheClient, class_job: dict[str, Any]) -> int:
    """Step 7: a reference kit for the per-example audit of the person's request. Built after
    the class's erasure has rewritten the manifest: a kit of the old manifest would be retired
    with it, since its shadows saw the erased samples."""
    purge_id = (class_job.get("outcome") or {}).get("purge_job_id")
    if purge_id is not None:
        purge = client.wait_for_job(purge_id, timeout=300)
        if purge["state"] != "succeeded":
            print(f"   the purge {purge['state']}: {purge['error']}", file=sys.stderr)
            return 1
    kit = client.request_reference_kit(class_job["result_model_id"], k=DEMO_KIT_SHADOWS)
    print(
        f"7. building a reference kit: {DEMO_KIT_SHADOWS} shadow models, each trained with the"
        " original's recipe on a random half of the manifest (once per dataset, reused after)"
    )
    line = _ProgressLine()
    job = client.wait_for_job(kit["job_id"], timeout=900, on_update=line.job)
    line.close()
    if job["state"] != "succeeded":
        print(f"   kit job {job['state']}: {job['error']}", file=sys.stderr)
        return 1
    return 0


def _show_per_example(certificate: Path) -> None:
    """The person's samples under the per-example audit, before and after, as the newest
    version's certificate records it."""
    import base64

    envelope = json.loads(certificate.read_text())
    predicate = json.loads(base64.b64decode(envelope["payload"]))["predicate"]
    audit = predicate.get("membership_audit") or {}
    if audit.get("status") != "ok":
        print(f"\nPer-example audit: {audit.get('status')} ({audit.get('reason', '')})")
        return
    # The limit of a model that never saw the samples: the FPR plus the binomial tolerance for
    # the set's size (the gate's own limit when no retrained reference ran).
    first = next(iter(audit["audits"].values()))
    limits = {float(a["alpha"]): float(a["alpha"]) + first["tolerance"][str(a["alpha"])]
              for a in first["alphas"]}  # fmt: skip
    print("\n| the person's samples | flagged at 1% FPR | flagged at 5% FPR | AUC | verdict |")
    print("|---|---|---|---|---|")
    method = predicate["method"]["name"]
    names = {
        "original": "original",
        "approximate": f"{predicate['method']['requested']} (failed the gate)",
        "unlearned": f"new version ({method})",
    }
    for subject, label in names.items():
        if subject not in audit["audits"]:
            continue
        figures = audit["audits"][subject]
        shares = {float(a["alpha"]): float(a["share_flagged"]) for a in figures["alphas"]}
        ok = all(shares[a] <= limit for a, limit in limits.items())
        auc = "-" if figures.get("auc") is None else f"{figures['auc']:.2f}"
        print(
            f"| {label} | {100 * shares.get(0.01, 0):.0f}% | {100 * shares.get(0.05, 0):.0f}% |"
            f" {auc} | {'pass' if ok else 'FAIL'} (limit"
            f" {', '.join(f'{100 * v:.0f}%' for v in limits.values())}) |"
        )
    print(
        "A sample is flagged when the version's confidence on it is more typical of the kit's"
        " shadows that trained on it than of those that did not. A model that never saw the"
        " samples flags about the FPR; the limit adds the binomial tolerance for 25 samples."
        " FA and TA near 100 cannot show this: a model can classify its training samples and"
        " unseen ones equally well and still be more confident on the ones it trained on."
    )
    if "approximate" in audit["audits"]:
        print(
            "Here the approximate method left the"
            " person's samples recognisable, so the gate refused to certify it, and the"
            " tenant's fallback retrained from scratch: that version is the certified one."
        )


def start_services(
    data_dir: Path, port: int, *, title: str = "Lethe demo", extra_env: dict[str, str] | None = None
) -> tuple[Settings, str, list[subprocess.Popen[bytes]]] | None:
    """Step 1 of every demo: a fresh data dir, the schema, an API and a worker on it (their
    environment plus ``extra_env``); None (after stopping them) when the API does not start."""
    from app.core.config import Environment, Settings
    from app.core.migrate import upgrade

    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    # Everything embedded, except the artifact store when one is named: the demo's flow then
    # runs against it (LETHE_ARTIFACT_URI=s3://... with the LETHE_S3_* settings).
    store_env = {
        k: v
        for k, v in os.environ.items()
        if k == "LETHE_ARTIFACT_URI" or k.startswith("LETHE_S3_")
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    env.update(store_env)
    env.update(LETHE_DATA_DIR=str(data_dir.resolve()), LETHE_ENVIRONMENT="development")
    env.update(extra_env or {})
    store_fields: dict[str, Any] = {
        k.removeprefix("LETHE_").lower(): v for k, v in store_env.items()
    }
    settings = Settings(
        data_dir=data_dir.resolve(), environment=Environment.development, **store_fields
    )
    store = settings.resolved_artifact_uri if store_env else "local files"
    print(f"{title} (embedded mode: {settings.resolved_database_url}, broker spool, {store})")

    upgrade(settings.resolved_database_url)
    procs = [
        _spawn(
            [sys.executable, "-m", "app.cli", "api", "--port", str(port), "--log-level", "warning"],
            env,
            data_dir / "api.log",
        ),
        _spawn(
            worker_command("cpu"),
            env,
            data_dir / "worker.log",
        ),
    ]
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    with LetheClient(url) as anon:
        while not anon.ready():
            if time.monotonic() > deadline or procs[0].poll() is not None:
                print(f"the API did not start; see {data_dir / 'api.log'}", file=sys.stderr)
                stop_services(procs)
                return None
            time.sleep(0.3)
    print(f"1. API and worker running (API at {url})")
    return settings, url, procs


def stop_services(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def create_demo_tenant(settings: Settings) -> tuple[str, str]:
    """Step 2: the tenant, with an admin key and the compliance console's auditor key."""
    from app.core.db import make_engine, make_sessionmaker, session_scope
    from app.tenants import service as tenants
    from app.tenants.schemas import Role

    with session_scope(make_sessionmaker(make_engine(settings.resolved_database_url))) as s:
        tenant, _, api_key = tenants.create_tenant(s, "demo")
        tenant_name = tenant.name
        # The compliance console's reader: an auditor sees everything and changes nothing.
        _, auditor_key = tenants.create_key(s, tenant.id, Role.auditor, "console")
    print(f"2. tenant {tenant_name!r} created with an admin key")
    return api_key, auditor_key


def verify_offline(data_dir: Path, certificate: Path, weights: Path) -> int:
    """`lethe verify` on a downloaded version, as a user would run it: in its own process like
    the API (the CLI imports this module for `lethe demo`, so this module does not import it)."""
    sys.stdout.flush()
    sys.stderr.flush()
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "app.cli",
            "verify",
            str(certificate),
            "--model",
            str(weights),
            "--key",
            str(data_dir / "signing-keys.json"),
        ],
        check=False,
    ).returncode


def run_demo(*, data_dir: Path, port: int, dataset: str) -> int:
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from app.datasets import sources
    from app.unlearning.architectures import build_model
    from app.unlearning.config import TrainingRecipe
    from app.unlearning.data import make_dataset
    from app.unlearning.training import train

    started = time.monotonic()
    up = start_services(data_dir, port)
    if up is None:
        return 1
    settings, url, procs = up
    try:
        api_key, auditor_key = create_demo_tenant(settings)

        arrays: dict[str, Any]
        if dataset == "fashion-mnist":
            arrays = sources.fashion_mnist()
            # A 10k subset keeps the demo to a couple of minutes on two cores.
            keep = np.random.default_rng(0).permutation(len(arrays["labels"]))[:10_000]
            arrays = {
                "images": arrays["images"][keep][:, None],
                "labels": arrays["labels"][keep],
                "sample_ids": keep.astype(np.int64),
                "test_images": arrays["test_images"][:, None],
                "test_labels": arrays["test_labels"],
            }
            recipe = TrainingRecipe(epochs=8, batch_size=128, lr=0.05)
        else:
            arrays = sources.digits()
            recipe = TrainingRecipe(epochs=30, batch_size=64, lr=0.05)
        manifest = sources.write_manifest(arrays, data_dir / f"{dataset}.safetensors")

        with LetheClient(url, api_key) as client:
            ds = client.upload_dataset(manifest, name=dataset)
            print(
                f"3. dataset {dataset!r} registered: {ds['num_samples']} training samples,"
                f" {ds['num_classes']} classes, digest {ds['train_digest'][:12]}..."
            )

            train_set = make_dataset(
                arrays["images"],
                arrays["labels"],
                sample_ids=arrays["sample_ids"],
                num_classes=ds["num_classes"],
            )
            torch.manual_seed(0)
            args = {"num_classes": ds["num_classes"]}
            model = build_model("small_cnn", args)
            print("4. training a small CNN on it")
            bar = _ProgressLine()
            report = train(
                model,
                train_set,
                recipe,
                device=torch.device("cpu"),
                seed=0,
                progress=lambda p: bar.show("training", int(p["step"]), int(p["total"])),
            )
            bar.close()
            weights = data_dir / "model.safetensors"
            save_file({k: v.contiguous().cpu() for k, v in model.state_dict().items()}, weights)
            spec = {
                "name": f"{dataset}-cnn",
                "architecture": "small_cnn",
                "args": args,
                "input_shape": list(train_set.input_shape),
                "normalization": {"mean": list(train_set.mean), "std": list(train_set.std)},
                "dataset_id": ds["id"],
                "training": {
                    "epochs": recipe.epochs,
                    "batch_size": recipe.batch_size,
                    "lr": recipe.lr,
                    "optimizer_steps": report.optimizer_steps,
                },
            }
            mv = client.upload_model(weights, spec)
            print(
                f"5. model uploaded (version {mv['version']}, status {mv['status']});"
                " the worker checks it"
            )
            job = client.wait_for_job(mv["validation_job_id"], timeout=300)
            mv = client.get_model(mv["id"])
            if mv["status"] != "ready":
                print(f"   the model was {mv['status']}: {mv['status_reason']}", file=sys.stderr)
                return 1
            base = mv["baseline_metrics"]
            print(
                f"   {job['state']}: status {mv['status']}, train accuracy"
                f" {base['train_accuracy']:.1f}%, test accuracy {base['test_accuracy']:.1f}%"
            )

            original_id = mv["id"]
            rng = np.random.default_rng(1)
            # From the kept classes: samples of class 3 are gone after step 6 already, and the
            # certificate would then count fewer forgotten in this job than were asked for.
            kept = arrays["sample_ids"][arrays["labels"] != 3]
            person = sorted(int(x) for x in rng.choice(kept, 25, replace=False))
            steps: list[tuple[str, dict[str, Any]]] = [
                (
                    "6. forget class 3",
                    {"class_ids": [3], "reason": "licence for class 3 withdrawn"},
                ),
                (
                    "8. forget one person's 25 samples",
                    {"sample_ids": person, "subject_ref": "person-42", "reason": "GDPR art. 17"},
                ),
            ]
            jobs: list[tuple[str, dict[str, Any]]] = []
            for title, body in steps:
                if title.startswith("8."):
                    rc = _build_kit(client, jobs[-1][1])
                    if rc:
                        return rc
                    client.patch_tenant_settings({"fallback_retrain": True})
                    print(
                        "   the tenant's policy now says: when an approximate version fails the"
                        " gate, retrain from scratch on the rest (the exact answer) and certify"
                        " that instead"
                    )
                fr = client.forget(original_id, **body)
                print(f"{title}: request {fr['id'][:8]}, job {fr['job_id'][:8]} queued")
                line = _ProgressLine()
                job = client.wait_for_job(fr["job_id"], timeout=600, on_update=line.job)
                line.close()
                if job["state"] != "succeeded":
                    print(f"   job {job['state']}: {job['error']}", file=sys.stderr)
                    return 1
                jobs.append((title, job))
                print(
                    f"   version {job['outcome']['new_version']} created; verdict"
                    f" {job['outcome']['verdict']}"
                )

            newest = jobs[-1][1]["result_model_id"]
            # An uncertified version (it failed the policy gate) is only served on request; the
            # demo takes it anyway so that `lethe verify` can say why it fails.
            out = client.download_weights(
                newest, data_dir / "unlearned.safetensors", allow_uncertified=True
            )
            (data_dir / "certificate.json").write_text(json.dumps(client.certificate(newest)))
            (data_dir / "signing-keys.json").write_text(json.dumps(client.signing_keys()))
            print("9. downloaded the newest version; `lethe verify` checks its certificate:")
            rc = verify_offline(data_dir, data_dir / "certificate.json", out)
            rc = rc or _show_erasure(client, data_dir, jobs[-1][1], original_id, ds["id"], person)

            print("\n| request | model | FA | RA | TA | MIA (entropy) |")
            print("|---|---|---|---|---|---|")
            for title, job in jobs:
                for subject in ("original", "unlearned"):
                    m = job["outcome"]["metrics"][subject]
                    if subject == "unlearned":
                        fallback = " after the fallback" if job["outcome"]["fallback"] else ""
                        subject = f"new ({job['outcome']['method']}{fallback})"
                    print(
                        f"| {title[3:]} | {subject} | {m['FA']:.1f} | {m['RA']:.1f} |"
                        f" {m['TA']:.1f} | {m['MIA_entropy']:.1f} |"
                    )
            print(
                "\nHow to read it: FA is accuracy on the forgotten samples, RA on the kept"
                " training samples, TA on the test split (less the share carved out for"
                " calibration). A forgotten class should drop to FA near 0. A person's samples"
                " from classes the model keeps should not: a model that never saw them"
                " recognises them about as well as test data, so FA near TA (here near 100) is"
                " the right answer; population figures cannot tell whether *these* samples were"
                " forgotten, which is what a reference kit's per-example audit is for"
                " (`lethe kits build`)."
            )
            _show_per_example(data_dir / "certificate.json")
            print("\n| version | parent | status | forgotten samples | digest |")
            print("|---|---|---|---|---|")
            numbers: dict[str, int] = {}
            for v in client.lineage(original_id)["versions"]:
                numbers[v["id"]] = v["version"]
                parent = numbers.get(v["parent_id"], "-") if v["parent_id"] else "-"
                stored = v["weights_digest"]
                digest = (
                    f"{stored[:12]}..."
                    if stored
                    else f"{(v['destroyed_digest'] or '-')[:12]}... gone"
                )
                print(
                    f"| {v['version']} | {parent} | {v['status']} | {v['forgotten_count']} |"
                    f" {digest} |"
                )
        print(
            f"\nDone in {time.monotonic() - started:.0f} s. State is in {data_dir}/"
            " (delete it freely)."
        )
        print(
            f"\nCompliance console: {url}/console\n  sign in with the auditor key {auditor_key}"
            f"\n  (later: LETHE_DATA_DIR={data_dir.resolve()} LETHE_ENVIRONMENT=development"
            f" lethe api --port {port} serves it again)"
        )
        if sys.stdin.isatty():
            # Keep the API up for the console; a script (no terminal) is not held.
            with contextlib.suppress(EOFError, KeyboardInterrupt):
                input("Press Enter to stop the API and the worker. ")
        return rc
    finally:
        stop_services(procs)
