"""Shadow traffic in ``mlstack serve`` (issue 15, item 5): real stable + shadow processes.

The stable server (``--shadow-url``, ``--shadow-percent``) mirrors exactly that share of inference requests to the
shadow's server under the same request id; the client only ever gets the stable version's answer; both sides are
logged (the stable server logs what it mirrors whatever its sample rate, the shadow logs all it gets). A shadow
that is down or hangs costs the client nothing: its mirrors fail or are dropped, and are counted.
"""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from mlstack.serving.shadow import ShadowMirror, shadow_turn
from tests.utils.http import get, metric, post
from tests.utils.procs import free_port, wait_until

ROW = [5.1, 3.5, 1.4, 0.2]
N = 400


def records(base: str) -> list[dict]:
    out, after = [], 0
    while True:
        page = get(f"{base}/v2/monitoring/payloads?after={after}&limit=5000").json()
        out += page["records"]
        if not page["records"]:
            return out
        after = page["next"]


def test_shadow_turn_is_exact_at_any_share():
    for percent in (0.1, 0.5, 1, 12.5, 33.333, 50, 99.9, 100):
        m = ShadowMirror("http://127.0.0.1:1", percent)
        turns = [m.take() for _ in range(100_000)]
        assert sum(turns) == round(percent * 1000), percent  # exactly, over every 100,000 requests
    turns = [shadow_turn(n, 25_000) for n in range(400)]
    assert sum(turns[:4]) == 1 and np.diff([i for i, t in enumerate(turns) if t]).tolist() == [4] * 99
    for bad in (0, -1, 100.5):
        with pytest.raises(ValueError, match=r"\(0, 100\]"):
            ShadowMirror("http://x", bad)


@pytest.fixture(scope="module")
def pair(serve, registered_model, sklearn_model_dir, mlflow_uri):
    """The registered ONNX version (stable, logging nothing of its own accord: sample rate 0.001) mirroring 25% to
    the same classifier as a plain directory (shadow: no version, track shadow, every request logged)."""
    name, version = registered_model
    shadow = serve(str(sklearn_model_dir), name=name, env={"MLSTACK_SERVE_MONITORING_SAMPLE_RATE": "1",
                                                           "MLSTACK_SERVE_TRACK": "shadow"})
    # exactness is under test, not the mirror's deadline: a loaded CI machine may take seconds to answer a mirror
    stable = serve(f"models:/{name}/{version}", name=name,
                   env={"MLSTACK_MLFLOW_TRACKING_URI": mlflow_uri, "MLSTACK_SERVE_MONITORING_SAMPLE_RATE": "0.001",
                        "MLSTACK_SERVE_SHADOW_TIMEOUT_SECONDS": "30", "MLSTACK_SERVE_SHADOW_MAX_IN_FLIGHT": "1000"},
                   args=["--shadow-url", shadow.base, "--shadow-percent", "25"])
    return name, version, stable, shadow


def test_the_shadow_gets_exactly_its_share_and_never_answers_the_client(pair, iris):
    name, version, stable, shadow = pair
    rows = iris.x[::3].tolist()

    def one(i: int) -> tuple[str, str | None, str, list]:
        row = rows[i % len(rows)]
        if i % 2:
            r = post(f"{stable.base}/predict", {"instances": [row]}, headers={"X-Request-ID": f"c-{i}"})
            out = r.json()["predictions"]
        else:
            r = post(f"{stable.base}/v2/models/{name}/infer", {"inputs": [
                {"name": "X", "shape": [1, 4], "datatype": "FP32", "data": row}]}, headers={"X-Request-ID": f"c-{i}"})
            assert r.json()["model_version"] == version  # the body is the live version's
            out = r.json()["outputs"][0]["data"]
        assert r.status == 200
        return r.headers["x-request-id"], r.headers.get("x-model-version"), r.headers.get("x-model-track", ""), out

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(one, range(N)))
    assert {v for _, v, _, _ in answers} == {version}  # every answer is the live version's
    assert all(track != "shadow" for _, _, track, _ in answers)
    # pinned to a version, not inference, or not the model: never mirrored
    assert post(f"{stable.base}/v2/models/{name}/versions/{version}/infer", {"inputs": [
        {"name": "X", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}).status == 200
    assert get(f"{stable.base}/v2/health/ready").status == 200

    m = wait_until(lambda: (t := get(f"{stable.base}/metrics").body.decode()) and metric(
        t, "mlstack_serve_shadow_requests_total", result="mirrored") == N // 4 and t, 60, what="every mirror answered")
    assert metric(m, "mlstack_serve_shadow_requests_total", result="failed") == 0
    assert metric(m, "mlstack_serve_shadow_requests_total", result="dropped") == 0
    copies = records(shadow.base)
    assert len(copies) == N // 4  # exactly 25 of every 100
    assert {c["track"] for c in copies} == {"shadow"} and {c["version"] for c in copies} == {""}
    ids = {rid for rid, _, _, _ in answers}
    assert {c["id"] for c in copies} <= ids and len({c["id"] for c in copies}) == N // 4
    # the stable server logged its own answer to every mirrored request (its sample rate alone: ~0.4 of 400)
    live = {r["id"]: r for r in records(stable.base)}
    assert {c["id"] for c in copies} <= set(live)
    assert len(live) <= N // 4 + 5
    for c in copies:
        assert c["outputs"] == live[c["id"]]["outputs"] and live[c["id"]]["version"] == version
    shadow_metrics = get(f"{shadow.base}/metrics").body.decode()
    assert metric(shadow_metrics, "mlstack_serve_requests_total", endpoint="predict", status="200") + metric(
        shadow_metrics, "mlstack_serve_requests_total", endpoint="infer", status="200") == N // 4


def test_a_dead_or_hanging_shadow_costs_the_client_nothing(serve, registered_model, mlflow_uri):
    name, version = registered_model
    env = {"MLSTACK_MLFLOW_TRACKING_URI": mlflow_uri, "MLSTACK_SERVE_SHADOW_MAX_IN_FLIGHT": "2",
           "MLSTACK_SERVE_SHADOW_TIMEOUT_SECONDS": "10"}
    dead = serve(f"models:/{name}/{version}", name=name, env=env,
                 args=["--shadow-url", f"http://127.0.0.1:{free_port()}", "--shadow-percent", "100"])
    for _ in range(20):
        assert post(f"{dead.base}/predict", {"instances": [ROW]}).status == 200
    m = wait_until(lambda: (t := get(f"{dead.base}/metrics").body.decode()) and metric(
        t, "mlstack_serve_shadow_requests_total", result="failed") == 20 and t, 20, what="20 failed mirrors")
    assert metric(m, "mlstack_serve_shadow_requests_total", result="mirrored") == 0

    with socket.socket() as hang:  # accepts connections (the kernel's backlog) and never answers
        hang.bind(("127.0.0.1", 0))
        hang.listen(64)
        slow = serve(f"models:/{name}/{version}", name=name, env=env,
                     args=["--shadow-url", f"http://127.0.0.1:{hang.getsockname()[1]}", "--shadow-percent", "100"])
        took = []
        for _ in range(20):
            t0 = time.perf_counter()
            assert post(f"{slow.base}/predict", {"instances": [ROW]}).status == 200
            took.append(time.perf_counter() - t0)
        assert max(took) < 2.0, took  # never waits for the shadow (which times out after 10 s)
        m = get(f"{slow.base}/metrics").body.decode()
        assert metric(m, "mlstack_serve_shadow_requests_total", result="dropped") == 18  # 2 in flight, the rest dropped
        m = wait_until(lambda: (t := get(f"{slow.base}/metrics").body.decode()) and metric(
            t, "mlstack_serve_shadow_requests_total", result="failed") == 2 and t, 30, what="the 2 mirrors timed out")


def test_grpc_requests_are_mirrored_too(serve, registered_model, sklearn_model_dir, mlflow_uri, iris):
    """gRPC ModelInfer answered by the stable server: the same share goes to the shadow (its HTTP v2 endpoint,
    same input, same id), both answers logged under the id the gRPC client got back."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    name, version = registered_model
    shadow = serve(str(sklearn_model_dir), name=name, env={"MLSTACK_SERVE_MONITORING_SAMPLE_RATE": "1",
                                                           "MLSTACK_SERVE_TRACK": "shadow"})
    stable = serve(f"models:/{name}/{version}", name=name, grpc=True,
                   env={"MLSTACK_MLFLOW_TRACKING_URI": mlflow_uri, "MLSTACK_SERVE_MONITORING_SAMPLE_RATE": "0.001",
                        "MLSTACK_SERVE_SHADOW_TIMEOUT_SECONDS": "30"},
                   args=["--shadow-url", shadow.base, "--shadow-percent", "50"])
    ids = []
    with grpc.insecure_channel(stable.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for i in range(40):
            req = service_pb2.ModelInferRequest(model_name=name, id=f"g-{i}" if i % 2 else "")
            t = req.inputs.add(name="X", datatype="FP32", shape=[1, 4])
            t.contents.fp32_contents.extend(iris.x[i].tolist())
            resp = stub.ModelInfer(req, timeout=30)
            assert resp.model_version == version
            ids.append(resp.id)
    copies = wait_until(lambda: len(c := records(shadow.base)) == 20 and c, 60, what="20 mirrored gRPC requests")
    assert {c["track"] for c in copies} == {"shadow"} and {c["id"] for c in copies} <= set(ids)
    live = {r["id"]: r for r in records(stable.base)}  # what it mirrored (and ~0.04 sampled of its own accord)
    assert {c["id"] for c in copies} <= set(live) and len(live) <= 20 + 3
    for c in copies:
        assert c["outputs"] == live[c["id"]]["outputs"]
        np.testing.assert_allclose(c["inputs"], live[c["id"]]["inputs"], rtol=1e-6)
