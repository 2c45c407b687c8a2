"""A BentoML 1.4 service running the shared ONNX graph (bench/peers.py): ``POST /predict {"X": [[...]]}``.

``bentoml serve bentoml_service:Iris`` from this directory. One worker (the default) and adaptive batching
(``batchable=True``, the guide's way to let the dispatcher merge concurrent requests); the answer is one
row per request: the label and the three class probabilities.
"""

from __future__ import annotations

import os

import bentoml
import numpy as np
from onnx_model import OnnxIris

MAX_BATCH = int(os.environ.get("BENCH_MAX_BATCH", "16"))


@bentoml.service(workers=int(os.environ.get("BENCH_WORKERS", "1")), traffic={"timeout": 30})
class Iris:
    def __init__(self) -> None:
        self.model = OnnxIris()

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=1000)
    def predict(self, X: np.ndarray) -> np.ndarray:  # X: the input's name in the request
        label, proba = self.model.predict(X)
        return np.column_stack([label.astype(np.float32), proba])
