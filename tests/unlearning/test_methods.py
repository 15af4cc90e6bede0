"""Every method, through the engine, on a tiny digits model with one class forgotten."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from app.unlearning.config import METHOD_CONFIGS, parse_method_config
from app.unlearning.data import build_split
from app.unlearning.engine import Cancelled, unlearn
from app.unlearning.evaluation import evaluate_split

from .conftest import CPU, Trained, random_ids

# Sized for a 330-step original: the defaults' budgets are fractions of that, which is only a
# handful of steps for the small-lr baselines, so those get explicit counts here.
CONFIGS: dict[str, dict[str, Any]] = {
    "sfr_on": {},
    "retrain": {},
    "finetune": {"iterations": 300, "lr": 0.1},
    "grad_ascent": {"iterations": 60, "lr": 0.005},
    "random_label": {"iterations": 60, "lr": 0.01},
    "l1_sparse": {"iterations": 300, "lr": 0.1, "l1": 1e-4},
    "salun": {"iterations": 60, "lr": 0.01},
}
#: Stated bounds: forget accuracy on the forgotten class drops by at least MIN_FA_DROP points
#: (FT and l1-sparse forget only through catastrophic forgetting, slowly: a small drop), and
#: remain accuracy ends at most MAX_RA_DROP points below the original's.
MIN_FA_DROP: dict[str, float] = {"finetune": 3.0, "l1_sparse": 3.0}
DEFAULT_MIN_FA_DROP = 60.0
MAX_RA_DROP = 20.0
#: GA has no remain term and collapses abruptly (the spec: "it harms the remain set on
#: class-wise requests"); its bound only says it has not destroyed the model.
MAX_RA_DROP_GA = 65.0


def test_every_method_is_tested() -> None:
    assert set(CONFIGS) == set(METHOD_CONFIGS)


@pytest.mark.parametrize("method", sorted(CONFIGS))
def test_method_forgets_a_class_and_keeps_the_rest(trained: Trained, method: str) -> None:
    split = build_split(trained.train, trained.test, forget_classes=[3])
    before, _ = evaluate_split(trained.model, split, device=CPU)
    cfg = parse_method_config(method, CONFIGS[method])
    result = unlearn(trained.model, split, cfg, original=trained.original, device=CPU, seed=0)
    m = result.metrics
    assert m["FA"] <= before["FA"] - MIN_FA_DROP.get(method, DEFAULT_MIN_FA_DROP), m
    ra_bound = MAX_RA_DROP_GA if method == "grad_ascent" else MAX_RA_DROP
    assert m["RA"] >= before["RA"] - ra_bound, m
    json.dumps(result.record)
    assert result.record["method"] == method
    assert result.record["optimizer_steps"] > 0


def test_engine_contract(trained: Trained) -> None:
    split = build_split(trained.train, trained.test, forget_ids=random_ids(trained.train, 60))
    original_state = {k: v.clone() for k, v in trained.model.state_dict().items()}
    reference = unlearn(
        trained.model,
        split,
        parse_method_config("retrain", {"epochs": 3}),
        original=trained.original,
        device=CPU,
    ).as_reference()
    events: list[dict[str, Any]] = []
    result = unlearn(
        trained.model,
        split,
        parse_method_config("sfr_on", {"alpha0": 5.0, "iterations": 20}),
        original=trained.original,
        device=CPU,
        seed=1,
        progress=events.append,
        reference=reference,
    )
    for k, v in trained.model.state_dict().items():  # the caller's model is untouched
        assert torch.equal(v, original_state[k])
    assert all(t.device.type == "cpu" and t.is_contiguous() for t in result.state_dict.values())
    for key in ("avg_gap", "avg_gap_no_mia", "avg_gap_efficacy", "kl_forget", "gap_FA"):
        assert key in result.metrics
    rec = result.record
    assert rec["config"]["alpha0"] == 5.0 and rec["seed"] == 1
    assert 0.0 < rec["mask_density"] < 1.0
    assert rec["optimizer_steps"] == 20 + 4  # 20 remain steps, one forget step every 5
    assert {"torch", "numpy"} <= set(rec["versions"])
    phases = {e["phase"] for e in events}
    assert {"mask", "unlearning", "evaluating"} <= phases
    assert all({"phase", "step", "total", "losses"} <= set(e) for e in events)


def test_should_stop_stops_within_one_step(trained: Trained) -> None:
    split = build_split(trained.train, trained.test, forget_classes=[1])
    seen: list[dict[str, Any]] = []
    stop = {"now": False}

    def progress(event: dict[str, Any]) -> None:
        seen.append(event)
        if event["phase"] == "unlearning" and event["step"] == 3:
            stop["now"] = True

    with pytest.raises(Cancelled):
        unlearn(
            trained.model,
            split,
            parse_method_config("sfr_on", {"alpha0": 5.0, "iterations": 200}),
            original=trained.original,
            device=CPU,
            progress=progress,
            should_stop=lambda: stop["now"],
        )
    assert max(e["step"] for e in seen if e["phase"] == "unlearning") == 3
