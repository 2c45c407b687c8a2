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


def test_payload_log_gathers_every_replicas_samples_in_one_collector(ray_serve_url, onnx_model_dir, iris, redis_url):
    """sample_rate 1 over 2 replicas: each request's record (under the X-Request-ID it was answered with) reaches the
    application's collector, read with one cursor at ``/v2/monitoring/payloads`` through the proxy, and the
    monitor drains it into the deployment's Redis stream like a pod's ring. Killing the collector fails no
    request; Serve starts a new one and records flow again (the monitor sees its sequence start over)."""
    import asyncio

    import httpx
    import ray
    import redis.asyncio as aioredis
    from ray import serve

    from mlstack.monitoring.monitor import Monitor, Profiles, Target
    from mlstack.monitoring.quality import Quality
    from mlstack.monitoring.settings import MonitorSettings
    from mlstack.serving.rayserve import build_app
    from mlstack_operator.contract import ModelDeploymentSpec
    from tests.utils.procs import wait_until

    base = ray_serve_url.rsplit("/", 1)[0] + "/iris-logged"
    serve.run(build_app({"model_uri": str(onnx_model_dir), "name": "iris", "num_cpus": 0.25, "num_replicas": 2,
                         "sample_rate": 1.0}), name="iris-logged", route_prefix="/iris-logged")
    assert get(ray_serve_url + "/v2/monitoring/payloads").status == 404  # the fixture's app logs nothing
    ids = {}
    with httpx.Client(timeout=30) as c:
        for i in range(40):
            given = {"x-request-id": f"caller-{i}"} if i % 2 else {}
            if i % 4 < 2:
                r = c.post(base + "/predict", json={"instances": iris.x[i:i + 1].tolist()}, headers=given)
            else:
                r = c.post(base + "/v2/models/iris/infer", headers=given, json={
                    "inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": iris.x[i].tolist()}]})
            assert r.status_code == 200, r.text
            assert r.headers["x-request-id"] == given.get("x-request-id", r.headers["x-request-id"])
            ids[r.headers["x-request-id"]] = i

        def page(after=0, limit=1000):
            r = c.get(base + "/v2/monitoring/payloads", params={"after": after, "limit": limit})
            assert r.status_code == 200, r.text
            return r.json()

        full = wait_until(lambda: len((p := page())["records"]) >= 40 and p, 30, interval=0.2,
                          what="40 records in the collector")
        assert sorted(rec["id"] for rec in full["records"]) == sorted(ids) and full["next"] == 40
        assert full["missed"] == full["dropped"] == 0
        assert {rec["track"] for rec in full["records"]} == {"stable"}
        for rec in full["records"]:
            assert rec["inputs"] == [pytest.approx(iris.x[ids[rec["id"]]].tolist(), rel=1e-6)], rec
        first, rest = page(0, 15), page(15)
        assert [x["id"] for x in first["records"] + rest["records"]] == [x["id"] for x in full["records"]]
        assert c.get(base + "/v2/monitoring/payloads", params={"after": "x"}).status_code == 400

        # the monitor drains it as it drains a pod: one URL, records into the deployment's stream
        async def drain() -> tuple[int, list]:
            r = aioredis.from_url(redis_url, decode_responses=True)
            ms = MonitorSettings(key_prefix=f"mlstack:monitoring:rs{os.getpid()}")
            m = Monitor(r, ms, None, None, Profiles(None, ms), Quality(r, ms))
            spec = ModelDeploymentSpec.model_validate({"model": {"name": "iris", "version": "1"},
                                                       "server": "rayserve"})
            t = Target("default", "iris-logged", spec, (("stable", base),))
            try:
                n = await m.drain(t)
                return n, await r.xrange(m.stream_key(t))
            finally:
                await m.http.aclose()
                await r.aclose()

        n, entries = asyncio.run(drain())
        assert n == 40 and len(entries) == 40

        # the collector goes away: requests are answered all the same
        [collector] = [a for a in ray.util.list_named_actors(all_namespaces=True)
                       if "iris-logged" in a["name"] and "PayloadCollector" in a["name"]]
        ray.kill(ray.get_actor(collector["name"], namespace=collector["namespace"]), no_restart=False)
        for i in range(20):
            r = c.post(base + "/predict", json={"instances": iris.x[i:i + 1].tolist()})
            assert r.status_code == 200, r.text
        # a new collector: later requests are logged again, its sequence starting over
        def logged_again():
            r = c.post(base + "/predict", json={"instances": iris.x[:1].tolist()}, headers={"x-request-id": "after"})
            assert r.status_code == 200
            p = c.get(base + "/v2/monitoring/payloads")
            return p.status_code == 200 and any(x["id"] == "after" for x in p.json()["records"]) and p.json()
        again = wait_until(logged_again, 60, interval=0.5, what="records in a new collector")
        assert not ids.keys() & {x["id"] for x in again["records"]}  # a new ring: the old records are gone
    serve.delete("iris-logged")
