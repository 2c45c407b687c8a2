"""Seed-000 packages as MLflow pyfunc models.

:class:`SeedPackageModel` is an ``mlflow.pyfunc.PythonModel`` whose only artifact is the package
directory. Nothing of the package runs while it is saved or registered: ``app.py`` is imported, and
the model file loaded, in ``load_context``, i.e. when the model server loads the version. The class
lives in this (installed) module, so the pickled model refers to it by name.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import uuid
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from mlstack.packages.seed import APP, META, Meta, complete_meta

ARTIFACT = "package"
_JOBLIB = {".pkl", ".pickle", ".joblib"}


def default_loader(path: Path, framework: str) -> Any:
    """How a model file is loaded when app.py has no ``load_model``."""
    suffix = path.suffix.lower()
    if suffix == ".onnx" or framework == "onnx":
        import onnxruntime as ort

        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    if suffix in _JOBLIB:
        import joblib

        return joblib.load(path)
    return str(path)


def import_app(root: Path) -> Any:
    """Import ``root/app.py`` under a unique module name (several packages may share a process)."""
    name = f"mlstack_package_app_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, root / APP)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {root / APP}")
    module = importlib.util.module_from_spec(spec)
    if str(root) not in sys.path:  # helper modules shipped next to app.py
        sys.path.insert(0, str(root))
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class SeedPackageModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        root = Path(context.artifacts[ARTIFACT])
        meta, problems = complete_meta(root, Meta.model_validate(json.loads((root / META).read_text("utf-8"))))
        if meta is None:
            raise ValueError("; ".join(problems))
        self._features = meta.features
        app = import_app(root)
        model_path = root / str(meta.model_file)
        if callable(getattr(app, "predict", None)):
            loader = getattr(app, "load_model", None)
            model = loader(str(model_path)) if callable(loader) else default_loader(model_path, meta.framework)
            fn = app.predict
            self._predict = lambda data: fn(model, data)
        else:
            self._predict = app.Model(str(model_path)).predict

    def predict(self, context, model_input: pd.DataFrame, params=None):
        """``model_input`` is a DataFrame (the signature's columns); the hint also tells MLflow not to
        infer a schema from type hints (the signature is explicit)."""
        if not isinstance(model_input, pd.DataFrame):
            model_input = pd.DataFrame(np.asarray(model_input), columns=self._features)
        out = self._predict(model_input[self._features] if self._features else model_input)
        if isinstance(out, pd.DataFrame | pd.Series):
            return out
        return np.asarray(out)


def signature_for(meta: Meta):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    if meta.input_schema is None:  # seed 000's meta.json names no features: no signature
        return None
    return ModelSignature(inputs=Schema([ColSpec(meta.input_schema.dtype, f) for f in meta.input_schema.features]))


def _not_cloudpickle_advice(record: logging.LogRecord) -> bool:
    return "CloudPickle" not in str(record.msg)


def save_pyfunc(package_root: Path, dest: Path, meta: Meta, requirements: list[str]) -> Path:
    """Write an MLflow model directory at ``dest`` wrapping the package (no package code runs)."""
    pyfunc_log = logging.getLogger("mlflow.pyfunc")  # its CloudPickle advice: our class is pickled by reference
    if _not_cloudpickle_advice not in pyfunc_log.filters:
        pyfunc_log.addFilter(_not_cloudpickle_advice)
    _save(package_root, dest, meta, requirements)
    return dest


def _save(package_root: Path, dest: Path, meta: Meta, requirements: list[str]) -> None:
    mlflow.pyfunc.save_model(
        path=str(dest),
        python_model=SeedPackageModel(),
        artifacts={ARTIFACT: str(package_root)},
        signature=signature_for(meta),
        pip_requirements=list(requirements),  # explicit: MLflow must not infer them by loading the model
        metadata={"mlstack_package": {"name": meta.name, "version": meta.version, "framework": meta.framework}},
    )
