"""Reference profiles and drift on real data (the platform's iris CSV), and the payload ring's bookkeeping."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

from mlstack.monitoring import drift
from mlstack.monitoring.payload import PayloadLog, RequestIds
from mlstack.monitoring.profile import Histogram, ReferenceProfile, build_profile, histogram

IRIS = Path(__file__).resolve().parents[2] / "fastapi" / "mlstack" / "data" / "iris.csv"


@pytest.fixture(scope="module")
def iris():
    df = pd.read_csv(IRIS)
    features = [c for c in df.columns if c != df.columns[-1]]
    x, y = df[features].to_numpy(float), df[df.columns[-1]].to_numpy()
    model = RandomForestClassifier(n_estimators=20, random_state=0).fit(x, y)
    return features, x, model


def test_profile_bins_hold_the_training_rows_and_round_trip_as_json(iris):
    features, x, model = iris
    profile = build_profile(x, features, model.predict(x), "classification")
    assert set(profile.features) == set(features) and profile.rows == len(x)
    for i, name in enumerate(features):
        h = profile.features[name]
        assert abs(sum(h.shares) - 1) < 1e-9 and len(h.shares) == len(h.edges) + 1
        assert h.shares[0] > 0  # no empty first bin (an edge at the minimum is dropped)
        assert np.array_equal(h.counts(x[:, i]), np.round(np.array(h.shares) * len(x)))
    assert abs(sum(profile.classes.values()) - 1) < 1e-9 and len(profile.classes) == 3
    again = ReferenceProfile.from_dict(json.loads(json.dumps(profile.to_dict())))
    assert again == profile


def test_constant_and_nan_columns():
    h = histogram(np.array([3.0, 3.0, np.nan, 3.0]))
    assert h.edges == (3.0,) and h.shares == (0.0, 1.0)
    assert list(h.counts(np.array([2.0, 3.0, 4.0, np.nan]))) == [1, 2]
    with pytest.raises(ValueError, match="no values"):
        histogram(np.array([np.nan]))
    with pytest.raises(ValueError, match="ascending"):
        Histogram.from_dict({"edges": [2, 1], "shares": [0.3, 0.3, 0.4]})
    with pytest.raises(ValueError, match="schema"):
        ReferenceProfile.from_dict({"schema": 99})


def test_the_same_distribution_is_stable_and_a_shifted_feature_is_named(iris):
    features, x, model = iris
    profile = build_profile(x, features, model.predict(x), "classification")
    rng = np.random.default_rng(7)
    same = x[rng.integers(0, len(x), 2000)]
    results = drift.measure(profile, same, features, model.predict(same))
    assert all(d.psi < 0.1 for d in results), [d.to_dict() for d in results]
    assert drift.drifted(results) == []

    shifted = same.copy()
    col = features.index("petal_length") if "petal_length" in features else 2
    shifted[:, col] = shifted[:, col] + 2.5  # centimetres: most rows leave the reference's top bins
    results = drift.measure(profile, shifted, features, model.predict(shifted))
    flagged = drift.drifted(results)
    assert flagged and flagged[0].name in (features[col], drift.PREDICTION), [d.to_dict() for d in flagged]
    by_name = {d.name: d for d in results}
    assert by_name[features[col]].psi > 1.0 and by_name[features[col]].ks > 0.4
    assert all(by_name[f].psi < 0.1 for i, f in enumerate(features) if i != col)
    # too few rows are not judged, however different
    assert drift.drifted(drift.measure(profile, shifted[:20], features), min_rows=100) == []


def test_regression_predictions_are_profiled_as_bins(iris):
    features, x, _ = iris
    target = x[:, 0] * 2 + x[:, 1]
    model = RandomForestRegressor(n_estimators=10, random_state=0).fit(x, target)
    profile = build_profile(x, features, model.predict(x), "regression")
    assert profile.prediction is not None and not profile.classes
    results = drift.measure(profile, x + 3.0, features, model.predict(x + 3.0))
    assert {d.name for d in drift.drifted(results)} >= set(features)
    with pytest.raises(ValueError, match="features"):
        drift.measure(profile, x[:, :2], features)


def test_the_ring_samples_bounds_and_reports_what_was_lost():
    off = PayloadLog(sample_rate=0.0)
    assert not off.enabled and not any(off.sampled() for _ in range(1000))
    every = PayloadLog(sample_rate=1.0, capacity=5)
    assert all(every.sampled() for _ in range(100))
    some = PayloadLog(sample_rate=0.1)
    share = sum(some.sampled() for _ in range(20000)) / 20000
    assert 0.08 < share < 0.12, share
    with pytest.raises(ValueError):
        PayloadLog(sample_rate=1.5)

    for i in range(3):
        every.record(f"r{i}", "m", "1", "stable", [[i]], [i], 0.5)
    page = every.read(after=0)
    assert [r["id"] for r in page["records"]] == ["r0", "r1", "r2"] and page["next"] == 3 and page["missed"] == 0
    assert every.read(after=page["next"])["records"] == []
    for i in range(3, 10):  # 7 more into a ring of 5: r3, r4 are overwritten unread
        every.record(f"r{i}", "m", "1", "stable", [[i]], [i], 0.5)
    page = every.read(after=3, limit=2)
    assert page["missed"] == 2 and [r["id"] for r in page["records"]] == ["r5", "r6"] and page["next"] == 7
    assert every.dropped == 2
    page = every.read(after=page["next"])
    assert [r["id"] for r in page["records"]] == ["r7", "r8", "r9"] and page["missed"] == 0

    ids = RequestIds()
    a, b = ids.next(), ids.next()
    assert a != b and a.split("-")[0] == b.split("-")[0]
    assert ids.accept("caller-id-1") == "caller-id-1"
    assert ids.accept("x" * 500) != "x" * 500 and ids.accept("bad\nid") != "bad\nid" and ids.accept(None)
