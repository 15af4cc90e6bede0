"""``lethe demo --generation``: a diffusion model forgets a class on the embedded default, through
the same API, worker and certificate as ``lethe demo``'s classifier (whose startup this reuses).

Steps: start both processes, create a tenant, register scikit-learn's 8x8 digits, train a tiny
class-conditional denoiser on them in this process, upload it (the worker checks it, trains an
evaluator and records a generation baseline with sample grids), forget class 3 with SFR-on, save
the before/after grids, download the new version and verify its certificate offline.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from app.client import LetheClient
from app.demo import (
    _ProgressLine,
    create_demo_tenant,
    start_services,
    stop_services,
    verify_offline,
)

FORGET = 3

# Fewer and shorter generations than the service's defaults, so that the demo stays within a few
# minutes on two shared cores; `bench/generation.py` measures the method at full size. One torch
# thread: small convolutions run much faster on one than on two of a shared CPU.
WORKER_ENV = {
    "LETHE_TORCH_THREADS": "1",
    "LETHE_GENERATION_FORGET_SAMPLES": "32",
    "LETHE_GENERATION_KEPT_SAMPLES": "8",
    "LETHE_GENERATION_SAMPLING_STEPS": "10",
    "LETHE_GENERATION_GRID_SAMPLES": "8",
    "LETHE_GENERATION_EVALUATOR_EPOCHS": "8",
}
# SFR-on iterations (the method's default is 150): enough for the tiny denoiser.
ITERATIONS = 60


def _metrics_table(outcome: dict[str, Any]) -> None:
    print("\n| model | FA (class 3) | kept accuracy | FD (kept classes) |")
    print("|---|---|---|---|")
    for subject, label in (("original", "original"), ("unlearned", f"new ({outcome['method']})")):
        m = outcome["metrics"][subject]
        print(f"| {label} | {m['FA']:.1f} | {m['kept_accuracy']:.1f} | {m['fd_pooled']:.2f} |")
    print(
        "\nHow to read it: the service's evaluator (a classifier it trained on the dataset)"
        f" labels the images each version generates. FA is the share of images generated for"
        f" class {FORGET} that it still recognises as {FORGET} (near 0 once forgotten); kept"
        " accuracy the same for the other classes (should stay); FD the Frechet distance of the"
        " kept classes' images to real test images in the evaluator's features (lower is better)."
    )


def run_generation_demo(*, data_dir: Path, port: int) -> int:
    from app.datasets import sources
    from app.unlearning.diffusion.tiny import tiny_denoiser_spec, train_tiny_denoiser

    started = time.monotonic()
    up = start_services(data_dir, port, title="Lethe demo, generation", extra_env=WORKER_ENV)
    if up is None:
        return 1
    settings, url, procs = up
    try:
        api_key, _ = create_demo_tenant(settings)
        arrays = sources.digits()
        manifest = sources.write_manifest(arrays, data_dir / "digits.safetensors")
        with LetheClient(url, api_key) as client:
            ds = client.upload_dataset(manifest, name="digits")
            print(
                f"3. dataset 'digits' registered: {ds['num_samples']} training samples,"
                f" {ds['num_classes']} classes, digest {ds['train_digest'][:12]}..."
            )
            print("4. training a tiny class-conditional denoiser (DDPM UNet) on it")
            bar = _ProgressLine()
            weights_bytes = train_tiny_denoiser(
                arrays["images"],
                arrays["labels"],
                num_classes=ds["num_classes"],
                progress=lambda p: bar.show("training", int(p["step"]), int(p["total"])),
            )
            bar.close()
            weights = data_dir / "denoiser.safetensors"
            weights.write_bytes(weights_bytes)
            mv = client.upload_model(weights, tiny_denoiser_spec(ds["id"]))
            print(
                f"5. model uploaded (version {mv['version']}, status {mv['status']}); the worker"
                " checks it, trains an evaluator and generates a baseline"
            )
            job = client.wait_for_job(mv["validation_job_id"], timeout=600)
            mv = client.get_model(mv["id"])
            if mv["status"] != "ready":
                print(f"   the model was {mv['status']}: {mv['status_reason']}", file=sys.stderr)
                return 1
            base = mv["baseline_metrics"]
            print(
                f"   {job['state']}: status {mv['status']}; kept accuracy of its images"
                f" {base['kept_accuracy']:.1f}%, FD {base['fd_pooled']:.2f} (evaluator test"
                f" accuracy {base['evaluator']['test_accuracy']:.1f}%)"
            )
            original_id = mv["id"]
            # Superseded versions (and their sample grids) are kept a day before the purge
            # destroys them, so that the "before" grids can still be fetched below.
            client.patch_tenant_settings({"retention_days": 1})
            fr = client.forget(
                original_id,
                class_ids=[FORGET],
                config={"iterations": ITERATIONS},
                reason=f"licence for class {FORGET} withdrawn",
            )
            print(
                f"6. forget class {FORGET}: request {fr['id'][:8]}, job {fr['job_id'][:8]} queued"
            )
            line = _ProgressLine()
            job = client.wait_for_job(fr["job_id"], timeout=900, on_update=line.job)
            line.close()
            if job["state"] != "succeeded":
                print(f"   job {job['state']}: {job['error']}", file=sys.stderr)
                return 1
            outcome = job["outcome"]
            new_id = job["result_model_id"]
            print(f"   version {outcome['new_version']} created; verdict {outcome['verdict']}")

            grids = {
                "before-all.png": client.sample_grid(original_id),
                "after-all.png": client.sample_grid(new_id),
                f"before-class{FORGET}.png": client.sample_grid(original_id, class_id=FORGET),
                f"after-class{FORGET}.png": client.sample_grid(new_id, class_id=FORGET),
            }
            print("7. sample grids (one row per class, same seeds before and after):")
            for name, png in grids.items():
                (data_dir / name).write_bytes(png)
                print(f"   {(data_dir / name).resolve()}")

            # An uncertified version (it failed the gate) is only served on request; the demo
            # takes it anyway so that `lethe verify` can say why it fails.
            out = client.download_weights(
                new_id, data_dir / "unlearned.safetensors", allow_uncertified=True
            )
            (data_dir / "certificate.json").write_text(json.dumps(client.certificate(new_id)))
            (data_dir / "signing-keys.json").write_text(json.dumps(client.signing_keys()))
            print("8. downloaded the new version; `lethe verify` checks its certificate:")
            rc = verify_offline(data_dir, data_dir / "certificate.json", out)
            _metrics_table(outcome)
        wall = time.monotonic() - started
        # What the run printed, as data (the README's figures come from one of these).
        summary = {
            "command": "lethe demo --generation",
            "forgotten_class": FORGET,
            "iterations": ITERATIONS,
            "worker_env": WORKER_ENV,
            "baseline": {k: base[k] for k in ("kept_accuracy", "fd_pooled")},
            "metrics": {
                subject: {
                    k: outcome["metrics"][subject][k] for k in ("FA", "kept_accuracy", "fd_pooled")
                }
                for subject in ("original", "unlearned")
            },
            "method": outcome["method"],
            "verdict": outcome["verdict"],
            "verify_rc": rc,
            "wall_time_s": round(wall, 1),
            "grids": sorted(grids),
        }
        (data_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"\nDone in {wall:.0f} s. State is in {data_dir}/ (delete it freely).")
        return rc
    finally:
        stop_services(procs)
