"""The payload log's first stage in ``mlstack serve`` (issue 15, item 1): every response carries X-Request-ID; a
sampled share of inference requests is kept in a bounded ring that the monitor drains with a cursor
(``GET /v2/monitoring/payloads``); a canary logs what it serves under the id the client got, as track ``canary``."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.utils.http import get, post

ROW = [5.1, 3.5, 1.4, 0.2]
ALL = {"MLSTACK_SERVE_MONITORING_SAMPLE_RATE": "1", "MLSTACK_SERVE_MONITORING_CAPACITY": "50"}


def v2_body(rows):
    return {"inputs": [{"name": "X", "shape": [len(rows), 4], "datatype": "FP32",
                        "data": [v for r in rows for v in r]}]}


def payloads(base: str, after: int = 0, limit: int = 1000) -> dict:
    r = get(f"{base}/v2/monitoring/payloads?after={after}&limit={limit}")
    assert r.status == 200, r.body
    return r.json()


@pytest.fixture(scope="module")
def logged(serve, onnx_model_dir):
    return serve(str(onnx_model_dir), name="iris", env=ALL)


def test_every_request_is_logged_under_its_id(logged, iris):
    base = logged.base
    r = post(base + "/predict", {"instances": [ROW, iris.x[100].tolist()]}, headers={"X-Request-ID": "req-abc"})
    assert r.status == 200 and r.headers["x-request-id"] == "req-abc"
    r2 = post(base + "/v2/models/iris/infer", v2_body([ROW]))
    assert r2.status == 200 and r2.headers["x-request-id"] and r2.headers["x-request-id"] != "req-abc"
    assert post(base + "/predict", {"instances": [[1, 2]]}).status == 422  # refused: not logged
    assert get(base + "/v2/health/ready").headers["x-request-id"]  # every response has one

    page = payloads(base)
    first, second = page["records"]
    assert first["id"] == "req-abc" and first["model"] == "iris" and first["track"] == "stable"
    assert first["inputs"] == [pytest.approx(ROW), pytest.approx(iris.x[100].tolist())]
    assert first["outputs"] == r.json()["predictions"] and first["latency_ms"] > 0 and first["ts"] > 0
    assert second["id"] == r2.headers["x-request-id"] and second["outputs"] == [0]
    assert page["next"] == 2 and page["missed"] == 0 and page["sample_rate"] == 1.0
    assert payloads(base, after=page["next"])["records"] == []

    # a caller's id that is not a sane one is replaced, not echoed
    r = post(base + "/predict", {"instances": [ROW]}, headers={"X-Request-ID": "x" * 300})
    assert r.status == 200 and r.headers["x-request-id"] != "x" * 300


def test_the_ring_is_bounded_and_says_what_was_lost(logged):
    base = logged.base
    start = payloads(base)["next"]
    for _ in range(60):  # a ring of 50: the 10 oldest unread go
        assert post(base + "/predict", {"instances": [ROW]}).status == 200
    page = payloads(base, after=start, limit=20)
    assert page["missed"] == 10 and len(page["records"]) == 20 and page["dropped"] >= 10
    rest = payloads(base, after=page["next"])
    assert len(rest["records"]) == 30 and rest["missed"] == 0
    for query in ("after=x", "after=-1", "limit=0"):
        assert get(f"{base}/v2/monitoring/payloads?{query}").status == 400
    assert post(base + "/v2/monitoring/payloads", {}).status == 405


def test_a_sample_rate_keeps_that_share(serve, onnx_model_dir):
    srv = serve(str(onnx_model_dir), name="iris", env={"MLSTACK_SERVE_MONITORING_SAMPLE_RATE": "0.1"})
    with ThreadPoolExecutor(8) as pool:
        assert all(r.status == 200 for r in pool.map(lambda _: post(srv.base + "/predict", {"instances": [ROW]}),
                                                     range(1000)))
    kept = len(payloads(srv.base)["records"])
    assert 60 <= kept <= 140, kept  # binomial(1000, 0.1): mean 100, sd 9.5
    off = serve(str(onnx_model_dir), name="iris", env={"MLSTACK_SERVE_MONITORING_SAMPLE_RATE": "0"})
    assert post(off.base + "/predict", {"instances": [ROW]}).status == 200
    assert payloads(off.base)["records"] == [] and payloads(off.base)["sample_rate"] == 0.0


def test_a_canary_logs_what_it_serves_under_the_clients_id(serve, onnx_model_dir, sklearn_model_dir):
    canary = serve(str(sklearn_model_dir), name="iris", env={**ALL, "MLSTACK_SERVE_TRACK": "canary"})
    stable = serve(str(onnx_model_dir), name="iris", env=ALL,
                   args=["--canary-url", canary.base, "--canary-percent", "50"])
    answered = {}
    for i in range(20):
        given = {"X-Request-ID": f"c-{i}"} if i % 2 else {}
        r = post(stable.base + "/predict", {"instances": [ROW]}, headers=given)
        assert r.status == 200
        answered[r.headers["x-request-id"]] = r.headers["x-model-track"]
    on_canary = {rec["id"] for rec in payloads(canary.base)["records"]}
    on_stable = {rec["id"] for rec in payloads(stable.base)["records"]}
    assert len(on_canary) == 10 and len(on_stable) == 10 and not on_canary & on_stable
    assert {i for i, t in answered.items() if t == "canary"} == on_canary
    assert {rec["track"] for rec in payloads(canary.base)["records"]} == {"canary"}


def test_grpc_requests_are_sampled_too_and_every_answer_has_an_id(serve, onnx_model_dir, iris):
    """ModelInfer over gRPC goes into the same ring as HTTP: under the request's ``id``, else one the server gives
    (and answers with), so feedback can join a gRPC prediction as it joins an HTTP one."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    srv = serve(str(onnx_model_dir), name="iris", env=ALL, grpc=True)
    answered = []
    with grpc.insecure_channel(srv.grpc) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        for i, given in enumerate(("g-1", "", "")):
            req = service_pb2.ModelInferRequest(model_name="iris", id=given)
            t = req.inputs.add(name="X", datatype="FP32", shape=[1, 4])
            t.contents.fp32_contents.extend(iris.x[i].tolist())
            answered.append(stub.ModelInfer(req, timeout=30).id)
    assert answered[0] == "g-1" and all(answered) and len(set(answered)) == 3
    records = payloads(srv.base)["records"]
    assert [r["id"] for r in records] == answered
    for i, r in enumerate(records):
        assert r["track"] == "stable" and r["inputs"] == [pytest.approx(iris.x[i].tolist())] and r["latency_ms"] > 0
        assert len(r["outputs"]) == 1
