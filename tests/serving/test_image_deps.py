"""The model-server image (fastapi/Dockerfile, target ``server``) installs the mlstack wheel with the ``serve`` extra
only, not the whole distribution. Without Docker here, this checks that extra (read off the Dockerfile's install line,
resolved through pyproject.toml) against what ``mlstack serve`` really imports while it serves: a real server run under
``PYTHONPROFILEIMPORTTIME`` (every import, lazy ones included, is logged), driven through /predict, v2 infer, gRPC
ModelInfer and the canary forwarder, and every third-party distribution it imported must be declared for the image or
required by what is (transitively, from the installed packages' metadata). (The operator image: tests/operator.)"""

from __future__ import annotations

import numpy as np
import tritonclient.grpc as triton  # not mlstack's own stubs: both register inference.* in one descriptor pool

from tests.utils.http import post
from tests.utils.image_deps import ROOT, closure, image_requirements, imported_modules, undeclared

ROW = [5.1, 3.5, 1.4, 0.2]


def test_the_server_image_holds_everything_mlstack_serve_imports(serve, onnx_model_dir, sklearn_model_dir):
    env = {"PYTHONPROFILEIMPORTTIME": "1", "MLSTACK_SERVE_MONITORING_SAMPLE_RATE": "1"}
    canary = serve(str(sklearn_model_dir), name="iris", env=env)
    stable = serve(str(onnx_model_dir), name="iris", grpc=True, env=env,
                   args=["--canary-url", canary.base, "--canary-percent", "50"])
    for _ in range(4):  # both tracks answer: the forwarder's client is used
        assert post(stable.base + "/predict", {"instances": [ROW]}).status == 200
    assert post(stable.base + "/v2/models/iris/infer", {"inputs": [
        {"name": "X", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}).status == 200
    client = triton.InferenceServerClient(url=stable.grpc)
    try:
        x = np.array([ROW], dtype=np.float32)
        assert client.infer("iris", [triton.InferInput("X", [1, 4], "FP32").set_data_from_numpy(x)]).get_response()
    finally:
        client.close()

    used = imported_modules(stable.proc.log_path.read_text()) | imported_modules(canary.proc.log_path.read_text())
    assert {"onnxruntime", "numpy", "grpc"} <= used, sorted(used)  # the log was read as intended
    missing = undeclared(used, image_requirements(ROOT / "fastapi" / "Dockerfile", "server-build"))
    assert not missing, f"mlstack serve imports {missing}: add them to pyproject.toml's serve extra"


def test_the_server_image_holds_neither_the_apis_nor_the_operators_packages():
    installed = closure(image_requirements(ROOT / "fastapi" / "Dockerfile", "server-build"))
    assert {"mlflow-skinny", "onnxruntime", "grpcio", "fastapi"} <= installed, sorted(installed)
    assert not installed & {"ray", "mlflow", "redis", "apscheduler", "kopf", "kubernetes"}, sorted(installed)
