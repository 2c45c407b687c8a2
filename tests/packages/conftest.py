"""A real API process for the upload tests, with small upload limits and its own model name.

``/inference`` serves ``MLSTACK_MODEL_NAME``: here ``packages_model``, so uploads can be served
without touching the API tests' ``iris_model``. Its temp dir is private so that the tests can check
that a refused upload leaves nothing behind.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from tests.utils.packages import EXPERIMENT, LIMITS, MODEL
from tests.utils.procs import start_api


@pytest.fixture(scope="session")
def pkg_tmp(workdir) -> Path:
    path = workdir / "packages-api-tmp"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def pkg_api(stack_env, workdir, pkg_tmp):
    env = {**stack_env, "MLSTACK_MLFLOW_EXPERIMENT": EXPERIMENT, "MLSTACK_MODEL_NAME": MODEL,
           "MLSTACK_SERVE_PORT_RANGE": "[27000, 27999]", "MLSTACK_STATE_DIR": str(workdir / "packages-state"),
           "TMPDIR": str(pkg_tmp), **{f"MLSTACK_PACKAGE_{k}": str(v) for k, v in LIMITS.items()}}
    proc, url = start_api(workdir / "packages-api.log", env, what="mlstack api (packages)")
    yield url
    proc.stop(timeout=30)


@pytest.fixture(scope="session")
def api(pkg_api):
    with httpx.Client(base_url=pkg_api, timeout=180) as c:
        yield c


@pytest.fixture(scope="session")
def mlflow_client(mlflow_uri) -> MlflowClient:
    return MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)


@pytest.fixture
def snapshot(mlflow_client, workdir, pkg_tmp):
    """What exists now: versions of every model, runs (deleted ones too), artifact files, temp entries."""

    def take() -> dict:
        versions = sorted((v.name, v.version) for v in mlflow_client.search_model_versions(max_results=10000))
        exps = [e.experiment_id for e in mlflow_client.search_experiments(view_type=ViewType.ALL)]
        runs = sorted(r.info.run_id for r in mlflow_client.search_runs(exps, run_view_type=ViewType.ALL,
                                                                        max_results=50000))
        artifacts = sorted(str(p) for p in (workdir / "mlflow" / "artifacts").rglob("*"))
        return {"versions": versions, "runs": runs, "artifacts": artifacts,
                "tmp": sorted(p.name for p in pkg_tmp.iterdir())}

    return take
