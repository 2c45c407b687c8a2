"""Exact canary splits in ``mlstack serve``: a real stable + canary pair (two processes), measured.

The stable server (``--canary-url``, ``--canary-percent``) forwards exactly P of every 100 inference
requests to the canary's server; the share is counted from the answers (``X-Model-Track``) and from the
canary's own ``/metrics`` (the requests it really served), over 2,000 requests from 8 concurrent clients.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from mlstack.serving.canary import CanaryCounter, canary_turn, splits
from tests.utils.http import get, metric, post

N = 2000


def test_canary_turn_is_exact_per_hundred_and_evenly_spread():
    for percent in range(1, 100):
        turns = [canary_turn(n, percent) for n in range(300)]
        assert sum(turns[:100]) == percent and sum(turns) == 3 * percent
        gaps = np.diff([i for i, t in enumerate(turns) if t])  # spread out, not in a burst
        assert gaps.max() - gaps.min() <= 1
    c = CanaryCounter(10)
    assert sum(c.take() for _ in range(1000)) == 100
    with pytest.raises(ValueError, match=r"1\.\.99"):
        CanaryCounter(0)


def test_only_inference_takes_part_in_the_split():
    assert splits("POST", "/predict") and splits("POST", "/v2/models/iris/infer")
    assert not splits("POST", "/v2/models/iris/versions/3/infer")  # a named version: the server that has it
    assert not any(splits(m, p) for m, p in (("GET", "/predict"), ("GET", "/v2/health/ready"),
                                             ("GET", "/metrics"), ("GET", "/v2/models/iris")))


@pytest.fixture(scope="module")
def canary(serve, sklearn_model_dir):
    # a different flavour of the same classifier (pyfunc, not onnxruntime): same answers, other process
    return serve(str(sklearn_model_dir), name="iris", grpc=True)


@pytest.fixture(scope="module")
def stable(serve, onnx_model_dir, canary):
    return serve(str(onnx_model_dir), name="iris", grpc=True,
                 args=["--canary-url", canary.base, "--canary-percent", "10", "--canary-grpc", canary.grpc])


def _served(base: str, endpoint: str) -> float:
    return metric(get(base + "/metrics").body.decode(), "mlstack_serve_requests_total", endpoint=endpoint,
                  status="200")


def test_share_is_exact_over_2000_requests(stable, canary, iris, classifier):
    """10 % over 2,000 requests (/predict and v2 infer mixed, 8 clients at once): 200 to the canary."""
    before = _served(canary.base, "predict") + _served(canary.base, "infer")
    rows = iris.x[:2].tolist()
    expected = classifier.predict(iris.x[:2]).tolist()
    infer_body = {"inputs": [{"name": "X", "shape": [2, 4], "datatype": "FP32", "data": rows}]}

    def one(i: int) -> tuple[str, float]:
        t = time.perf_counter()
        if i % 2:
            r = post(stable.base + "/predict", {"instances": rows})
            assert r.status == 200, r.body
            assert r.json()["predictions"] == expected
        else:
            r = post(stable.base + "/v2/models/iris/infer", infer_body)
            assert r.status == 200, r.body
            assert r.json()["outputs"][0]["data"] == expected
        return r.headers["x-model-track"], time.perf_counter() - t

    t0 = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(N)))
    took = time.perf_counter() - t0
    tracks = [t for t, _ in answers]
    share = 100 * tracks.count("canary") / N
    served = _served(canary.base, "predict") + _served(canary.base, "infer") - before
    p50 = {k: 1000 * float(np.median([d for t, d in answers if t == k])) for k in ("stable", "canary")}
    print(f"\ncanary share {share:.2f} % of {N} (asked 10 %); canary served {served:.0f}; {N / took:.0f} req/s; "
          f"median latency stable {p50['stable']:.2f} ms, canary (one more hop) {p50['canary']:.2f} ms")
    assert set(tracks) == {"stable", "canary"}
    assert abs(share - 10) <= 2
    assert served == tracks.count("canary")  # the canary process really answered them
    text = get(stable.base + "/metrics").body.decode()
    assert metric(text, "mlstack_serve_canary_requests_total", result="forwarded") >= served
    assert metric(text, "mlstack_serve_canary_requests_total", result="fallback") == 0


def test_a_named_version_and_non_inference_routes_stay_on_stable(stable, canary):
    before = _served(canary.base, "model_metadata")
    for _ in range(30):
        assert get(stable.base + "/v2/models/iris").status == 200
    assert _served(canary.base, "model_metadata") == before
    # X-Model-Version pins a request to the server that has that version (the API's /inference for a model
    # version sends it): never split (this stable serves a model directory: no version of its own to refuse)
    before = _served(canary.base, "predict")
    tracks = {post(stable.base + "/predict", {"instances": [[5.1, 3.5, 1.4, 0.2]]},
                   headers={"X-Model-Version": "1"}).headers["x-model-track"] for _ in range(30)}
    assert tracks == {"stable"} and _served(canary.base, "predict") == before


def test_grpc_model_infer_splits_with_the_same_counter(stable, canary, iris, classifier):
    import tritonclient.grpc as g

    before = metric(get(canary.base + "/metrics").body.decode(), "mlstack_serve_requests_total",
                    endpoint="grpc_infer", status="200")
    client = g.InferenceServerClient(stable.grpc)
    try:
        x = g.InferInput("X", [1, 4], "FP32")
        x.set_data_from_numpy(iris.x[:1])
        for _ in range(200):
            assert client.infer("iris", [x]).as_numpy("label").tolist() == classifier.predict(iris.x[:1]).tolist()
    finally:
        client.close()
    served = metric(get(canary.base + "/metrics").body.decode(), "mlstack_serve_requests_total",
                    endpoint="grpc_infer", status="200") - before
    assert served == 20  # 10 % of 200, exactly: gRPC shares the HTTP requests' count


def test_canary_bad_input_is_the_canarys_answer(stable):
    """A 4xx from the canary is its answer (the input is bad there too), not a fallback."""
    codes = {post(stable.base + "/predict", {"instances": [[1, 2]]}).status for _ in range(20)}
    assert codes == {422}


def test_a_dead_canary_is_answered_by_stable_and_counted(serve, onnx_model_dir, sklearn_model_dir, iris):
    down = serve(str(sklearn_model_dir), name="iris")
    front = serve(str(onnx_model_dir), name="iris", args=["--canary-url", down.base, "--canary-percent", "50"])
    down.proc.stop()
    t0 = time.perf_counter()
    tracks = []
    for _ in range(100):
        r = post(front.base + "/predict", {"instances": iris.x[:1].tolist()})
        assert r.status == 200, r.body  # never fails because of the canary
        tracks.append(r.headers["x-model-track"])
    took = time.perf_counter() - t0
    assert set(tracks) == {"stable"}
    text = get(front.base + "/metrics").body.decode()
    assert metric(text, "mlstack_serve_canary_requests_total", result="fallback") == 50
    assert took < 20, f"100 requests with a dead canary took {took:.1f}s"


def test_bad_canary_arguments_are_refused(serve, onnx_model_dir, workdir):
    import subprocess
    import sys

    for extra, msg in ((["--canary-url", "http://127.0.0.1:1"], "go together"),
                       (["--canary-url", "ftp://x", "--canary-percent", "5"], "http(s) URL")):
        r = subprocess.run([sys.executable, "-m", "mlstack", "serve", "--model", str(onnx_model_dir), "--port", "1",
                            *extra], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and msg in r.stderr, r.stderr
