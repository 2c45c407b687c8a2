"""The model server inside a real local Ray Serve (the RayService ``import_path`` builder)."""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import pytest
import tritonclient.http as triton

from tests.utils.http import get, post
from tests.utils.procs import free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_serve_url(onnx_model_dir):
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray import serve

    from mlstack.serving.rayserve import build_app

    started = not ray.is_initialized()  # reuse a Ray another fixture started; stop only ours
    temp_dir = tempfile.mkdtemp(prefix="mlray-")  # short: Ray's unix socket paths must fit 107 bytes
    if started:
        ray.init(num_cpus=2, object_store_memory=256 * 1024 * 1024, include_dashboard=False,
                 _temp_dir=temp_dir, log_to_driver=False)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app({"model_uri": str(onnx_model_dir), "name": "iris", "num_cpus": 0.25}),
                  name="iris", route_prefix="/iris")
        yield f"http://127.0.0.1:{port}/iris"
    finally:
        serve.shutdown()
        if started:
            ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_rayserve_predict_and_v2(ray_serve_url, iris, classifier):
    rows = iris.x[[0, 75, 149]]
    r = post(ray_serve_url + "/predict", {"instances": rows.tolist()})
    assert r.status == 200, r.body
    assert r.json()["predictions"] == classifier.predict(rows).tolist()

    assert get(ray_serve_url + "/v2/models/iris/ready").status == 200
    assert get(ray_serve_url + "/v2/models/iris").json()["platform"] == "onnxruntime_onnx"
    with triton.InferenceServerClient(ray_serve_url.removeprefix("http://")) as client:
        for binary in (False, True):
            inp = triton.InferInput("X", list(iris.x.shape), "FP32")
            inp.set_data_from_numpy(iris.x, binary_data=binary)
            res = client.infer("iris", [inp], outputs=[triton.InferRequestedOutput("label", binary_data=binary)])
            np.testing.assert_array_equal(res.as_numpy("label"), classifier.predict(iris.x))

    r = post(ray_serve_url + "/predict", {"instances": [[1, 2]]})
    assert r.status == 422 and "expects 4" in r.json()["error"]
    r = post(ray_serve_url + "/v2/models/other/infer", {"inputs": []})
    assert r.status == 404 and "other" in r.json()["error"]


def test_build_app_rejects_bad_args():
    from mlstack.serving.rayserve import build_app

    with pytest.raises(ValueError, match="model_uri"):
        build_app({"name": "iris"})
    with pytest.raises(ValueError, match="bad model URI"):
        build_app({"model_uri": "models:/"})


def test_canary_turn_is_exact_per_hundred():
    from mlstack.serving.rayserve import canary_turn

    for percent in (1, 10, 25, 50, 99):
        assert sum(canary_turn(n, percent) for n in range(100)) == percent
        assert sum(canary_turn(n, percent) for n in range(100, 300)) == 2 * percent


def test_canary_split_inside_ray_serve(ray_serve_url, onnx_model_dir, sklearn_model_dir, iris):
    """10 % over 2,000 requests from 4 clients through Ray Serve's HTTP proxy: exactly 200 to the canary (a
    different flavour of the same classifier, so the answers agree)."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    import httpx
    from ray import serve

    from mlstack.serving.rayserve import build_app

    base = ray_serve_url.rsplit("/", 1)[0]
    serve.run(build_app({"model_uri": str(onnx_model_dir), "name": "iris", "num_cpus": 0.25,
                         "canary_model_uri": str(sklearn_model_dir), "canary_traffic_percent": 10}),
              name="iris-canary", route_prefix="/iris-canary")
    n = 2000

    def some(k: int) -> list[str]:
        out = []
        with httpx.Client(timeout=60) as c:
            for _ in range(k):
                r = c.post(base + "/iris-canary/predict", json={"instances": iris.x[:1].tolist()})
                assert r.status_code == 200, r.text
                out.append(r.headers["x-model-track"])
        return out

    t0 = time.perf_counter()
    with ThreadPoolExecutor(4) as pool:
        tracks = [t for part in pool.map(some, [n // 4] * 4) for t in part]
    share = 100 * tracks.count("canary") / n
    print(f"\nRay Serve canary share {share:.2f} % of {n} (asked 10 %), {n / (time.perf_counter() - t0):.0f} req/s")
    assert set(tracks) == {"stable", "canary"} and abs(share - 10) <= 2
    with pytest.raises(ValueError, match="go together"):
        build_app({"model_uri": str(onnx_model_dir), "canary_traffic_percent": 10})
