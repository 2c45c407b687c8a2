"""The monitor's shadow comparison (pure): a shadow's copies joined to the live answers by request id."""

from __future__ import annotations

import pytest

from mlstack.monitoring.monitor import shadow_comparison


def rec(id_: str, track: str, version: str, outputs: list) -> dict:
    return {"id": id_, "track": track, "version": version, "outputs": outputs, "inputs": [[0.0]] * len(outputs),
            "latency_ms": 1.0}


def test_labels_give_an_agreement_rate_over_rows():
    records = [
        rec("a", "stable", "1", [0, 1]), rec("a", "shadow", "2", [0, 2]),
        rec("b", "stable", "1", ["setosa"]), rec("b", "shadow", "2", ["setosa"]),
        rec("c", "canary", "3", [1]), rec("c", "shadow", "2", [1]),  # a canary's answer is a live one too
        rec("d", "shadow", "2", [1]),  # its live answer is not in the window: counted, not compared
        rec("e", "stable", "1", [2]),  # not mirrored
    ]
    out = shadow_comparison(records)
    assert out == {"2": {"requests": 4, "compared": 3, "rows": 4, "live_versions": ["1", "3"],
                         "kind": "classification", "agreement": 0.75}}


def test_numbers_give_a_mean_absolute_difference():
    out = shadow_comparison([rec("a", "stable", "1", [1.5, 2.0]), rec("a", "shadow", "4", [1.0, 2.0]),
                             rec("b", "stable", "1", [0.25]), rec("b", "shadow", "4", [1.25])])
    s = out["4"]
    assert s["kind"] == "regression" and s["rows"] == 3
    assert s["mean_abs_diff"] == pytest.approx((0.5 + 0 + 1.0) / 3) and s["agreement"] == pytest.approx(1 / 3)


def test_no_shadow_no_comparison_and_odd_outputs_do_not_break_it():
    assert shadow_comparison([rec("a", "stable", "1", [1])]) == {}
    out = shadow_comparison([rec("a", "stable", "1", [[0.1, 0.9]]), rec("a", "shadow", "2", [[0.2, 0.8]]),
                             {"id": "b", "track": "shadow", "version": "2", "outputs": None}])
    assert out["2"]["requests"] == 2 and out["2"]["compared"] == 1 and out["2"]["kind"] == "regression"
    assert out["2"]["agreement"] == 0.0 and out["2"]["mean_abs_diff"] == pytest.approx(0.1)  # vectors: elementwise
    out = shadow_comparison([rec("a", "stable", "1", [1.5]), rec("a", "shadow", "2", ["x"])])
    assert out["2"]["kind"] == "other" and out["2"]["agreement"] == 0.0 and "mean_abs_diff" not in out["2"]
