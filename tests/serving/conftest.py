"""Fixtures for the model server: a tiny iris RandomForest saved as MLflow ONNX and sklearn models
(and registered in the real MLflow server), and ``mlstack serve`` started as a real subprocess."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlstack.serving.resolve import parse_model_uri
from tests.utils.procs import Proc, free_port, http_ok, start
from tests.utils.stack import IRIS_CSV

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@dataclass
class Iris:
    frame: pd.DataFrame
    x: np.ndarray  # float32 [150, 4]
    y: np.ndarray


@dataclass
class Server:
    proc: Proc
    base: str
    name: str
    grpc: str | None = None  # host:port of the v2 gRPC endpoint, when started with grpc=True

    @property
    def hostport(self) -> str:
        return self.base.removeprefix("http://")


@pytest.fixture(scope="session")
def iris() -> Iris:
    df = pd.read_csv(IRIS_CSV)
    return Iris(df[FEATURES], df[FEATURES].to_numpy(np.float32), df["target"].to_numpy())


@pytest.fixture(scope="session")
def classifier(iris):
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0).fit(iris.x, iris.y)


@pytest.fixture(scope="session")
def onnx_proto(classifier):
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    return to_onnx(classifier, initial_types=[("X", FloatTensorType([None, 4]))],
                   options={id(classifier): {"zipmap": False}})


@pytest.fixture(scope="session")
def onnx_model_dir(onnx_proto, workdir) -> Path:
    """A local MLflow model with the ``onnx`` flavour (as training logs it)."""
    import mlflow.onnx

    path = workdir / "serving-models" / "iris_onnx"
    mlflow.onnx.save_model(onnx_proto, str(path))
    return path


@pytest.fixture(scope="session")
def sklearn_model_dir(classifier, iris, workdir) -> Path:
    """A plain sklearn MLflow model (no onnx flavour): the pyfunc fallback."""
    import mlflow.sklearn
    from mlflow.models import infer_signature

    path = workdir / "serving-models" / "iris_sklearn"
    sig = infer_signature(iris.frame, classifier.predict(iris.x))
    mlflow.sklearn.save_model(classifier, str(path), serialization_format="cloudpickle", signature=sig)
    return path


@pytest.fixture(scope="session")
def registered_model(onnx_proto, mlflow_uri) -> tuple[str, str]:
    """The ONNX model registered in the real MLflow server, version with alias ``champion``."""
    import mlflow
    import mlflow.onnx
    from mlflow import MlflowClient

    name = f"serving_iris_{uuid.uuid4().hex[:8]}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(mlflow_uri)
    try:
        mlflow.set_experiment("serving-tests")
        with mlflow.start_run():
            info = mlflow.onnx.log_model(onnx_proto, name="model", registered_model_name=name)
        version = str(info.registered_model_version)
        MlflowClient(mlflow_uri).set_registered_model_alias(name, "champion", version)
    finally:
        mlflow.set_tracking_uri(previous)
    return name, version


ServeFactory = Callable[..., Server]


@pytest.fixture(scope="module")
def serve(workdir) -> Iterator[ServeFactory]:
    """Start ``mlstack serve`` subprocesses; ``wait_ready=False`` returns as soon as /live answers."""
    procs: list[Proc] = []

    def _serve(model: str, name: str | None = None, env: dict[str, str] | None = None, max_batch: int | None = None,
               wait_ready: bool = True, timeout: float = 120, grpc: bool = False,
               args: list[str] | None = None) -> Server:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "mlstack", "serve", "--model", model, "--host", "127.0.0.1", "--port", str(port)]
        if name:
            cmd += ["--name", name]
        if max_batch:
            cmd += ["--max-batch", str(max_batch)]
        grpc_target = None
        if grpc:
            grpc_port = free_port()
            cmd += ["--grpc-port", str(grpc_port)]
            grpc_target = f"127.0.0.1:{grpc_port}"
        cmd += args or []
        path = "/v2/health/ready" if wait_ready else "/v2/health/live"
        proc = start(
            cmd, workdir / "serving-logs" / f"serve-{port}.log", ready=lambda: http_ok(base + path),
            timeout=timeout, what=f"mlstack serve {model}",
            env={"MLSTACK_MODEL_CACHE_DIR": str(workdir / "serving-cache"), "PYTHONUNBUFFERED": "1",
                 **(env or {})},
        )
        procs.append(proc)
        return Server(proc, base, name or parse_model_uri(model).name, grpc_target)

    yield _serve
    for p in procs:
        p.stop()
