"""bench/unlearning.py's pure parts: issue 10's target checks and the summary table (no
training)."""

from __future__ import annotations

from typing import Any

from bench import unlearning


def _m(**values: float) -> dict[str, list[float]]:
    return {k: [v, 0.0] for k, v in values.items()}


def _summary(sfr_fa: float, sfr_pass: float) -> dict[str, Any]:
    base = {"avg_gap": 5.0, "avg_gap_no_mia": 4.0, "RA": 99.8, "TA": 85.4, "FA": 100.0}
    return {
        "person100": {
            "original": _m(**base, audit_pass=0.0, time_vs_retrain=0.0),
            "retrain": _m(FA=88.0, RA=99.8, TA=85.5, avg_gap=0.0, avg_gap_no_mia=0.0,
                          audit_pass=100.0, time_vs_retrain=1.0),
            "sfr_on": _m(FA=sfr_fa, RA=99.0, TA=85.0, avg_gap=1.3, avg_gap_no_mia=1.2,
                         audit_pass=sfr_pass, fresh_pass=sfr_pass, time_vs_retrain=0.06),
            # SFR-on's other configurations are rows, not competitors
            "sfr_on_faithful": _m(FA=99.0, RA=99.8, TA=85.0, avg_gap=0.5, avg_gap_no_mia=0.5,
                                  time_vs_retrain=0.03),
            "salun": _m(FA=99.0, RA=99.5, TA=84.3, avg_gap=3.7, avg_gap_no_mia=4.2,
                        audit_pass=33.3, time_vs_retrain=0.07),
        }
    }  # fmt: skip


def test_targets_compare_with_the_baselines_and_retrain() -> None:
    t = unlearning.check_targets(_summary(89.0, 100.0), ["person100"])["person100"]
    assert t["lowest_avg_gap"]["ok"] and t["lowest_avg_gap"]["best_other"] == "salun"
    assert t["beats_do_nothing_avg_gap_no_mia"]["ok"]
    assert t["|FA-FA_rt|<=2"] == {"ok": True, "value": 1.0}
    assert t["audit_pass_where_retrain_passes"]["ok"]
    assert t["RA_within_1_of_retrain"]["ok"] and t["TA_within_1_of_retrain"]["ok"]
    bad = unlearning.check_targets(_summary(92.0, 66.7), ["person100"])["person100"]
    assert not bad["|FA-FA_rt|<=2"]["ok"] and not bad["audit_pass_where_retrain_passes"]["ok"]


def test_the_targets_table_has_a_row_per_target_and_a_column_per_run() -> None:
    runs = [
        ("a", {"targets": unlearning.check_targets(_summary(89.0, 100.0), ["person100"])}),
        ("b", {"targets": unlearning.check_targets(_summary(92.0, 66.7), ["person100"])}),
    ]
    text = unlearning.targets_table(runs)
    assert text.splitlines()[0] == "| target | a: person100 | b: person100 |"
    assert "| sample-wise abs(FA - FA retrain) <= 2 | met: +1.00 | **missed**: +4.00 |" in text
    assert "met: 100% of seeds (retrain 100%; fresh kit 100%)" in text
    assert "| wall time / retrain's (measured) | 6.0% | 6.0% |" in text
