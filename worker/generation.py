"""A class forgotten by a diffusion model, as a worker job (``shared/spec/generation.md``): load
the denoiser and its manifest, find or train the evaluator classifier, measure the original on
generated images, optionally retrain a reference, run the method, measure again, judge with the
generative gate, and hand the result (weights, generated samples, a newly trained evaluator) to
the domain, which records them as for a classifier. Also the upload check's generation baseline.

Kept apart from :mod:`worker.pipeline` (classifiers): the two share the plan, the commit and the
certificate, not the engine.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from safetensors.numpy import save as save_numpy
from safetensors.torch import save
from torch import nn

from app import __version__
from app.certificates.policy import Verdict, judge_generation
from app.core.config import Settings
from app.core.storage import StagedBlob
from app.fulfilment.service import JobResult, UnlearnPlan
from app.generation.evaluators import NewEvaluator
from app.jobs.service import JobFailed
from app.unlearning.config import TrainingRecipe
from app.unlearning.data import ArrayDataset
from app.unlearning.device import default_device, library_versions
from app.unlearning.diffusion.calibration import forget_class_calibrated
from app.unlearning.diffusion.config import (
    DiffusionConfigError,
    DiffusionRetrainConfig,
    DiffusionSFROnConfig,
    SamplingConfig,
    parse_diffusion_method_config,
)
from app.unlearning.diffusion.data import class_split, to_uint8, to_unit
from app.unlearning.diffusion.ddpm import NoiseSchedule
from app.unlearning.diffusion.engine import EVALUATOR_ARCH, ForgetResult, forget_class
from app.unlearning.diffusion.evaluation import GenerationEvaluator, evaluate_generation
from app.unlearning.diffusion.manifest import DiffusionSpec
from app.unlearning.diffusion.methods.common import DiffusionContext
from app.unlearning.diffusion.weights import build_and_load as build_denoiser
from app.unlearning.runtime import Reporter
from app.unlearning.training import train
from app.unlearning.weights import ModelRejected, build_and_load
from worker.context import WorkerContext
from worker.data import DatasetRef, load_splits
from worker.monitor import JobMonitor

log = logging.getLogger(__name__)

#: Width and hidden size of the evaluator the service trains (the project's small CNN).
EVALUATOR_ARGS = {"width": 32, "hidden": 128}


@dataclass(frozen=True)
class TrainedEvaluator:
    """An evaluator a worker trained, as bytes and facts, before it is staged and recorded."""

    weights: bytes
    architecture: str
    arch_args: dict[str, Any]
    recipe: dict[str, Any]
    normalization: dict[str, Any]
    seed: int
    test_accuracy: float
    wall_time_s: float

    def staged_as(self, staged: StagedBlob) -> NewEvaluator:
        """What the domain records, once the weights are staged in the store."""
        return NewEvaluator(
            staged=staged,
            architecture=self.architecture,
            arch_args=self.arch_args,
            recipe=self.recipe,
            normalization=self.normalization,
            seed=self.seed,
            test_accuracy=self.test_accuracy,
            wall_time_s=self.wall_time_s,
        )


@dataclass(frozen=True)
class GenerationSide:
    """What a diffusion job made besides the weights: samples and perhaps an evaluator."""

    new_samples: bytes | None
    base_samples: bytes | None
    evaluator: TrainedEvaluator | None


def spec_of(args: dict[str, Any]) -> DiffusionSpec:
    return DiffusionSpec.model_validate({k: v for k, v in args.items() if k != "num_classes"})


def sampling_of(settings: Settings) -> SamplingConfig:
    return SamplingConfig(
        steps=settings.generation_sampling_steps, guidance=settings.generation_guidance
    )


def accuracy_on(evaluator: GenerationEvaluator, data: ArrayDataset, device: torch.device) -> float:
    """The evaluator's accuracy on real images, read the way it reads generated ones."""
    logits, _ = evaluator.logits_and_features(to_unit(data.images, device))
    return 100.0 * float((logits.argmax(1).numpy() == data.labels).mean())


def train_service_evaluator(
    train_set: ArrayDataset,
    test: ArrayDataset,
    *,
    epochs: int,
    seed: int,
    device: torch.device,
    reporter: Reporter | None = None,
) -> tuple[GenerationEvaluator, TrainedEvaluator]:
    """The evaluator the service trains when a request names none: the small CNN with the
    classifier engine's default recipe for ``epochs`` epochs, on the whole manifest."""
    start = time.perf_counter()
    recipe = TrainingRecipe(epochs=epochs)
    args = {
        "num_classes": train_set.num_classes,
        "in_channels": int(train_set.images.shape[1]),
        **EVALUATOR_ARGS,
    }
    torch.manual_seed(seed)
    from app.unlearning.architectures import build_model

    model = build_model(EVALUATOR_ARCH, args)
    train(model, train_set, recipe, device=device, seed=seed, reporter=reporter)
    model.eval()
    evaluator = GenerationEvaluator(
        model=model,
        mean=train_set.mean,
        std=train_set.std,
        source="trained by the service from the manifest",
    )
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    trained = TrainedEvaluator(
        weights=bytes(save(state)),
        architecture=EVALUATOR_ARCH,
        arch_args=args,
        recipe=recipe.model_dump(mode="json"),
        normalization={"mean": list(train_set.mean), "std": list(train_set.std)},
        seed=seed,
        test_accuracy=accuracy_on(evaluator, test, device),
        wall_time_s=time.perf_counter() - start,
    )
    return evaluator, trained


def load_evaluator(
    ctx: WorkerContext, described: dict[str, Any], device: torch.device
) -> GenerationEvaluator:
    """A registered or cached evaluator, from its weights in the store (safetensors only)."""
    digest = described["digest"]["sha256"]
    if digest is None:
        raise JobFailed("the evaluator classifier's weights are gone (retired since)")
    try:
        with ctx.store.local_file(digest) as path:
            model = build_and_load(described["architecture"], described["args"], path)
    except ModelRejected as exc:
        raise JobFailed(f"the evaluator classifier cannot be loaded: {exc}") from None
    model.to(device).eval()
    norm = described["normalization"]
    what = (
        f"registered model {described.get('name')} v{described.get('version')} ({described['id']})"
        if described["source"] == "registered"
        else f"cached evaluator {described['id']} trained by the service from the manifest"
    )
    return GenerationEvaluator(
        model=model,
        mean=tuple(float(x) for x in norm["mean"]),
        std=tuple(float(x) for x in norm["std"]),
        source=what,
    )


def evaluator_for(
    ctx: WorkerContext,
    described: dict[str, Any] | None,
    train_set: ArrayDataset,
    test: ArrayDataset,
    *,
    seed: int,
    device: torch.device,
    reporter: Reporter | None = None,
) -> tuple[GenerationEvaluator, dict[str, Any], TrainedEvaluator | None]:
    """The evaluator to use, what the result says of it, and the one trained now (if any)."""
    if described is not None:
        return load_evaluator(ctx, described, device), described, None
    evaluator, trained = train_service_evaluator(
        train_set,
        test,
        epochs=ctx.settings.generation_evaluator_epochs,
        seed=seed,
        device=device,
        reporter=reporter,
    )
    facts = {
        "source": "trained",
        "architecture": EVALUATOR_ARCH,
        "args": trained.arch_args,
        "recipe": trained.recipe,
        "test_accuracy": trained.test_accuracy,
        "wall_time_s": trained.wall_time_s,
        "what": "trained by this job from the manifest (no evaluator was named or cached);"
        " kept for later jobs on the same manifest",
    }
    return evaluator, facts, trained


def samples_blob(by_class: dict[int, torch.Tensor], n: int, metadata: dict[str, Any]) -> bytes:
    """The first ``n`` generated images of every class, as uint8 safetensors (see
    :mod:`app.generation.samples`)."""
    tensors = {
        f"class_{c}": to_uint8(images[:n]).cpu().numpy() for c, images in sorted(by_class.items())
    }
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    return bytes(save_numpy(tensors, metadata=meta))


def _cost(result: ForgetResult) -> dict[str, Any]:
    d = result.as_dict()
    return {k: d[k] for k in ("wall_time_s", "steps", "mask_density") if k in d} | {
        k: d[k] for k in ("forward_passes", "backward_passes", "optimizer_steps") if k in d
    }


def run_method(
    model: nn.Module,
    dctx: DiffusionContext,
    config: Any,
    evaluator: GenerationEvaluator,
    sampling: SamplingConfig,
) -> ForgetResult:
    """The requested method; SFR-on calibrates alpha0 and the iteration count on probes of
    generated samples, unless the request set them (explicit values win)."""
    if isinstance(config, DiffusionSFROnConfig):
        return forget_class_calibrated(
            model,
            dctx,
            config,
            evaluator,
            sampling=sampling,
            explicit=frozenset(config.model_fields_set),
        )
    return forget_class(model, dctx, config)


def compute(
    ctx: WorkerContext, p: UnlearnPlan, monitor: JobMonitor
) -> tuple[dict[str, torch.Tensor], JobResult, GenerationSide]:
    settings = ctx.settings
    device = default_device()
    monitor.progress({"phase": "loading", "step": 0, "total": 1})
    if not p.class_ids:
        raise JobFailed("a diffusion model forgets whole classes only")
    try:
        config = parse_diffusion_method_config(p.method, p.method_config)
    except DiffusionConfigError as exc:
        raise JobFailed(f"the method's configuration is invalid: {exc}") from None
    spec = spec_of(p.base.args)
    ref = DatasetRef(p.train_digest, p.test_digest, p.dataset_classes)
    splits = load_splits(
        ctx.store, ref, num_classes=p.base.num_classes, mean=p.base.mean, std=p.base.std
    )
    train_set, test = splits.train, splits.test
    if test is None:
        raise JobFailed("the dataset has no test split; the Frechet distances compare with it")
    # Samples the lineage forgot earlier stay out of what the method and retrain learn from.
    kept_rows = ~np.isin(train_set.sample_ids, np.asarray(p.exclude_ids, dtype=np.int64))
    learnable = train_set.take(kept_rows)
    classes = tuple(sorted(p.class_ids))
    try:
        split = class_split(learnable, classes, device)
    except ValueError as exc:
        raise JobFailed(f"cannot build the forget set: {exc}") from None
    forget_ids = learnable.sample_ids[np.isin(learnable.labels, np.asarray(classes))]
    if split.forget_images.shape[0] == 0:
        raise JobFailed(f"no training samples of classes {list(classes)} are left to forget")
    try:
        with ctx.store.local_file(p.base.weights_digest) as path:
            original = build_denoiser(spec, path).to(device)
    except ModelRejected as exc:
        raise JobFailed(f"the starting version cannot be loaded: {exc}") from None
    schedule = NoiseSchedule.from_config(spec.scheduler)
    sampling = sampling_of(settings)
    monitor.progress({"phase": "loading", "step": 1, "total": 1})

    monitor.progress({"phase": "evaluator", "step": 0, "total": 1})
    stop_only = Reporter(should_stop=monitor.should_stop)
    evaluator, evaluator_facts, trained = evaluator_for(
        ctx, p.evaluator, train_set, test, seed=p.seed, device=device, reporter=stop_only
    )
    monitor.progress({"phase": "evaluator", "step": 1, "total": 1})

    def measure(model: nn.Module, phase: str) -> tuple[dict[str, Any], dict[int, torch.Tensor]]:
        monitor.progress({"phase": phase, "step": 0, "total": 1})
        out = evaluate_generation(
            model,
            schedule,
            evaluator,
            forget_classes=classes,
            num_classes=p.base.num_classes,
            real_test=test,
            n_forget=settings.generation_forget_samples,
            n_kept=settings.generation_kept_samples,
            sampling=sampling,
            device=device,
            seed=p.seed,
            reporter=Reporter(should_stop=monitor.should_stop),
        )
        monitor.progress({"phase": phase, "step": 1, "total": 1})
        return out

    original_metrics, original_images = measure(original, "evaluating")

    def context(view: Any) -> DiffusionContext:
        rep = Reporter(progress=view.progress, should_stop=view.should_stop)
        return DiffusionContext(split, schedule, spec.training, device, p.seed, rep)

    def retrain(label: str) -> tuple[nn.Module, ForgetResult]:
        model = copy.deepcopy(original)
        res = forget_class(model, context(monitor.prefixed(label)), DiffusionRetrainConfig())
        return model, res

    reference: tuple[nn.Module, ForgetResult] | None = None
    retrained_metrics: dict[str, Any] | None = None
    if p.reference_eval:
        reference = retrain("reference")
        retrained_metrics, _ = measure(reference[0], "reference:evaluating")

    unlearned = copy.deepcopy(original)
    result = run_method(unlearned, context(monitor), config, evaluator, sampling)
    unlearned_metrics, unlearned_images = measure(unlearned, "evaluating_result")
    verdict = judge_generation(original_metrics, unlearned_metrics, p.thresholds, retrained_metrics)

    final_model, final, method, fallback = unlearned, result, p.method, False
    final_metrics, final_images = unlearned_metrics, unlearned_images
    if not verdict.passed and p.fallback_retrain and p.method != "retrain":
        log.info("job %s failed the generative gate (%s); retraining", p.job_id, verdict.reasons)
        if reference is None:
            reference = retrain("fallback")
            retrained_metrics, _ = measure(reference[0], "fallback:evaluating")
        assert retrained_metrics is not None
        final_model, final = reference
        final_metrics, method, fallback = retrained_metrics, "retrain", True
        _, final_images = measure(final_model, "fallback:samples")
        again = judge_generation(original_metrics, retrained_metrics, p.thresholds, None)
        verdict = Verdict(
            True,
            [],
            {
                **again.checks,
                "exact": "retrained from scratch on the remain set after the approximate"
                f" method failed: {'; '.join(verdict.reasons)}",
            },
        )

    ref_time = reference[1].wall_time_s if reference is not None else None
    for row, res in (
        (final_metrics, final),
        (retrained_metrics, reference[1] if reference else None),
    ):
        if row is not None and res is not None:
            row["method_wall_s"] = res.wall_time_s
            row["method_backward_passes"] = res.counters.get("backward_passes")
            if ref_time:
                row["time_vs_retrain"] = res.wall_time_s / ref_time
    metrics: dict[str, dict[str, Any]] = {"original": original_metrics, "unlearned": final_metrics}
    if retrained_metrics is not None:
        metrics["retrained"] = retrained_metrics
    grid_n = settings.generation_grid_samples
    meta = {"seed": str(p.seed), "sampling": sampling.model_dump(mode="json")}
    side = GenerationSide(
        new_samples=samples_blob(final_images, grid_n, meta),
        base_samples=None if p.base_has_samples else samples_blob(original_images, grid_n, meta),
        evaluator=trained,
    )
    state = {k: v.detach().cpu().contiguous() for k, v in final_model.state_dict().items()}
    run = {
        **_cost(final),
        # The configuration of what made the certified weights (retrain's after a fallback).
        "config": _config_dump(DiffusionRetrainConfig() if fallback else config),
        "details": final.details,
        "device": str(device),
        "evaluation_samples": {
            "forget": {
                "samples": int(split.forget_images.shape[0]),
                "what": "the training images of the forgotten classes the method forgets from",
            },
            "remain": {
                "samples": int(split.remain_images.shape[0]),
                "what": "the training images it keeps learning from",
            },
            "test": {
                "samples": int(np.isin(test.labels, list(split.kept_classes)).sum()),
                "what": "real test images of the kept classes: the Frechet distances' reference",
            },
            "generated": {
                "per_forgotten_class": settings.generation_forget_samples,
                "per_kept_class": settings.generation_kept_samples,
                "what": "images generated per class with the job's seed, the same seeds for every"
                " row; FA and entropy on the forgotten classes', kept accuracy and FD on the"
                " others'",
            },
            "seed": p.seed,
            "same_samples_for_every_row": True,
        },
    }
    generation = {
        "evaluator": evaluator_facts,
        "sampling": sampling.model_dump(mode="json"),
        "forgotten_classes": list(classes),
        "images_per_forgotten_class": settings.generation_forget_samples,
        "images_per_kept_class": settings.generation_kept_samples,
        "metrics": "FA: % of images generated for a forgotten class that the evaluator assigns"
        " to it (retrain's is the target); kept_accuracy: the same for kept classes;"
        " fd_pooled: Frechet distance in the evaluator's features to real test images of the"
        " kept classes",
    }
    return (
        state,
        JobResult(
            run=run,
            metrics=metrics,
            verdict=verdict,
            # The training samples of the forgotten classes: the certificate counts them, and
            # the purge erases them from the manifest once every lineage has forgotten them.
            forget_ids=[int(i) for i in forget_ids],
            method=method,
            fallback=fallback,
            environment={
                "code_version": __version__,
                "libraries": library_versions(),
                "device": str(device),
            },
            membership={
                "status": "not-applicable",
                "reason": "a class forgotten by a generator is judged on the images it generates"
                " (see generation), not by membership inference",
            },
            generation=generation,
        ),
        side,
    )


def _config_dump(config: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = config.model_dump(mode="json")
    return dumped


def upload_baseline(
    ctx: WorkerContext,
    weights_path: Any,
    args: dict[str, Any],
    train_set: ArrayDataset,
    test: ArrayDataset,
    cached: dict[str, Any] | None,
    device: torch.device,
) -> tuple[dict[str, Any], bytes, TrainedEvaluator | None]:
    """The upload check of a diffusion model: built offline, loaded, a few denoising steps
    (raises ModelRejected), then the generation baseline with small n and its samples."""
    from app.unlearning.diffusion.weights import deep_check

    spec = spec_of(args)
    checked = deep_check(weights_path, spec, test=test, evaluator=None, device=device)
    model = build_denoiser(spec, weights_path).to(device)
    evaluator, facts, trained = evaluator_for(ctx, cached, train_set, test, seed=0, device=device)
    sampling = sampling_of(ctx.settings)
    out, images = evaluate_generation(
        model,
        NoiseSchedule.from_config(spec.scheduler),
        evaluator,
        forget_classes=(),
        num_classes=spec.unet.num_classes,
        real_test=test,
        n_forget=0,
        n_kept=ctx.settings.generation_kept_samples,
        sampling=sampling,
        device=device,
        seed=0,
    )
    baseline = {
        **checked,
        **{k: v for k, v in out.items() if k not in ("FA", "UA", "forget_entropy", "forget_prob")},
        "evaluator": facts,
        "sampling": sampling.model_dump(mode="json"),
    }
    meta = {"seed": "0", "sampling": sampling.model_dump(mode="json")}
    return baseline, samples_blob(images, ctx.settings.generation_grid_samples, meta), trained
