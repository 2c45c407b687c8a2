"""The model-server image (fastapi/Dockerfile, target ``server``) installs a hand-picked list of packages, not the
whole distribution. Without Docker here, this checks the list against what ``mlstack serve`` really imports while
it serves: a real server run under ``PYTHONPROFILEIMPORTTIME`` (every import, lazy ones included, is logged), driven
through /predict, v2 infer, gRPC ModelInfer and the canary forwarder, and every third-party distribution it
imported must be in the list or required by it (transitively, from the installed packages' metadata)."""

from __future__ import annotations

import re
import shlex
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton  # not mlstack's own stubs: both register inference.* in one descriptor pool
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.utils.http import post

ROOT = Path(__file__).resolve().parents[2]
ROW = [5.1, 3.5, 1.4, 0.2]
# imported only when installed (each importer has an ImportError fallback): here because the test venv has them
OPTIONAL = {
    "grpc_tools", "grpc_reflection",  # grpc's __init__ tries them
    "pyarrow",  # pandas.compat
    "psutil",  # opentelemetry.sdk.resources (mlflow-tracing)
    "python_multipart",  # starlette.formparsers
    "brotli", "_brotli",  # aiohttp's decompression
    "rich",  # sklearn's progress-bar callback (sklearn.utils._optional_dependencies)
    "_distutils_hack",  # setuptools' site hook, not an import of ours
}


def server_image_requirements() -> list[Requirement]:
    """The packages the Dockerfile's server-build stage installs (its `pip install -c ... \\` command)."""
    text = (ROOT / "fastapi" / "Dockerfile").read_text()
    stage = text[text.index("AS server-build"):]
    command = re.search(r"pip install -c /wheels/constraints\.txt(.*?)&&", stage, re.S)
    assert command, "the server-build stage's pip install -c line moved: update this test"
    return [Requirement(tok) for tok in shlex.split(command.group(1).replace("\\\n", " "))]


def closure(reqs: list[Requirement]) -> set[str]:
    """Every distribution ``reqs`` bring in, by the installed packages' own metadata (markers evaluated)."""
    seen: set[str] = set()
    todo = [(r.name, frozenset(r.extras)) for r in reqs]
    while todo:
        name, extras = todo.pop()
        key = canonicalize_name(name)
        if key in seen and not extras:
            continue
        seen.add(key)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requires:
            r = Requirement(line)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if r.marker is None or any(r.marker.evaluate(env) for env in envs):
                todo.append((r.name, frozenset(r.extras)))
    return seen


def imported_modules(log: str) -> set[str]:
    """Third-party top-level modules in a ``-X importtime`` log (each with a distribution that provides it)."""
    tops = set()
    for line in log.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+\d+ \| +([\w.]+)$", line)
        if m:
            tops.add(m.group(1).split(".")[0])
    provided = metadata.packages_distributions()
    return {t for t in tops - set(sys.stdlib_module_names) - {"mlstack", "mlstack_operator"} - OPTIONAL
            if t in provided}


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
    installed = closure(server_image_requirements())
    provided = metadata.packages_distributions()
    missing = {m: provided[m] for m in used if not {canonicalize_name(d) for d in provided[m]} & installed}
    assert not missing, f"mlstack serve imports {missing}: add them to fastapi/Dockerfile's server-build"
