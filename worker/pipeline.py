"""One unlearning job in the worker: read the plan, run the engine (evaluate the original,
optionally retrain a reference, unlearn, judge), and hand the result to the domain, which commits
the new version, its metrics and its certificate in one transaction. Failures and cancellations
leave no version behind; how a job ends is decided by :mod:`app.jobs.service`."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel
from safetensors.torch import save
from torch import nn

from app import __version__
from app.certificates import service as certificates
from app.certificates.policy import Verdict, judge, membership_checks
from app.core.db import session_scope
from app.core.storage import StoreError
from app.fulfilment import service as fulfilment
from app.fulfilment.service import JobResult, SideArtifacts, UnlearnPlan
from app.jobs import service as jobs
from app.jobs.service import JobFailed
from app.models.job import JobState
from app.unlearning.architectures import build_model
from app.unlearning.config import (
    OriginalTraining,
    RetrainConfig,
    SFROnConfig,
    TrainingRecipe,
    parse_method_config,
)
from app.unlearning.data import Split, build_split
from app.unlearning.device import default_device, library_versions
from app.unlearning.engine import Cancelled, UnlearnResult, evaluate, unlearn
from app.unlearning.reference_kit import (
    MemberTargets,
    ReferenceKit,
    ReferenceKitError,
    audit_model,
    model_phi,
)
from app.unlearning.weights import ModelRejected, build_and_load
from worker.context import WorkerContext
from worker.data import DatasetRef, load_splits
from worker.generation import GenerationSide
from worker.jobs import owned_for_update, stage_bytes
from worker.monitor import JobMonitor

log = logging.getLogger(__name__)


def plan(ctx: WorkerContext, job_id: str) -> UnlearnPlan:
    try:
        certificates.signer_for(ctx.settings)
    except (OSError, ValueError) as exc:
        # Checked first: no point in unlearning what cannot be certified.
        raise JobFailed(f"the worker cannot sign certificates: {exc}") from None
    with session_scope(ctx.sessionmaker) as s:
        return fulfilment.plan(s, ctx.settings, job_id)


def original_training(training: dict[str, Any], n_samples: int) -> OriginalTraining:
    recipe = TrainingRecipe.model_validate(
        {k: v for k, v in training.items() if k in TrainingRecipe.model_fields}
    )
    steps = training.get("optimizer_steps") or recipe.epochs * -(-n_samples // recipe.batch_size)
    return OriginalTraining(recipe=recipe, optimizer_steps=int(steps))


def compute(
    ctx: WorkerContext, p: UnlearnPlan, monitor: JobMonitor
) -> tuple[dict[str, torch.Tensor], JobResult]:
    device = default_device()
    monitor.progress({"phase": "loading", "step": 0, "total": 1})
    ref = DatasetRef(p.train_digest, p.test_digest, p.dataset_classes)
    splits = load_splits(
        ctx.store, ref, num_classes=p.base.num_classes, mean=p.base.mean, std=p.base.std
    )
    train, test, validation = splits.train, splits.test, splits.validation
    if test is None:
        raise JobFailed("the dataset has no test split; register it with one to unlearn")
    if p.gone_classes:
        gone = np.asarray(p.gone_classes, dtype=np.int64)
        test = test.take(~np.isin(test.labels, gone))
        if validation is not None:
            validation = validation.take(~np.isin(validation.labels, gone))
    try:
        split = build_split(
            train,
            test,
            forget_ids=p.sample_ids,
            forget_classes=p.class_ids,
            exclude_ids=p.exclude_ids,
            validation=validation,
            validation_fraction=VALIDATION_FRACTION,
            seed=p.seed,
        )
    except ValueError as exc:
        raise JobFailed(f"cannot build the forget set: {exc}") from None
    coverage = evaluation_samples(split, own_validation=validation is not None, p=p)
    try:
        with ctx.store.local_file(p.base.weights_digest) as path:
            model = build_and_load(p.base.architecture, p.base.args, path)
    except ModelRejected as exc:
        raise JobFailed(f"the starting version cannot be loaded: {exc}") from None
    original = original_training(p.base.training, len(train))
    monitor.progress({"phase": "loading", "step": 1, "total": 1})

    monitor.progress({"phase": "evaluating", "step": 0, "total": 1})
    original_metrics, _ = evaluate(model, split, device=device, seed=p.seed)
    if monitor.should_stop():
        raise Cancelled("stopped on request")

    def retrain(label: str) -> UnlearnResult:
        view = monitor.prefixed(label)
        return unlearn(
            model,
            split,
            RetrainConfig(),
            original=original,
            device=device,
            seed=p.seed,
            progress=view.progress,
            should_stop=view.should_stop,
        )

    reference = retrain("reference") if p.reference_eval else None
    config = parse_method_config(p.method, p.method_config)
    kit = read_kit(ctx, p)  # once: the targets and every audit of this job use it
    targets, targets_note = member_targets(
        p, kit, split, model, config, device, own_validation=validation is not None
    )
    result = unlearn(
        model,
        split,
        config,
        original=original,
        device=device,
        seed=p.seed,
        progress=monitor.progress,
        should_stop=monitor.should_stop,
        reference=reference.as_reference() if reference else None,
        member_targets=targets,
    )
    if targets_note is not None:
        result.record["details"]["kit_targets_unavailable"] = targets_note
    audited: dict[str, UnlearnResult | None] = {"unlearned": result, "retrained": reference}
    membership = membership_audit(p, kit, split, model, audited, device, monitor)
    verdict = judge(
        p.kind,
        original_metrics,
        result.metrics,
        p.thresholds,
        reference.metrics if reference else None,
        membership,
    )
    final, method, fallback = result, p.method, False
    if not verdict.passed and p.fallback_retrain and p.method != "retrain":
        # The exact answer: train from scratch on the remain set, and certify that instead.
        log.info("job %s failed the policy gate (%s); retraining", p.job_id, verdict.reasons)
        if reference is None:
            reference = retrain("fallback")
        final, method, fallback = reference, "retrain", True
        if membership is not None and "audits" in membership:
            audits = membership["audits"]
            if "retrained" not in audits:
                # Retrained only now: audit it, so that the certificate's per-example figures
                # are those of the model it certifies, not of the one that failed.
                again = membership_audit(
                    p, kit, split, model, {"retrained": reference}, device, monitor
                )
                if again is not None and "audits" in again:
                    audits["retrained"] = again["audits"]["retrained"]
            # What is certified now is the retrained model: its audit is the new version's;
            # the approximate method's failed one stays beside it, for the record.
            audits["approximate"] = audits.pop("unlearned")
            if "retrained" in audits:
                audits["unlearned"] = audits["retrained"]
        verdict = Verdict(
            True,
            [],
            {
                "exact": "retrained from scratch on the remain set after the approximate"
                f" method failed: {'; '.join(verdict.reasons)}",
                # Reported for the certified (retrained) model, as for any other version.
                "membership": membership_checks(p.kind, membership)[0],
            },
        )
    metrics = {"original": original_metrics, "unlearned": final.metrics}
    if reference is not None:
        metrics["retrained"] = reference.metrics
    return final.state_dict, JobResult(
        run={**final.record, "evaluation_samples": coverage},
        metrics=metrics,
        verdict=verdict,
        forget_ids=[int(i) for i in split.forget.sample_ids],
        method=method,
        fallback=fallback,
        membership=membership,
        environment={
            "code_version": __version__,
            "libraries": library_versions(),
            "device": final.record.get("device"),
        },
    )


# Without a validation split of its own, a job tunes on this share of the test split.
VALIDATION_FRACTION = 0.2


def evaluation_samples(split: Split, *, own_validation: bool, p: UnlearnPlan) -> dict[str, Any]:
    """Which samples each figure of the job covers, in words and counts, so that a user can
    reproduce them (and see why the model's baseline, measured on the whole test split, can
    differ from the job's "original" row, measured on the job's test samples)."""
    gone = (
        f"; test samples of classes {list(p.gone_classes)}, forgotten earlier in the lineage,"
        " are left out"
        if p.gone_classes
        else ""
    )
    if own_validation:
        test_what = "the manifest's whole test split" + gone
        validation_what = "the manifest's own validation split (tuning only, never reported)"
    else:
        test_what = (
            f"the manifest's test split minus a seeded {VALIDATION_FRACTION:.0%} held out for"
            " tuning: numpy.random.default_rng(seed).permutation(len(test)), the first"
            f" round({VALIDATION_FRACTION} * len(test)) positions are validation" + gone
        )
        validation_what = (
            f"{VALIDATION_FRACTION:.0%} of the test split (the manifest has no validation split;"
            " add validation_images/validation_labels to tune on data of your own)"
        )
    return {
        "forget": {"samples": len(split.forget), "what": "the training samples forgotten (FA)"},
        "remain": {
            "samples": len(split.remain),
            "what": "the training samples kept (RA); samples forgotten earlier are in neither",
        },
        "test": {"samples": len(split.test), "what": test_what + " (TA)"},
        "validation": {"samples": len(split.validation), "what": validation_what},
        "seed": p.seed,
        "same_samples_for_every_row": True,
    }


def read_kit(ctx: WorkerContext, p: UnlearnPlan) -> ReferenceKit | str | None:
    """The base's reference kit, read from the store; None when there is none, and why not when
    it cannot be read (reported by the audit, not fatal)."""
    if p.kit is None:
        return None
    try:
        with ctx.store.local_file(p.kit["digest"]) as path:
            return ReferenceKit.from_safetensors_bytes(path.read_bytes())
    except (ReferenceKitError, StoreError) as exc:
        log.warning("job %s: reference kit unreadable: %s", p.job_id, exc)
        return str(exc)


def member_targets(
    p: UnlearnPlan,
    kit: ReferenceKit | str | None,
    split: Split,
    original: nn.Module,
    config: BaseModel,
    device: torch.device,
    *,
    own_validation: bool,
) -> tuple[MemberTargets | None, str | None]:
    """Per forget sample, the kit's membership threshold for SFR-on's kit-targeted mode
    (sample-wise requests with a kit and ``kit_targets`` on); else None. The model's shift
    against the shadows is measured on the validation split, never on the test split the audit
    calibrates on. Returns why the targets could not be set when the mode applied but the kit
    could not serve it (the method then calibrates on its validation probe instead)."""
    if (
        kit is None
        or split.forget_classes
        or not isinstance(config, SFROnConfig)
        or not config.kit_targets
    ):
        return None, None
    if isinstance(kit, str):
        return None, kit
    try:
        targets = kit.forget_targets(
            split.forget.sample_ids,
            model_phi(original, split.validation, device),
            split.validation.sample_ids,
            # A manifest's own validation split is numbered in its own namespace, like its test
            # split: its table is "validation" (kits built since it was stored), never "test".
            table="validation" if own_validation else "test",
            margin=config.kit_margin,
        )
    except (ReferenceKitError, ValueError) as exc:
        log.warning("job %s: kit targets unavailable: %s", p.job_id, exc)
        return None, str(exc)
    return targets, None


def membership_audit(
    p: UnlearnPlan,
    kit: ReferenceKit | str | None,
    split: Split,
    original: nn.Module,
    results: dict[str, UnlearnResult | None],
    device: torch.device,
    monitor: JobMonitor,
) -> dict[str, Any] | None:
    """The per-example audit of the forget set under the original, the unlearned and (when it
    ran) the retrained model, against the base's reference kit (:func:`read_kit`); None without
    a kit. A kit that cannot be read or cannot audit this set (e.g. it predates samples it does
    not know) is reported, not fatal."""
    if p.kit is None or kit is None:
        return None
    monitor.progress({"phase": "membership_audit", "step": 0, "total": 1})
    header = {
        "kit": p.kit,
        "test": "offline likelihood-ratio test per example (LiRA, OUT shadows only); one attack"
        " family: evidence, not a proof",
    }
    if isinstance(kit, str):
        return {**header, "status": "unavailable", "reason": kit}
    try:
        models: dict[str, nn.Module] = {"original": original}
        for name, res in results.items():
            if res is not None:
                m = build_model(p.base.architecture, p.base.args)
                m.load_state_dict(res.state_dict)
                models[name] = m
        audits = {
            name: audit_model(kit, m, split.forget, split.test, device=device).as_dict()
            for name, m in models.items()
        }
    except (ReferenceKitError, ValueError) as exc:
        log.warning("job %s: membership audit unavailable: %s", p.job_id, exc)
        return {**header, "status": "unavailable", "reason": str(exc)}
    monitor.progress({"phase": "membership_audit", "step": 1, "total": 1})
    return {**header, "status": "ok", "audits": audits}


def commit(
    ctx: WorkerContext,
    p: UnlearnPlan,
    weights: dict[str, torch.Tensor],
    result: JobResult,
    monitor: JobMonitor,
    side: GenerationSide | None = None,
) -> str | None:
    """Stage the weights (and a diffusion job's samples and evaluator), then record the result
    under the job's lock. Returns the new version's ID, or None when this worker no longer owns
    the job."""
    monitor.progress({"phase": "saving", "step": 0, "total": 1})
    staged = stage_bytes(ctx, save(weights))
    blobs = [staged]
    try:
        extra: SideArtifacts | None = None
        if side is not None:
            new_samples = stage_bytes(ctx, side.new_samples) if side.new_samples else None
            base_samples = stage_bytes(ctx, side.base_samples) if side.base_samples else None
            blobs += [b for b in (new_samples, base_samples) if b is not None]
            trained = None
            if side.evaluator is not None:
                ev_blob = stage_bytes(ctx, side.evaluator.weights)
                blobs.append(ev_blob)
                trained = side.evaluator.staged_as(ev_blob)
            extra = SideArtifacts(new_samples, base_samples, trained)
        with session_scope(ctx.sessionmaker) as s:
            job = owned_for_update(s, p.job_id, p.attempt)
            if job is None:
                return None
            if job.cancel_requested:
                raise Cancelled("stopped on request")
            new = fulfilment.record(
                s,
                ctx.settings,
                ctx.store,
                certificates.signer_for(ctx.settings),
                job,
                p,
                result,
                staged,
                actor=f"worker:{ctx.name}",
                tasks=ctx.tasks,
                side=extra,
            )
            return new.id
    finally:
        for blob in blobs:
            blob.discard()


def finish_unsuccessfully(
    ctx: WorkerContext, job_id: str, attempt: int, state: JobState, reason: str
) -> None:
    with session_scope(ctx.sessionmaker) as s:
        job = owned_for_update(s, job_id, attempt)
        if job is not None:
            jobs.end(s, job, state, reason, actor=f"worker:{ctx.name}", tasks=ctx.tasks)
