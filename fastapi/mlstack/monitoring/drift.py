"""Drift of live inputs and predictions against a version's reference profile. Pure: numpy only.

PSI (population stability index) per feature over the reference's quantile bins:
``sum((live - ref) * ln(live / ref))`` with shares clipped at ``EPS`` (an empty bin would be infinite). Rule of
thumb: < 0.1 stable, 0.1-0.25 moderate shift, > 0.25 major shift; the default threshold is 0.2. KS: the largest
gap between the reference's and the window's cumulative shares at the bin edges, the two-sample Kolmogorov-Smirnov
statistic evaluated where the profile knows the reference CDF (exact at the edges, never above the true KS).
Predictions: PSI over class shares (classification) or the predictions' bins (regression).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlstack.monitoring.profile import Histogram, ReferenceProfile

EPS = 1e-4
DEFAULT_PSI_THRESHOLD = 0.2
DEFAULT_MIN_ROWS = 100  # a window with fewer rows is not judged (PSI of a handful of rows is noise)
PREDICTION = "<prediction>"  # the name drift results use for the model's output


def psi(ref: np.ndarray, live_counts: np.ndarray) -> float:
    total = float(np.sum(live_counts))
    if total <= 0:
        return 0.0
    e = np.clip(np.asarray(ref, dtype=float), EPS, None)
    a = np.clip(np.asarray(live_counts, dtype=float) / total, EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def ks_binned(ref: np.ndarray, live_counts: np.ndarray) -> float:
    total = float(np.sum(live_counts))
    if total <= 0:
        return 0.0
    return float(np.max(np.abs(np.cumsum(ref) - np.cumsum(np.asarray(live_counts, dtype=float) / total))))


@dataclass(frozen=True)
class Drift:
    name: str  # a feature's name, or PREDICTION
    psi: float
    ks: float | None  # None for class shares (no order)
    rows: int

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "psi": round(self.psi, 4), "ks": None if self.ks is None else round(self.ks, 4),
                "rows": self.rows}


def _hist_drift(name: str, h: Histogram, values: np.ndarray) -> Drift:
    counts = h.counts(values)
    ref = np.asarray(h.shares)
    return Drift(name, psi(ref, counts), ks_binned(ref, counts), int(counts.sum()))


def class_drift(ref: dict[str, float], predictions: np.ndarray) -> Drift:
    labels, counts = np.unique(np.asarray(predictions).ravel().astype(str), return_counts=True)
    live = dict(zip(labels.tolist(), counts.tolist(), strict=True))
    keys = sorted(set(ref) | set(live))
    return Drift(PREDICTION, psi(np.array([ref.get(k, 0.0) for k in keys]), np.array([live.get(k, 0) for k in keys])),
                 None, int(counts.sum()))


def measure(profile: ReferenceProfile, rows: np.ndarray, feature_names: list[str],
            predictions: np.ndarray | None = None) -> list[Drift]:
    """Drift of a window: ``rows`` (rows x features, in ``feature_names`` order) and the predictions served for
    them. Features the profile does not know are skipped (e.g. a newer signature)."""
    x = np.asarray(rows, dtype=float)
    if x.ndim != 2 or x.shape[1] != len(feature_names):
        raise ValueError(f"rows must be rows x {len(feature_names)} features, got shape {x.shape}")
    out = [_hist_drift(n, profile.features[n], x[:, i]) for i, n in enumerate(feature_names) if n in profile.features]
    if predictions is not None and len(predictions):
        if profile.task == "classification":
            out.append(class_drift(profile.classes, predictions))
        elif profile.prediction is not None:
            out.append(_hist_drift(PREDICTION, profile.prediction, np.asarray(predictions, dtype=float).ravel()))
    return out


def drifted(results: list[Drift], psi_threshold: float = DEFAULT_PSI_THRESHOLD,
            min_rows: int = DEFAULT_MIN_ROWS) -> list[Drift]:
    """The results over the threshold, worst first; windows with fewer than ``min_rows`` rows are not judged."""
    return sorted((d for d in results if d.rows >= min_rows and d.psi > psi_threshold), key=lambda d: -d.psi)
