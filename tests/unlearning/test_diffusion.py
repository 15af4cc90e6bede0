"""The diffusion engine on scikit-learn's 8x8 digits with a tiny UNet2DModel: the loss, the
sampler, the saliency mask, each method's direction, the evaluation and the PNG grid."""

from __future__ import annotations

import copy
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from app.unlearning.config import TrainingRecipe
from app.unlearning.data import ArrayDataset
from app.unlearning.diffusion.calibration import forget_class_calibrated
from app.unlearning.diffusion.config import (
    TINY_UNET,
    DiffusionGradAscentConfig,
    DiffusionRecipe,
    DiffusionRetrainConfig,
    DiffusionSalUnConfig,
    DiffusionSFROnConfig,
    SamplingConfig,
    parse_unet_config,
)
from app.unlearning.diffusion.data import ClassSplit, class_split, to_unit
from app.unlearning.diffusion.ddpm import (
    NoiseSchedule,
    build_unet,
    ddim_sample,
    drop_labels,
    per_sample_loss,
    q_sample,
    train_denoiser,
)
from app.unlearning.diffusion.engine import forget_class, train_evaluator
from app.unlearning.diffusion.evaluation import (
    GenerationEvaluator,
    evaluate_generation,
    frechet_distance,
)
from app.unlearning.diffusion.methods.common import DiffusionContext
from app.unlearning.diffusion.methods.registry import DIFFUSION_METHODS
from app.unlearning.diffusion.methods.sfr_on import saliency_mask
from app.unlearning.diffusion.png import encode_png, grid
from app.unlearning.runtime import Reporter

CPU = torch.device("cpu")
SCHEDULE = NoiseSchedule.linear(1000, 1e-4, 0.02)
FORGET = 3
RECIPE = DiffusionRecipe(steps=600, batch_size=128, lr=2e-3, warmup=50)
SAMPLING = SamplingConfig(steps=15, guidance=2.0)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    # On a shared, oversubscribed CPU two threads make these small convolutions ~10x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@dataclass(frozen=True)
class Pretrained:
    model: nn.Module
    train: ArrayDataset
    test: ArrayDataset
    split: ClassSplit
    evaluator: GenerationEvaluator

    def context(self, seed: int = 0) -> DiffusionContext:
        return DiffusionContext(self.split, SCHEDULE, RECIPE, CPU, seed, Reporter())

    def judge(self, model: nn.Module) -> dict[str, float]:
        out, _ = evaluate_generation(
            model, SCHEDULE, self.evaluator, forget_classes=(FORGET,), num_classes=10,
            real_test=self.test, n_forget=48, n_kept=16, sampling=SAMPLING, device=CPU, seed=0,
        )  # fmt: skip
        return out


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return build_unet(parse_unet_config(TINY_UNET, num_classes=10))


@pytest.fixture(scope="module")
def pretrained(digits: tuple[ArrayDataset, ArrayDataset]) -> Pretrained:
    train_set, test_set = digits
    model = tiny()
    train_denoiser(
        model, to_unit(train_set.images, CPU), torch.from_numpy(train_set.labels), SCHEDULE,
        RECIPE, seed=0,
    )  # fmt: skip
    evaluator = train_evaluator(
        train_set, device=CPU, seed=0, recipe=TrainingRecipe(epochs=15, batch_size=64),
        width=8, hidden=32,
    )  # fmt: skip
    return Pretrained(model, train_set, test_set, class_split(train_set, (FORGET,), CPU), evaluator)


@pytest.fixture(scope="module")
def original_metrics(pretrained: Pretrained) -> dict[str, float]:
    return pretrained.judge(pretrained.model)


# ---- the pieces -------------------------------------------------------------------------------


def test_schedule_is_the_specs_linear_one() -> None:
    assert SCHEDULE.steps == 1000
    assert SCHEDULE.betas[0].item() == pytest.approx(1e-4)
    assert SCHEDULE.betas[-1].item() == pytest.approx(0.02)
    expected = float(np.prod(1 - np.linspace(1e-4, 0.02, 1000)[:500]))
    assert SCHEDULE.alpha_bar[499].item() == pytest.approx(expected, rel=1e-5)


class ConstantNoise(nn.Module):
    """A 'denoiser' that always predicts the same value, so the loss can be checked by hand."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor) -> object:
        return type("Out", (), {"sample": torch.full_like(x, self.value)})()


def test_loss_on_a_hand_checkable_case() -> None:
    x0 = torch.zeros(2, 1, 2, 2)
    noise = torch.tensor([1.0, -1.0, 2.0, 0.0]).view(1, 1, 2, 2).repeat(2, 1, 1, 1)
    noise[1] = 3.0
    t = torch.tensor([0, 999])
    loss = per_sample_loss(ConstantNoise(1.0), SCHEDULE, x0, torch.tensor([0, 1]), t=t, noise=noise)
    # Sample 0: mean of (1-1)^2, (1+1)^2, (1-2)^2, (1-0)^2 = 6/4; sample 1: (1-3)^2 = 4.
    assert loss.tolist() == pytest.approx([1.5, 4.0])
    # Forward noising: x_t = sqrt(abar) x0 + sqrt(1-abar) eps.
    xt = q_sample(SCHEDULE, torch.ones(1, 1, 1, 1), torch.tensor([999]), torch.zeros(1, 1, 1, 1))
    assert xt.item() == pytest.approx(SCHEDULE.alpha_bar[999].sqrt().item())


def test_label_dropout_uses_the_null_class() -> None:
    g = torch.Generator().manual_seed(0)
    labels = torch.zeros(10_000, dtype=torch.long)
    dropped = drop_labels(labels, 0.1, 10, g)
    assert set(dropped.unique().tolist()) == {0, 10}
    assert 0.08 < (dropped == 10).float().mean().item() < 0.12


def test_sampler_shapes_range_and_seed_determinism() -> None:
    model = tiny()
    labels = torch.tensor([0, 1, 2, 3, 4])
    cfg = SamplingConfig(steps=5, guidance=2.0, batch_size=2)
    a = ddim_sample(model, SCHEDULE, labels, image_shape=(1, 8, 8), config=cfg, seed=7)
    b = ddim_sample(model, SCHEDULE, labels, image_shape=(1, 8, 8), config=cfg, seed=7)
    c = ddim_sample(model, SCHEDULE, labels, image_shape=(1, 8, 8), config=cfg, seed=8)
    whole = ddim_sample(
        model, SCHEDULE, labels, image_shape=(1, 8, 8),
        config=cfg.model_copy(update={"batch_size": 256}), seed=7,
    )  # fmt: skip
    assert a.shape == (5, 1, 8, 8)
    assert torch.isfinite(a).all() and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # How the batch is cut does not change an image (its noise is drawn up front).
    assert torch.allclose(a, whole, atol=1e-5)


def test_frechet_distance_matches_the_closed_form_for_gaussians() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4000, 2))
    b = rng.normal(size=(4000, 2)) * 2.0 + np.array([1.0, 0.0])
    # ||mu||^2 + tr(I + 4I - 2*2I) = 1 + 2.
    assert frechet_distance(a, b) == pytest.approx(3.0, abs=0.15)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_png_grid_decodes_to_the_tiles() -> None:
    tiles = np.arange(2 * 1 * 2 * 2, dtype=np.uint8).reshape(2, 1, 2, 2) * 30
    img = grid(tiles, cols=2, pad=1, fill=255)
    assert img.shape == (4, 7)
    data = encode_png(img)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    length = struct.unpack(">I", data[8:12])[0]
    w, h = struct.unpack(">II", data[16:24])
    assert (w, h, length) == (7, 4, 13)
    idat_at = data.index(b"IDAT")
    idat_len = struct.unpack(">I", data[idat_at - 4 : idat_at])[0]
    raw = zlib.decompress(data[idat_at + 4 : idat_at + 4 + idat_len])
    rows = np.frombuffer(raw, dtype=np.uint8).reshape(4, 8)
    assert (rows[:, 0] == 0).all()  # filter byte
    assert np.array_equal(rows[:, 1:], img)


# ---- methods on a pretrained tiny denoiser ---------------------------------------------------


@pytest.mark.slow
def test_pretrained_model_generates_its_classes(original_metrics: dict[str, float]) -> None:
    assert original_metrics["FA"] >= 80
    assert original_metrics["kept_accuracy"] >= 80
    assert original_metrics["forget_prob"] > 0.7


@pytest.mark.slow
def test_saliency_mask_covers_the_forgotten_class_embedding(pretrained: Pretrained) -> None:
    model = copy.deepcopy(pretrained.model)
    mask = saliency_mask(model, pretrained.context(), batch_size=64, batches=2, gamma=1.0)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    emb = mask[names.index("class_embedding.weight")]
    # Only the forget set trains the forgotten row; the remain set only the kept rows.
    assert emb[FORGET].min() == 1
    kept = [c for c in range(10) if c != FORGET]
    assert emb[kept].max() == 0
    density = float(sum(m.sum() for m in mask) / sum(m.numel() for m in mask))
    assert 0 < density < 1


@pytest.mark.slow
def test_sfr_on_forgets_the_class_and_keeps_the_others(
    pretrained: Pretrained, original_metrics: dict[str, float]
) -> None:
    model = copy.deepcopy(pretrained.model)
    result = forget_class(model, pretrained.context(), DiffusionSFROnConfig(iterations=100))
    after = pretrained.judge(model)
    assert result.method == "sfr_on" and result.mask_density is not None
    # A user checks that asking for the class no longer gives it...
    assert after["FA"] <= original_metrics["FA"] - 30
    assert after["forget_prob"] < original_metrics["forget_prob"]
    # ...and that the other classes still come out as themselves.
    assert after["kept_accuracy"] >= original_metrics["kept_accuracy"] - 15
    # Costs: one forget and one remain pass per iteration, plus the Fisher batches.
    assert result.counters["backward_passes"] == 2 * 100 + 2 * 4


@pytest.mark.slow
def test_calibrated_sfr_on_stops_once_probes_find_the_class_forgotten(
    pretrained: Pretrained, original_metrics: dict[str, float]
) -> None:
    model = copy.deepcopy(pretrained.model)
    result = forget_class_calibrated(
        model, pretrained.context(), DiffusionSFROnConfig(), pretrained.evaluator,
        sampling=SAMPLING, explicit=frozenset(),
    )  # fmt: skip
    cal = result.details["calibration"]
    assert cal["stop"] == "on target" and result.details["iterations"] < 150
    assert [p["FA"] for p in cal["probes"][-2:]] == [0.0, 0.0]
    after = pretrained.judge(model)
    # The probe's verdict holds on the evaluation's own, larger and longer-sampled set.
    assert after["FA"] <= 10
    assert after["kept_accuracy"] >= original_metrics["kept_accuracy"] - 15


@pytest.mark.slow
@pytest.mark.parametrize(
    "config", [DiffusionGradAscentConfig(iterations=100), DiffusionSalUnConfig(iterations=100)]
)
def test_baselines_lower_the_forgotten_class_share(
    pretrained: Pretrained, original_metrics: dict[str, float], config: object
) -> None:
    model = copy.deepcopy(pretrained.model)
    forget_class(model, pretrained.context(), config)  # type: ignore[arg-type]
    after = pretrained.judge(model)
    assert after["FA"] < original_metrics["FA"]
    assert after["kept_accuracy"] >= original_metrics["kept_accuracy"] - 25


@pytest.mark.slow
def test_retrain_trains_from_scratch_on_the_remain_set(pretrained: Pretrained) -> None:
    model = copy.deepcopy(pretrained.model)
    ctx = pretrained.context()
    result = forget_class(model, ctx, DiffusionRetrainConfig(steps=3))
    assert result.steps == 3 and result.counters["optimizer_steps"] == 3
    before = dict(pretrained.model.named_parameters())
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters())


@pytest.mark.slow
def test_methods_stop_when_asked(pretrained: Pretrained) -> None:
    from app.unlearning.runtime import Cancelled

    model = copy.deepcopy(pretrained.model)
    ctx = pretrained.context()
    ctx.reporter.should_stop = lambda: True
    with pytest.raises(Cancelled):
        forget_class(model, ctx, DiffusionSFROnConfig(iterations=5))


def test_registry_names_every_method() -> None:
    assert set(DIFFUSION_METHODS) == {"sfr_on", "grad_ascent", "salun", "retrain"}


def test_deep_check_loads_safetensors_and_refuses_misfits(
    tmp_path: Path, digits: tuple[ArrayDataset, ArrayDataset]
) -> None:
    from safetensors.torch import save_file

    from app.unlearning.diffusion.manifest import parse_diffusion_spec
    from app.unlearning.diffusion.weights import deep_check
    from app.unlearning.weights import ModelRejected

    spec = parse_diffusion_spec({"unet": TINY_UNET}, dataset_classes=10, image_shape=(1, 8, 8))
    good = tmp_path / "good.safetensors"
    save_file({k: v.contiguous() for k, v in tiny().state_dict().items()}, str(good))
    metrics = deep_check(good, spec, test=digits[1], evaluator=None, device=CPU)
    assert metrics["probe_steps"] == 3
    wider = parse_unet_config({**TINY_UNET, "block_out_channels": [32, 64]})
    wide = tmp_path / "wide.safetensors"
    save_file({k: v.contiguous() for k, v in build_unet(wider).state_dict().items()}, str(wide))
    with pytest.raises(ModelRejected, match="shapes do not fit"):
        deep_check(wide, spec, test=digits[1], evaluator=None, device=CPU)
    pickle = tmp_path / "model.pt"
    torch.save(tiny().state_dict(), pickle)
    with pytest.raises(ModelRejected, match="safetensors"):
        deep_check(pickle, spec, test=digits[1], evaluator=None, device=CPU)


@pytest.mark.slow
def test_deep_check_records_a_generation_baseline(tmp_path: Path, pretrained: Pretrained) -> None:
    from safetensors.torch import save_file

    from app.unlearning.diffusion.manifest import parse_diffusion_spec
    from app.unlearning.diffusion.weights import deep_check

    spec = parse_diffusion_spec({"unet": TINY_UNET}, dataset_classes=10, image_shape=(1, 8, 8))
    path = tmp_path / "pretrained.safetensors"
    save_file({k: v.contiguous() for k, v in pretrained.model.state_dict().items()}, str(path))
    baseline = deep_check(
        path, spec, test=pretrained.test, evaluator=pretrained.evaluator, device=CPU,
        n_per_class=8, sampling=SAMPLING,
    )  # fmt: skip
    assert "FA" not in baseline  # nothing is forgotten yet
    assert set(baseline["kept_accuracy_per_class"]) == {str(c) for c in range(10)}
    assert baseline["kept_accuracy"] >= 80
    assert baseline["fd_pooled"] >= 0
