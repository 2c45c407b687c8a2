"""Predictors: an MLflow model directory loaded for fast inference on a float32 2-D array.

``load_predictor(dir)`` reads the directory's ``MLmodel``: with an ``onnx`` flavour the ONNX file is
run directly by onnxruntime (no pyfunc on the hot path); otherwise ``mlflow.pyfunc.load_model`` is the
fallback (e.g. a plain sklearn model). Both expose the same interface, used by the ASGI server,
Ray Serve and the VM runtime alike.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import yaml

from mlstack.serving.v2 import datatype_of

log = logging.getLogger(__name__)

# onnxruntime / numpy element types -> Open Inference Protocol v2 datatypes
_ORT_TO_V2 = {
    "tensor(float)": "FP32", "tensor(double)": "FP64", "tensor(float16)": "FP16",
    "tensor(int64)": "INT64", "tensor(int32)": "INT32", "tensor(int16)": "INT16", "tensor(int8)": "INT8",
    "tensor(uint64)": "UINT64", "tensor(uint32)": "UINT32", "tensor(uint16)": "UINT16",
    "tensor(uint8)": "UINT8", "tensor(bool)": "BOOL", "tensor(string)": "BYTES",
}


class PredictError(Exception):
    """The model rejected an input (wrong feature count, values it cannot handle...)."""


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor as the v2 metadata endpoint describes it (-1 = any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


class Predictor(Protocol):
    platform: str
    inputs: list[TensorSpec]  # exactly one: a 2-D [rows, features] tensor
    outputs: list[TensorSpec]
    inline: ClassVar[bool]  # cheap enough to run on the event loop (else: a worker thread)

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Predict on a C-contiguous float32 [rows, features] array; every output has ``rows`` rows."""
        ...


def n_features(p: Predictor) -> int | None:
    """The feature count the model expects, if it declares one."""
    shape = p.inputs[0].shape
    return shape[1] if len(shape) == 2 and shape[1] > 0 else None


def label_output(p: Predictor) -> str:
    """The output holding the prediction (label or regression value)."""
    names = [o.name for o in p.outputs]
    for preferred in ("label", "variable", "predictions"):
        if preferred in names:
            return preferred
    return names[0]


def proba_output(p: Predictor) -> str | None:
    """The output holding class probabilities, for classifiers."""
    return "probabilities" if any(o.name == "probabilities" for o in p.outputs) else None


def _dim(d: Any) -> int:
    return d if isinstance(d, int) and d >= 0 else -1


class OnnxPredictor:
    """onnxruntime session over the ONNX file of an MLflow ``onnx`` flavour."""

    platform = "onnxruntime_onnx"
    inline: ClassVar[bool] = True

    def __init__(self, onnx_path: Path, intra_op_threads: int = 1):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = intra_op_threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # no busy-waiting worker threads: the event loop and the load generator share 2 cores
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        ins = self._sess.get_inputs()
        if len(ins) != 1:
            raise ValueError(f"{onnx_path}: expected an ONNX model with one input, found {len(ins)}")
        i = ins[0]
        if len(i.shape) != 2:
            raise ValueError(f"{onnx_path}: input {i.name!r} must be 2-D [rows, features], is {i.shape}")
        self._input_name = i.name
        self.inputs = [TensorSpec(i.name, _ORT_TO_V2.get(i.type, "FP32"), tuple(_dim(d) for d in i.shape))]
        self.outputs = [
            TensorSpec(o.name, _ORT_TO_V2.get(o.type, "BYTES"), tuple(_dim(d) for d in o.shape))
            for o in self._sess.get_outputs()
        ]
        self._output_names = [o.name for o in self.outputs]
        self._in_dtype = np.float64 if self.inputs[0].datatype == "FP64" else np.float32
        nf = n_features(self)
        if nf is not None:  # warm up: first run allocates
            self.predict(np.zeros((1, nf), dtype=np.float32))

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if x.dtype != self._in_dtype:
            x = x.astype(self._in_dtype)
        try:
            res = self._sess.run(self._output_names, {self._input_name: x})
        except Exception as e:  # onnxruntime raises its own InvalidArgument/Fail types
            raise PredictError(str(e)) from e
        return dict(zip(self._output_names, res, strict=True))


class PyfuncPredictor:
    """``mlflow.pyfunc`` fallback; classifiers with ``predict_proba`` also give ``probabilities``."""

    platform = "mlflow_pyfunc"
    inline: ClassVar[bool] = False

    def __init__(self, model_dir: Path):
        import mlflow.pyfunc

        self._model = mlflow.pyfunc.load_model(str(model_dir))
        schema = self._model.metadata.get_input_schema()
        self._columns: list[str] | None = None
        width = -1
        in_name = "X"
        if schema is not None:
            if schema.is_tensor_spec():
                spec = schema.inputs[0]
                if spec.name:
                    in_name = spec.name
                if len(spec.shape) == 2:
                    width = _dim(spec.shape[1])
            elif schema.has_input_names():
                self._columns = [str(c) for c in schema.input_names()]
                width = len(self._columns)
        self._raw = None
        try:
            raw = self._model.get_raw_model()
            if hasattr(raw, "predict_proba"):
                self._raw = raw
        except Exception:  # a flavour without a raw model
            self._raw = None
        self.inputs = [TensorSpec(in_name, "FP32", (-1, width))]
        self.outputs = [TensorSpec("label" if self._raw is not None else "predictions", "FP64", (-1,))]
        if self._raw is not None:
            n_classes = len(getattr(self._raw, "classes_", [])) or -1
            self.outputs.append(TensorSpec("probabilities", "FP32", (-1, n_classes)))
        if width > 0:  # run once: fail at load, not on the first request
            sample = self.predict(np.zeros((1, width), dtype=np.float32))
            self.outputs[0] = TensorSpec(self.outputs[0].name, datatype_of(sample[self.outputs[0].name].dtype), (-1,))

    def _frame(self, x: np.ndarray) -> Any:
        if self._columns is None:
            return x
        import pandas as pd

        return pd.DataFrame(x, columns=self._columns)

    def predict(self, x: np.ndarray) -> dict[str, np.ndarray]:
        data = self._frame(x)
        try:
            pred = np.asarray(self._model.predict(data))
            out = {self.outputs[0].name: pred.reshape(len(x), -1) if pred.ndim > 1 else pred}
            if self._raw is not None:
                named = hasattr(self._raw, "feature_names_in_")  # fitted on a DataFrame: give it one
                proba = self._raw.predict_proba(data if named else x)
                out["probabilities"] = np.asarray(proba, dtype=np.float32)
        except Exception as e:
            raise PredictError(str(e)) from e
        return out


def read_mlmodel(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "MLmodel"
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir} is not an MLflow model directory (no MLmodel file)")
    return yaml.safe_load(path.read_text()) or {}


def load_predictor(model_dir: str | Path, intra_op_threads: int = 1) -> Predictor:
    """Load an MLflow model directory: its ONNX flavour with onnxruntime, else through pyfunc."""
    model_dir = Path(model_dir)
    flavors = read_mlmodel(model_dir).get("flavors", {})
    onnx = flavors.get("onnx")
    if onnx:
        data = onnx.get("data") or onnx.get("onnx_model_artifact") or "model.onnx"
        log.info("loading ONNX model %s with onnxruntime", model_dir / data)
        return OnnxPredictor(model_dir / data, intra_op_threads=intra_op_threads)
    if "python_function" in flavors:
        log.info("no onnx flavour in %s: loading through mlflow.pyfunc", model_dir)
        return PyfuncPredictor(model_dir)
    raise ValueError(f"{model_dir}: no onnx or python_function flavour (found {sorted(flavors)})")
