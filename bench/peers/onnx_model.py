"""The compute every peer runs: the iris ONNX graph through onnxruntime, with mlstack serve's session options.

Imported by the per-peer server scripts in this directory (each runs in its peer's own virtual environment,
which has onnxruntime and numpy but not mlstack), so every server does the same work per batch.
"""

from __future__ import annotations

import os

import numpy as np
import onnxruntime as ort


class OnnxIris:
    """``predict(x)`` -> ``(label int64 [n], probabilities float32 [n, 3])`` for ``x`` float32 [n, 4]."""

    def __init__(self, path: str | None = None) -> None:
        self.path = path or os.environ["BENCH_ONNX"]
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1  # as mlstack serve (fastapi/mlstack/serving/predictor.py)
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.sess = ort.InferenceSession(self.path, so, providers=["CPUExecutionProvider"])
        self.input = self.sess.get_inputs()[0].name

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        label, proba = self.sess.run(None, {self.input: np.ascontiguousarray(x, dtype=np.float32)})
        return label, proba

    def __getstate__(self) -> dict:  # servers that fork workers by pickling the model (KServe --workers N)
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])  # type: ignore[misc]
