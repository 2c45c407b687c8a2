"""A model version's reference profile: what its inputs and predictions looked like at training time.

Per numeric feature: the interior cut points of ``bins`` quantile bins of the training rows and the share of
rows in each bin (ties can make bins uneven, so shares are stored, not assumed ``1/bins``). Predictions: the
share of each class (classification) or quantile bins like a feature (regression). Stored with the model version
as the MLflow artifact ``monitoring/reference_profile.json`` (``to_dict``/``from_dict``: JSON, no pickles), read
back by the drift monitor. Pure: numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import numpy as np

ARTIFACT_PATH = "monitoring/reference_profile.json"
SCHEMA = 1
DEFAULT_BINS = 10


@dataclass(frozen=True)
class Histogram:
    """Bins given by interior ``edges`` (ascending, unique): bin i holds values v with edges[i-1] <= v < edges[i];
    the first bin is everything below edges[0], the last everything from edges[-1] up. ``shares`` sum to 1."""

    edges: tuple[float, ...]
    shares: tuple[float, ...]

    def counts(self, values: np.ndarray) -> np.ndarray:
        """How many of ``values`` fall in each bin (NaNs are not counted)."""
        v = np.asarray(values, dtype=float)
        v = v[~np.isnan(v)]
        return np.bincount(np.searchsorted(np.asarray(self.edges), v, side="right"), minlength=len(self.shares))

    def to_dict(self) -> dict[str, Any]:
        return {"edges": list(self.edges), "shares": list(self.shares)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Histogram:
        edges, shares = tuple(float(x) for x in d["edges"]), tuple(float(x) for x in d["shares"])
        if len(shares) != len(edges) + 1 or any(b <= a for a, b in pairwise(edges)):
            raise ValueError("a histogram needs ascending unique edges and one more share than edges")
        return cls(edges, shares)


def histogram(values: np.ndarray, bins: int = DEFAULT_BINS) -> Histogram:
    """Quantile bins of ``values`` (NaNs ignored). A constant column gets one edge (below / from it)."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if v.size == 0:
        raise ValueError("no values to profile")
    lo = float(v.min())
    edges = np.unique(np.quantile(v, np.linspace(0, 1, bins + 1)[1:-1]))
    edges = edges[edges > lo]  # an edge at the minimum would only make an empty first bin
    if edges.size == 0:  # a constant column: below it / from it
        edges = np.array([lo])
    counts = np.bincount(np.searchsorted(edges, v, side="right"), minlength=edges.size + 1)
    return Histogram(tuple(float(e) for e in edges), tuple(float(c) / v.size for c in counts))


@dataclass(frozen=True)
class ReferenceProfile:
    task: str  # classification | regression
    features: dict[str, Histogram]
    rows: int
    classes: dict[str, float] = field(default_factory=dict)  # classification: label -> share of predictions
    prediction: Histogram | None = None  # regression: the predictions' bins

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema": SCHEMA, "task": self.task, "rows": self.rows,
                               "features": {k: h.to_dict() for k, h in self.features.items()}}
        if self.task == "classification":
            out["classes"] = dict(self.classes)
        elif self.prediction is not None:
            out["prediction"] = self.prediction.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReferenceProfile:
        if d.get("schema") != SCHEMA:
            raise ValueError(f"unsupported reference profile schema {d.get('schema')!r} (expected {SCHEMA})")
        task = d.get("task")
        if task not in ("classification", "regression"):
            raise ValueError(f"reference profile task must be classification or regression, got {task!r}")
        return cls(task=task, rows=int(d["rows"]),
                   features={str(k): Histogram.from_dict(h) for k, h in d["features"].items()},
                   classes={str(k): float(v) for k, v in (d.get("classes") or {}).items()},
                   prediction=Histogram.from_dict(d["prediction"]) if d.get("prediction") else None)


def build_profile(x: np.ndarray, feature_names: list[str], predictions: np.ndarray, task: str,
                  bins: int = DEFAULT_BINS) -> ReferenceProfile:
    """The profile of training rows ``x`` (rows x features, numeric) and the model's ``predictions`` on them."""
    x = np.asarray(x, dtype=float)
    if x.ndim != 2 or x.shape[1] != len(feature_names):
        raise ValueError(f"x must be rows x {len(feature_names)} features, got shape {x.shape}")
    features = {name: histogram(x[:, i], bins) for i, name in enumerate(feature_names)}
    preds = np.asarray(predictions).ravel()
    if task == "classification":
        labels, counts = np.unique(preds.astype(str), return_counts=True)
        return ReferenceProfile(task, features, int(x.shape[0]),
                                classes={str(k): float(c) / preds.size for k, c in zip(labels, counts, strict=True)})
    return ReferenceProfile(task, features, int(x.shape[0]), prediction=histogram(preds.astype(float), bins))


def log_reference_profile(model: Any, x: np.ndarray, feature_names: list[str], task: str) -> ReferenceProfile:
    """At training time, inside the active MLflow run: profile ``x`` and the model's predictions on it and log it
    as ``ARTIFACT_PATH`` (the monitor reads it for every version registered from the run)."""
    import mlflow

    profile = build_profile(x, feature_names, model.predict(x), task)
    mlflow.log_dict(profile.to_dict(), ARTIFACT_PATH)
    return profile
