"""bench/scaling.py's pure parts: the ratios, the target check and the report (no training)."""

from __future__ import annotations

import doctest
import json
from pathlib import Path
from typing import Any

import pytest

from bench import scaling


def _row(size: int, *, sfr_s: float, given_s: float, audit_s: float | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "size": size,
        "forget_size": size // 10,
        "validation_source": "training pool",
        "original": {"optimizer_steps": 900, "wall_time_s": 50.0, "cpu_time_s": 90.0,
                     "quality": {"FA": 99.0, "RA": 99.0, "TA": 85.0,
                                                          "MIA_entropy": 70.0, "avg_gap": 5.0}},
        "retrain": {"wall_time_s": 100.0, "cpu_time_s": 90.0, "backward_passes": 900,
                    "optimizer_steps": 900,
                    "quality": {"FA": 85.0, "RA": 98.0, "TA": 85.0, "MIA_entropy": 65.0}},
        "sfr_on": {"wall_time_s": sfr_s, "cpu_time_s": sfr_s / 2, "backward_passes": 70,
                   "quality": {"FA": 86.0, "RA": 96.0, "TA": 83.0, "MIA_entropy": 64.0,
                               "avg_gap": 2.0},
                   "calibration": {"trials": 3, "spent_iterations": 60, "budget_iterations": 60,
                                   "iterations": 20, "alpha0": 12.5}},
        "sfr_on_given": {"wall_time_s": given_s, "cpu_time_s": given_s / 2,
                         "backward_passes": 24,
                         "quality": {"FA": 86.0, "RA": 96.0, "TA": 83.0, "MIA_entropy": 64.0,
                                     "avg_gap": 2.1}},
    }  # fmt: skip
    if audit_s is not None:
        row["audit"] = {"wall_time_s": audit_s, "cpu_time_s": audit_s / 2}
        row["kit"] = {"k": 4, "x_retrain_time": 2.1, "x_retrain_steps": 2.2}
    return row


def test_doctests() -> None:
    assert doctest.testmod(scaling).failed == 0


def test_ratios_add_the_audit_to_both_columns() -> None:
    r = scaling.ratios(_row(10_000, sfr_s=8.0, given_s=3.0, audit_s=1.0))
    assert r["excluded"] == pytest.approx(0.03)
    assert r["excluded_audit"] == pytest.approx(0.04)
    assert r["calibrated"] == pytest.approx(0.08)
    assert r["included"] == pytest.approx(0.09)
    assert r["backward_calibrated"] == pytest.approx(70 / 900)
    assert r["cpu_included"] == pytest.approx(4.5 / 90)
    # retrain took twice the original's wall time per step: the machine got busier between them
    assert r["retrain_pace"] == pytest.approx(2.0)
    assert r["cpu_retrain_pace"] == pytest.approx(1.0)


def test_the_kit_targeted_run_is_its_own_column_with_the_audit_added() -> None:
    row = _row(10_000, sfr_s=8.0, given_s=3.0, audit_s=1.0)
    row["sfr_on_kit"] = {"wall_time_s": 3.5, "cpu_time_s": 1.75, "backward_passes": 45,
                         "quality": {"FA": 86.0, "RA": 97.0, "TA": 84.0, "MIA_entropy": 64.0,
                                     "avg_gap": 1.5}}  # fmt: skip
    row["ratios"] = r = scaling.ratios(row)
    assert r["kit_targeted"] == pytest.approx(0.035)
    assert r["kit_targeted_audit"] == pytest.approx(0.045)
    assert r["backward_kit_targeted"] == pytest.approx(0.05)
    got = [(t["column"], t["ok"]) for t in scaling.targets([row])]
    assert got == [("excluded", True), ("included", False), ("kit_targeted_audit", True)]
    text = scaling.markdown({"rows": [row], "targets": scaling.targets([row])})
    assert "3.5% (3.5 s) | 4.5% (4.5 s)" in text and "SFR-on (kit-targeted)" in text


def test_targets_from_10k_on_and_misses_are_reported() -> None:
    rows = [
        _row(3_000, sfr_s=20.0, given_s=9.0, audit_s=1.0),
        _row(10_000, sfr_s=8.0, given_s=3.0, audit_s=1.0),
        _row(30_000, sfr_s=4.0, given_s=2.0, audit_s=None),
    ]
    for row in rows:
        row["ratios"] = scaling.ratios(row)
    got = [(t["size"], t["column"], t["ok"]) for t in scaling.targets(rows)]
    assert got == [
        (10_000, "excluded", True),
        (10_000, "included", False),
        (30_000, "excluded", True),
        (30_000, "calibrated", True),  # no kit there: calibration only, and named so
    ]


def test_finish_writes_json_table_and_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    result = {"rows": [_row(3_000, sfr_s=20.0, given_s=9.0, audit_s=1.0),
                       _row(10_000, sfr_s=8.0, given_s=3.0, audit_s=None)]}  # fmt: skip
    out = tmp_path / "scaling.json"
    scaling.finish(result, out)
    assert json.loads(out.read_text())["targets"][1]["ok"] is False
    text = out.with_suffix(".md").read_text()
    assert "| 3,000 | 300 | 100.0 s | 9.0% (9.0 s) | 20.0% (20.0 s) | 10.0% (10.0 s)" in text
    assert "| 10,000 | 1,000 | 100.0 s | 3.0% (3.0 s) | 8.0% (8.0 s) | - | - |" in text
    assert "| 3,000 | 90.0 s | 5.0% | 11.1% | 5.6% | 11.7% | - | - | 2.00 / 1.00 |" in text
    assert "10,000 samples, calibration included, audit excluded: MISSED (8.0%)" in text
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
