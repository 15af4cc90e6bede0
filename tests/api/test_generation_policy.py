"""The generative gate and the sample grids, as pure functions (no database, no worker)."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import save

from app.certificates.policy import Thresholds, judge_generation
from app.generation.samples import SamplesUnreadable, StoredSamples, render

ORIGINAL = {"FA": 96.0, "kept_accuracy": 90.0, "fd_pooled": 2.0}


def test_a_generator_that_still_draws_the_class_fails_and_says_why() -> None:
    verdict = judge_generation(ORIGINAL, ORIGINAL, Thresholds())
    assert not verdict.passed
    assert "96.0% of the images generated for the forgotten class" in verdict.reasons[0]
    assert verdict.checks["FA_limit_source"].startswith("fixed limit")


def test_forgetting_that_keeps_the_other_classes_passes() -> None:
    after = {"FA": 3.0, "kept_accuracy": 88.0, "fd_pooled": 2.6}
    assert judge_generation(ORIGINAL, after, Thresholds()).passed


@pytest.mark.parametrize(
    ("after", "needle"),
    [
        ({"FA": 0.0, "kept_accuracy": 80.0, "fd_pooled": 2.0}, "kept-class accuracy"),
        ({"FA": 0.0, "kept_accuracy": 90.0, "fd_pooled": 3.2}, "1.60x the original's"),
    ],
    ids=["kept-classes-damaged", "images-degraded"],
)
def test_forgetting_that_damages_the_rest_fails(after: dict[str, float], needle: str) -> None:
    verdict = judge_generation(ORIGINAL, after, Thresholds())
    assert not verdict.passed and needle in verdict.reasons[0]


def test_with_a_retrained_reference_the_limit_is_retrains_fa_plus_the_margin() -> None:
    after = {"FA": 14.0, "kept_accuracy": 90.0, "fd_pooled": 2.0}
    retrained = {"FA": 10.0, "kept_accuracy": 90.0, "fd_pooled": 2.1}
    verdict = judge_generation(ORIGINAL, after, Thresholds(), retrained)
    assert verdict.passed and verdict.checks["FA_limit"] == 15.0


def test_a_certificate_lists_only_the_thresholds_of_its_kind() -> None:
    t = Thresholds()
    assert set(t.as_dict(generative=True)) == {
        "gen_fa_max", "gen_fa_margin", "gen_kept_drop_max", "gen_fd_ratio_max"
    }  # fmt: skip
    assert not any(k.startswith("gen_") for k in t.as_dict(generative=False))


def test_grids_tile_the_stored_images_and_refuse_anything_else() -> None:
    images = {f"class_{k}": np.full((4, 1, 8, 8), 20 * k, np.uint8) for k in range(3)}
    stored = StoredSamples.parse(save(images, metadata={"seed": "0"}))
    assert stored.classes == [0, 1, 2] and stored.metadata == {"seed": "0"}
    assert render(stored, class_id=1, n=4) != render(stored, class_id=2, n=4)
    with pytest.raises(SamplesUnreadable):
        StoredSamples.parse(save({"weights": np.zeros((2, 2), np.float32)}))
    with pytest.raises(SamplesUnreadable):
        StoredSamples.parse(b"\x00" * 16)
