"""``lethe demo``: the whole flow on the embedded default, through the same code paths as a
production deployment: a real API process, a real Celery worker (with a broker spool on disk
instead of Redis), SQLite instead of PostgreSQL, local artifacts.

Steps: start both processes, create a tenant, register a real dataset (scikit-learn's digits, or
Fashion-MNIST from Debian's package), train a small CNN on it, upload it, wait for the worker's
deep check, download the registered weights and check their digest.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from app.client import LetheClient


def _bar(label: str, done: int, total: int, extra: str = "") -> None:
    width = 28
    frac = min(1.0, done / total) if total else 1.0
    sys.stderr.write(
        f"\r  {label:<10} [{'#' * int(frac * width):<{width}}] {frac * 100:5.1f}% {extra}"
    )
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    # The child keeps its own copy of the descriptor; ours can close at once.
    with open(log, "wb") as fh:
        return subprocess.Popen(argv, env=env, stdout=fh, stderr=subprocess.STDOUT)


def run_demo(*, data_dir: Path, port: int, dataset: str) -> int:
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from app.core.config import Environment, Settings
    from app.core.db import make_engine, make_sessionmaker, session_scope
    from app.core.migrate import upgrade
    from app.datasets import sources
    from app.tenants import service as tenants
    from app.unlearning.architectures import build_model
    from app.unlearning.config import TrainingRecipe
    from app.unlearning.data import make_dataset
    from app.unlearning.training import train

    started = time.monotonic()
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
    env.update(LETHE_DATA_DIR=str(data_dir.resolve()), LETHE_ENVIRONMENT="development")
    settings = Settings(data_dir=data_dir.resolve(), environment=Environment.development)
    print(
        f"Lethe demo (embedded mode: {settings.resolved_database_url}, broker spool, local files)"
    )

    upgrade(settings.resolved_database_url)
    procs = [
        _spawn(
            [sys.executable, "-m", "app.cli", "api", "--port", str(port), "--log-level", "warning"],
            env,
            data_dir / "api.log",
        ),
        _spawn(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker.celery_app",
                "worker",
                "-Q",
                "cpu",
                "--pool",
                "solo",
                "--loglevel",
                "info",
            ],
            env,
            data_dir / "worker.log",
        ),
    ]
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        with LetheClient(url) as anon:
            while not anon.ready():
                if time.monotonic() > deadline or procs[0].poll() is not None:
                    print(f"the API did not start; see {data_dir / 'api.log'}", file=sys.stderr)
                    return 1
                time.sleep(0.3)
        print(f"1. API and worker running (API at {url})")

        with session_scope(make_sessionmaker(make_engine(settings.resolved_database_url))) as s:
            tenant, _, api_key = tenants.create_tenant(s, "demo")
            tenant_name = tenant.name
        print(f"2. tenant {tenant_name!r} created with an admin key")

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
            report = train(
                model,
                train_set,
                recipe,
                device=torch.device("cpu"),
                seed=0,
                progress=lambda p: _bar("training", int(p["step"]), int(p["total"])),
            )
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

            out = client.download_weights(mv["id"], data_dir / "downloaded.safetensors")
            digest = hashlib.sha256(out.read_bytes()).hexdigest()
            same = digest == mv["weights_digest"]
            print(
                f"6. downloaded {out.name}: sha256 {digest[:12]}... "
                f"{'matches' if same else 'DOES NOT MATCH'} the registry"
            )

            print("\n| version | status | train acc | test acc | digest |")
            print("|---|---|---|---|---|")
            for m in client.list_models(lineage_id=mv["lineage_id"]):
                b = m["baseline_metrics"] or {}
                print(
                    f"| {m['version']} | {m['status']} | {b.get('train_accuracy', '-')} |"
                    f" {b.get('test_accuracy', '-')} | {m['weights_digest'][:12]}... |"
                )
            print("\nPer-class test accuracy:", base["test_accuracy_per_class"])
        print(
            f"\nDone in {time.monotonic() - started:.0f} s. State is in {data_dir}/"
            " (delete it freely)."
        )
        return 0 if same else 1
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
