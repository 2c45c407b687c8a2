"""Helpers and fixtures for ``/deployments``: a registered ONNX iris model and real ``mlstack api`` processes (a
pytest plugin, loaded by tests/conftest.py: tests/deployments and tests/monitoring use its fixtures).

The API runs as a subprocess on the session's real Redis, MLflow and S3 (``stack_env``); local-mode
model servers are its children. Every wait polls with a deadline.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.utils.procs import Proc, free_port, start_api, wait_until
from tests.utils.stack import IRIS_CSV

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
READY_TIMEOUT = 120.0


@dataclass
class Model:
    name: str
    version: str


def register_onnx(tracking_uri: str, name: str) -> str:
    """Train a tiny iris RandomForest, log it as an MLflow ONNX model, register it; returns the version."""
    import mlflow
    import mlflow.onnx
    import numpy as np
    import pandas as pd
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import RandomForestClassifier

    df = pd.read_csv(IRIS_CSV)
    x, y = df[FEATURES].to_numpy(np.float32), df["target"].to_numpy()
    clf = RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0).fit(x, y)
    proto = to_onnx(clf, initial_types=[("X", FloatTensorType([None, 4]))], options={id(clf): {"zipmap": False}})
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)
    try:
        mlflow.set_experiment("deployments-tests")
        with mlflow.start_run():
            info = mlflow.onnx.log_model(proto, name="model", registered_model_name=name)
    finally:
        mlflow.set_tracking_uri(previous)
    return str(info.registered_model_version)


@pytest.fixture(scope="session")
def model(mlflow_uri) -> Model:
    """A registered ONNX model whose alias ``champion`` points at its version."""
    from mlflow import MlflowClient

    name = f"deploy_iris_{uuid.uuid4().hex[:6]}"
    version = register_onnx(mlflow_uri, name)
    MlflowClient(mlflow_uri).set_registered_model_alias(name, "champion", version)
    return Model(name, version)


@dataclass
class Api:
    proc: Proc
    url: str
    env: dict[str, str]

    @property
    def state_dir(self) -> Path:
        return Path(self.env["MLSTACK_STATE_DIR"])

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def stop(self) -> None:
        self.proc.stop(timeout=30)


ApiFactory = Callable[..., Api]


@pytest.fixture(scope="module")
def api_factory(stack_env, workdir, model) -> Iterator[ApiFactory]:
    """Start ``mlstack api`` processes (stopped at the end of the module)."""
    procs: list[Proc] = []

    def _start(name: str, extra: dict[str, str] | None = None) -> Api:
        env = {**stack_env, "MLSTACK_MODEL_NAME": model.name, "MLSTACK_MLFLOW_EXPERIMENT": "deployments-tests",
               **(extra or {})}
        port = free_port()
        proc, url = start_api(workdir / "deployments" / f"{name}-{port}.log", env, port, what=f"mlstack api ({name})")
        procs.append(proc)
        return Api(proc, url, env)

    yield _start
    for p in procs:
        p.stop(timeout=30)


def wait_phase(client: httpx.Client, name: str, phases: set[str], namespace: str | None = None,
               timeout: float = READY_TIMEOUT) -> dict[str, Any]:
    """Poll ``GET /deployments/{name}`` until its phase is one of ``phases``; return the object."""
    params = {"namespace": namespace} if namespace else {}

    def check():
        r = client.get(f"/deployments/{name}", params=params)
        assert r.status_code == 200, r.text
        obj = r.json()
        return obj if obj["status"]["phase"] in phases else None

    return wait_until(check, timeout, interval=0.2, what=f"deployment {name} in {sorted(phases)}")


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next(c for c in obj["status"]["conditions"] if c["type"] == type_)


def pid_files(state_dir: str | Path, namespace: str, name: str) -> list[Path]:
    return sorted((Path(state_dir) / "deployments" / namespace / name / "servers").glob("*.pid"))
