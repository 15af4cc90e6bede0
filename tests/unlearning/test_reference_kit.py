"""The reference kit: its IN/OUT layout, storage, ID mapping, erasure, and an end-to-end audit on
scikit-learn's digits (the original flagged on its training samples, retrain not on S)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import save as st_save
from torch import nn

from app.unlearning.architectures import build_model
from app.unlearning.config import MembershipAuditConfig, TrainingRecipe
from app.unlearning.data import ArrayDataset
from app.unlearning.evaluation.membership import SetAudit, binomial_tolerance
from app.unlearning.reference_kit import (
    KIT_FORMAT,
    PhiTable,
    ReferenceKit,
    ReferenceKitError,
    audit_model,
    balanced_halves,
    build_reference_kit,
)
from app.unlearning.runtime import Cancelled
from app.unlearning.training import train

from .conftest import CPU

# --------------------------------------------------------------------------------------------
# Layout, storage, mapping (no training)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [2, 7, 8, 16])
def test_balanced_halves_put_every_sample_in_half_the_shadows(k: int) -> None:
    m = balanced_halves(1000, k, seed=3)
    per_sample = m.sum(axis=0)
    assert set(per_sample.tolist()) <= {k // 2, k // 2 + k % 2}
    assert np.all(np.abs(m.sum(axis=1) - 500) < 5 * np.sqrt(250))  # each shadow ~ N/2
    np.testing.assert_array_equal(m, balanced_halves(1000, k, seed=3))
    assert not np.array_equal(m, balanced_halves(1000, k, seed=4))


def _kit(k: int = 4, n: int = 12, m: int = 6, seed: int = 0) -> ReferenceKit:
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.arange(100, 100 + n)).astype(np.int64)
    return ReferenceKit(
        sample_ids=ids,
        labels=rng.integers(0, 10, n).astype(np.int64),
        phi=rng.normal(2, 1, (k, n)).astype(np.float32),
        in_mask=balanced_halves(n, k, seed),
        extra={
            "test": PhiTable(
                sample_ids=np.arange(m, dtype=np.int64),
                labels=rng.integers(0, 10, m).astype(np.int64),
                phi=rng.normal(2, 1, (k, m)).astype(np.float32),
            )
        },
        recipe=TrainingRecipe(epochs=3),
        seed=seed,
        train_digest="abc",
        wall_time_s=1.5,
        optimizer_steps=40,
        shadows=tuple({"seed": i, "n_in": n // 2} for i in range(k)),
        meta={"architecture": "small_cnn"},
    )


def test_kit_round_trips_through_safetensors() -> None:
    kit = _kit()
    data = kit.to_safetensors_bytes()
    back = ReferenceKit.from_safetensors_bytes(data)
    for name in ("sample_ids", "labels", "phi", "in_mask"):
        np.testing.assert_array_equal(getattr(back, name), getattr(kit, name))
    assert back.in_mask.dtype == np.bool_
    np.testing.assert_array_equal(back.extra["test"].phi, kit.extra["test"].phi)
    assert back.metadata() == kit.metadata()
    assert back.recipe == TrainingRecipe(epochs=3)
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    assert header["__metadata__"]["format"] == KIT_FORMAT


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not a kit at all",
        (10**9).to_bytes(8, "little") + b"{}",
        bytes(st_save({"phi": np.zeros((2, 2), np.float32)})),
        bytes(st_save({"phi": np.zeros(1, np.float32)}, metadata={"format": KIT_FORMAT})),
    ],
)
def test_foreign_bytes_are_refused(data: bytes) -> None:
    with pytest.raises(ReferenceKitError):
        ReferenceKit.from_safetensors_bytes(data)


def test_tampered_arrays_are_refused() -> None:
    kit = _kit()
    meta = {"format": KIT_FORMAT, "kit": json.dumps(kit.metadata())}
    arrays: dict[str, Any] = {
        "sample_ids": kit.sample_ids,
        "labels": kit.labels,
        "phi": kit.phi,
        "in_mask": kit.in_mask.astype(np.uint8) * 2,  # not a 0/1 mask
        "extra.test.sample_ids": kit.extra["test"].sample_ids,
        "extra.test.labels": kit.extra["test"].labels,
        "extra.test.phi": kit.extra["test"].phi,
    }
    with pytest.raises(ReferenceKitError, match="in_mask"):
        ReferenceKit.from_safetensors_bytes(bytes(st_save(arrays, metadata=meta)))
    arrays["in_mask"] = kit.in_mask.astype(np.uint8)
    arrays["phi"] = kit.phi.astype(np.float64)
    with pytest.raises(ReferenceKitError, match="dtype"):
        ReferenceKit.from_safetensors_bytes(bytes(st_save(arrays, metadata=meta)))


def test_audit_maps_sample_ids_to_columns() -> None:
    kit = _kit(k=8, n=200, m=300, seed=1)
    rng = np.random.default_rng(2)
    forget = rng.choice(kit.sample_ids, 50, replace=False)
    cols = kit.columns(forget)
    np.testing.assert_array_equal(kit.sample_ids[cols], forget)
    phi_model = rng.normal(3, 1, kit.n)  # the model's phi on the training set, column order
    phi_test = rng.normal(3, 1, 300)
    a = kit.audit(phi_model[cols], forget, phi_test)
    order = rng.permutation(50)
    b = kit.audit(phi_model[cols][order], forget[order], phi_test)
    t_order = rng.permutation(300)
    c = kit.audit(phi_model[cols], forget, phi_test[t_order], nonmember_ids=t_order)
    assert a.as_dict() == b.as_dict() == c.as_dict()
    assert a.k == 8 and a.extra["test"] == "offline"
    assert a.extra["min_out_per_sample"] == 4
    assert set(a.extra["tolerance"]) == {"0.01", "0.05"}
    with pytest.raises(ReferenceKitError, match="1 sample IDs"):
        kit.audit(np.zeros(2), [int(forget[0]), -5], phi_test)
    with pytest.raises(ReferenceKitError, match="no extra set"):
        kit.audit(phi_model[cols], forget, phi_test, nonmember_set="validation")


def test_retiring_erased_samples_drops_their_shadows_and_columns() -> None:
    kit = _kit(k=8, n=40)
    erased = kit.sample_ids[:1]
    shrunk = kit.retire(erased)
    assert shrunk.k == 4 and shrunk.retired == 4  # the sample was IN for exactly K/2 shadows
    assert shrunk.n == 39 and int(erased[0]) not in shrunk.sample_ids
    kept = ~kit.in_mask[:, 0]  # the shadows that never saw the erased sample (column 0)
    assert [s["seed"] for s in shrunk.shadows] == [
        s["seed"] for s, keep in zip(kit.shadows, kept, strict=True) if keep
    ]
    np.testing.assert_array_equal(shrunk.phi, kit.phi[kept][:, 1:])
    np.testing.assert_array_equal(shrunk.in_mask, kit.in_mask[kept][:, 1:])
    assert shrunk.extra["test"].phi.shape == (4, 6)
    with pytest.raises(ReferenceKitError, match="rebuilt"):
        kit.retire(kit.sample_ids[:10])  # ten random samples touch nearly every shadow
    back = ReferenceKit.from_safetensors_bytes(shrunk.to_safetensors_bytes())
    assert back.retired == 4


# --------------------------------------------------------------------------------------------
# Building a kit
# --------------------------------------------------------------------------------------------


def _tiny_model() -> nn.Module:
    return build_model("small_cnn", {"num_classes": 10, "width": 4, "hidden": 8})


def test_build_records_the_table_progress_and_is_reproducible(
    digits: tuple[ArrayDataset, ArrayDataset],
) -> None:
    train_set, test_set = digits
    small, held_out = train_set.take(np.arange(64)), test_set.take(np.arange(32))
    recipe = TrainingRecipe(epochs=2, batch_size=16)
    updates: list[dict[str, Any]] = []
    kit = build_reference_kit(
        _tiny_model, small, {"test": held_out}, recipe, k=4, seed=5, device=CPU,
        progress=updates.append, meta={"architecture": "small_cnn"},
    )  # fmt: skip
    assert kit.phi.shape == (4, 64) and kit.extra["test"].phi.shape == (4, 32)
    assert np.isfinite(kit.phi).all() and kit.in_mask.sum(axis=0).tolist() == [2] * 64
    np.testing.assert_array_equal(kit.sample_ids, small.sample_ids)
    assert kit.train_digest == small.digest() and kit.meta == {"architecture": "small_cnn"}
    per_shadow = [2 * -(-int(n) // 16) for n in kit.in_mask.sum(axis=1)]
    assert [s["optimizer_steps"] for s in kit.shadows] == per_shadow
    assert kit.optimizer_steps == sum(per_shadow)
    steps = [u["step"] for u in updates]
    assert steps == sorted(steps) and steps[-1] == kit.optimizer_steps
    assert {u["phase"] for u in updates} == {"shadow_training"}
    assert {u["total"] for u in updates} == {kit.optimizer_steps}
    assert [u["shadow"] for u in updates][-1] == 3 and updates[0]["shadows"] == 4
    again = build_reference_kit(_tiny_model, small, {"test": held_out}, recipe, k=4, seed=5,
                                device=CPU)  # fmt: skip
    np.testing.assert_array_equal(again.phi, kit.phi)


def test_build_stops_on_request_and_refuses_overlapping_extra_sets(
    digits: tuple[ArrayDataset, ArrayDataset],
) -> None:
    small = digits[0].take(np.arange(32))
    recipe = TrainingRecipe(epochs=1, batch_size=16)
    calls = iter(range(1000))
    with pytest.raises(Cancelled):
        build_reference_kit(_tiny_model, small, {}, recipe, k=2, seed=0, device=CPU,
                            should_stop=lambda: next(calls) >= 2)  # fmt: skip
    with pytest.raises(ValueError, match="shares sample IDs"):
        build_reference_kit(_tiny_model, small, {"test": small.take(np.arange(4))}, recipe,
                            k=2, seed=0, device=CPU)  # fmt: skip


# --------------------------------------------------------------------------------------------
# End to end on digits
# --------------------------------------------------------------------------------------------
#
# Finding (K = 8): on the full digits training set (1348 samples) the small CNN generalises so
# well that per-example memorisation is weak: the original's AUC on its own training samples
# was 0.52-0.56 and its flagged share at 5% FPR 4-6%, indistinguishable from retrain. The
# signal appears when the model memorises: 300 training samples, lr 0.01 (less seed-to-seed
# variance of phi than 0.05: pooled OUT sd 1.3 against 3.6), 20 epochs (100% train accuracy,
# ~90% on unseen samples). Over five seeds of that setting the original's AUC on its 300
# training samples was 0.71-0.74, flagged share 5-11% at 1% FPR and 21-25% at 5%, epsilon
# lower bound 0.95-1.66 (cap 5.0); retrain on a random S of 100: AUC 0.42-0.49, 0-2% at 1%,
# 3-6% at 5%, epsilon 0. Retrain (200 samples) sits slightly *below* the test split on S (mean
# AUC 0.477 over six more seeds, low tail 6.2% at 5%), against 0.494 when |S| = 150 makes
# retrain's training set as large as a shadow's: a small residual of the size mismatch that the
# offset does not remove; it errs towards passing retrain, and is why the two-tail checks below
# use the binomial tolerance rather than alpha alone. The kit (800 optimizer steps = K/2
# trainings) took 4.6x the wall time of one training, the rest being phi passes.
ARGS = {"num_classes": 10, "width": 16, "hidden": 64}
RECIPE = TrainingRecipe(epochs=20, batch_size=32, lr=0.01)
N_TRAIN, N_FORGET, K_SHADOWS, SEED = 300, 100, 8, 2


@dataclass(frozen=True)
class World:
    train: ArrayDataset
    test: ArrayDataset
    forget: ArrayDataset
    kit: ReferenceKit
    original: nn.Module
    retrain: nn.Module
    train_time_s: float


def _fresh(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("small_cnn", ARGS)


@pytest.fixture(scope="module")
def world(digits: tuple[ArrayDataset, ArrayDataset]) -> World:
    # One thread: two OpenMP threads spin on the two shared cores and made this fixture 10x
    # slower under load; the figures below are the same with one or two threads. Restored after,
    # since other tests' trained models depend on the thread count.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _build_world(*digits)
    finally:
        torch.set_num_threads(threads)


def _build_world(full: ArrayDataset, test_set: ArrayDataset) -> World:
    rng = np.random.default_rng(SEED)
    train_set = full.take(np.sort(rng.choice(len(full), N_TRAIN, replace=False)))
    in_forget = np.isin(train_set.sample_ids, rng.choice(train_set.sample_ids, N_FORGET, False))
    original = _fresh(0)
    train(original, train_set, RECIPE, device=CPU, seed=0)
    retrain = _fresh(0)
    start = time.perf_counter()
    train(retrain, train_set.take(~in_forget), RECIPE, device=CPU, seed=0)
    train_time = (time.perf_counter() - start) * N_TRAIN / (N_TRAIN - N_FORGET)
    kit = build_reference_kit(
        lambda: build_model("small_cnn", ARGS), train_set, {"test": test_set}, RECIPE,
        k=K_SHADOWS, seed=SEED, device=CPU,
    )  # fmt: skip
    return World(
        train=train_set,
        test=test_set,
        forget=train_set.take(in_forget),
        kit=kit,
        original=original.eval(),
        retrain=retrain.eval(),
        train_time_s=train_time,
    )


def _report(name: str, audit: SetAudit) -> str:
    f1, f5 = audit.at(0.01), audit.at(0.05)
    return (
        f"{name}: n={audit.n} auc={audit.auc:.3f} flagged@1%={f1.share_flagged:.3f} "
        f"flagged@5%={f5.share_flagged:.3f} low@5%={f5.share_low:.3f} "
        f"eps={audit.epsilon:.2f} cap={audit.epsilon_cap:.2f}"
    )


def test_original_is_flagged_on_its_training_samples(world: World) -> None:
    audit = audit_model(world.kit, world.original, world.train, world.test, device=CPU)
    print(_report("original on its training set", audit))
    print(f"kit {world.kit.wall_time_s:.2f}s, one training ~{world.train_time_s:.2f}s")
    # Measured: auc 0.741, flagged 11.3% at 1% and 25.0% at 5%, eps 1.59 (cap 5.00).
    assert audit.auc > 0.65
    for alpha, floor in ((0.01, 0.05), (0.05, 0.15)):
        share = audit.at(alpha).share_flagged
        assert share > floor > alpha + binomial_tolerance(audit.n, alpha, n_calibration=449)
    assert audit.at(0.05).share_low < 0.03  # members are not less confident than non-members
    assert audit.epsilon > 0.7
    assert audit.epsilon <= audit.epsilon_cap


def test_retrain_is_not_flagged_on_the_forgotten_samples(world: World) -> None:
    config = MembershipAuditConfig()
    audit = audit_model(world.kit, world.retrain, world.forget, world.test, device=CPU)
    before = audit_model(world.kit, world.original, world.forget, world.test, device=CPU)
    print(_report("retrain on S", audit))
    print(_report("original on S", before))
    # Measured: retrain auc 0.415, 0% at 1%, 3% at 5% (low tail 5%), eps 0 (cap 4.98);
    # original on the same S: auc 0.726, 13% at 1%, 27% at 5%, eps 1.52.
    assert 0.35 < audit.auc < 0.6
    assert audit.epsilon < 0.5
    for alpha in config.alphas:
        tolerance = audit.extra["tolerance"][str(alpha)]
        assert audit.at(alpha).share_flagged <= alpha + tolerance
        assert audit.at(alpha).share_low <= alpha + tolerance  # nor over-forgotten
    # The gate's verdict on the untouched original: flagged beyond retrain's share + tolerance.
    tolerance_5 = audit.extra["tolerance"]["0.05"]
    assert before.at(0.05).share_flagged > audit.at(0.05).share_flagged + tolerance_5
    assert before.auc > 0.65


# --------------------------------------------------------------------------------------------
# Kit targets: SFR-on aims each forget sample at its own OUT level
# --------------------------------------------------------------------------------------------


def test_forget_targets_are_the_out_mean_plus_the_models_shift_and_a_margin() -> None:
    kit = _kit(k=4, n=12, m=6)
    forget = kit.sample_ids[[3, 0, 7]]
    # The model is 0.5 more confident than the shadows on every validation sample.
    phi_val = kit.extra["test"].phi.mean(axis=0) + 0.5
    targets = kit.forget_targets(
        forget, phi_val, kit.extra["test"].sample_ids, table="test", margin=1.0
    )
    out = ~kit.in_mask[:, [3, 0, 7]]
    mean = (kit.phi[:, [3, 0, 7]] * out).sum(axis=0) / out.sum(axis=0)
    sigma = np.sqrt(kit.out_variance())
    np.testing.assert_allclose(targets.threshold, mean + 0.5 + sigma, rtol=1e-5)
    assert targets.summary()["offset_source"] == "test" and targets.k == 4
    with pytest.raises(ReferenceKitError, match="not in extra set 'test'"):
        kit.forget_targets(forget, np.zeros(2), [9999, 9998], table="test", margin=1.0)
    with pytest.raises(ReferenceKitError, match="no extra set 'validation'"):
        kit.forget_targets(forget, phi_val, kit.extra["test"].sample_ids, table="validation",
                           margin=1.0)  # fmt: skip
    with pytest.raises(ReferenceKitError, match="not in the training table"):
        kit.forget_targets([1], phi_val, kit.extra["test"].sample_ids, table="test", margin=1.0)


def test_kit_targeted_sfr_on_passes_the_audit_that_the_original_fails(world: World) -> None:
    """The service's default for a sample-wise request with a kit, end to end on digits: the
    forgotten samples stop looking like members (the gate's rule: flagged share at most
    alpha + the binomial tolerance), without over-forgetting them, and the ascent stops early."""
    from app.certificates.policy import membership_checks
    from app.unlearning.config import OriginalTraining, SFROnConfig
    from app.unlearning.data import build_split
    from app.unlearning.engine import unlearn
    from app.unlearning.evaluation.evaluator import predict
    from app.unlearning.reference_kit import model_phi

    half = len(world.test) // 2
    validation, nonmembers = (
        world.test.take(np.arange(half)),
        world.test.take(np.arange(half, len(world.test))),
    )
    split = build_split(
        world.train, nonmembers, forget_ids=world.forget.sample_ids, validation=validation
    )
    targets = world.kit.forget_targets(
        split.forget.sample_ids,
        model_phi(world.original, validation, CPU),
        validation.sample_ids,
        table="test",
        margin=SFROnConfig().kit_margin,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = unlearn(
            world.original,
            split,
            SFROnConfig(),
            original=OriginalTraining(recipe=RECIPE, optimizer_steps=200),
            device=CPU,
            seed=0,
            member_targets=targets,
        )
    finally:
        torch.set_num_threads(threads)
    details = result.record["details"]
    assert details["mode"] == "kit_targeted" and details["forget_steps"] >= 1
    model = _fresh(0)
    model.load_state_dict(result.state_dict)
    after = audit_model(world.kit, model.eval(), split.forget, nonmembers, device=CPU)
    before = audit_model(world.kit, world.original, split.forget, nonmembers, device=CPU)
    print(_report("kit-targeted SFR-on on S", after), details)
    audits = {"unlearned": after.as_dict()}
    assert membership_checks("sample", {"audits": audits})[1] == []
    assert membership_checks("sample", {"audits": {"unlearned": before.as_dict()}})[1]
    tol5 = after.extra["tolerance"]["0.05"]
    assert after.at(0.05).share_low <= 0.05 + tol5  # not pushed past what retrain shows
    retrained_fa = float(
        (predict(world.retrain, split.forget, CPU).argmax(1).numpy() == split.forget.labels).mean()
    )
    assert abs(result.metrics["FA"] - 100 * retrained_fa) < 10
