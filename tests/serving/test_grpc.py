"""Open Inference Protocol v2 over gRPC on a real ``mlstack serve --grpc-port`` process, driven by
Triton's own client (``tritonclient.grpc``) and its generated stubs, unchanged."""

from __future__ import annotations

import concurrent.futures

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.utils.http import get, metric, post


@pytest.fixture(scope="module")
def server(serve, onnx_model_dir):
    return serve(str(onnx_model_dir), name="iris", grpc=True)


@pytest.fixture(scope="module")
def client(server):
    c = triton.InferenceServerClient(url=server.grpc)
    yield c
    c.close()


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.grpc) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def test_health_and_metadata(client):
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("iris")
    meta = client.get_model_metadata("iris", as_json=True)
    assert meta["name"] == "iris"
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "X", "datatype": "FP32", "shape": ["-1", "4"]}]
    assert {o["name"] for o in meta["outputs"]} == {"label", "probabilities"}
    server_meta = client.get_server_metadata(as_json=True)
    assert server_meta["name"] == "mlstack"


def test_raw_infer_matches_sklearn_and_http(client, server, iris, classifier):
    x = iris.x[:25]
    inp = triton.InferInput("X", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = client.infer("iris", [inp], request_id="req-1")
    np.testing.assert_array_equal(result.as_numpy("label"), classifier.predict(x))
    np.testing.assert_allclose(result.as_numpy("probabilities"), classifier.predict_proba(x), atol=1e-5)
    resp = result.get_response()
    assert resp.id == "req-1"
    assert resp.model_name == "iris"
    # the same answer as HTTP v2 from the same process
    http = post(f"{server.base}/v2/models/iris/infer",
                {"inputs": [{"name": "X", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
                 "outputs": [{"name": "label"}]})
    assert http.status == 200
    assert http.json()["outputs"][0]["data"] == result.as_numpy("label").tolist()


def test_requested_output(client, iris, classifier):
    x = iris.x[:3]
    inp = triton.InferInput("X", list(x.shape), "FP32").set_data_from_numpy(x)
    result = client.infer("iris", [inp], outputs=[triton.InferRequestedOutput("label")])
    assert [o.name for o in result.get_response().outputs] == ["label"]
    assert result.as_numpy("probabilities") is None
    np.testing.assert_array_equal(result.as_numpy("label"), classifier.predict(x))


def test_typed_contents_infer(stub, iris, classifier):
    """Typed ``contents`` in, typed ``contents`` back (Triton's generated stub, no raw bytes)."""
    x = iris.x[40:60]
    req = service_pb2.ModelInferRequest(model_name="iris", id="typed")
    t = req.inputs.add(name="X", datatype="FP32", shape=list(x.shape))
    t.contents.fp32_contents.extend(x.ravel().tolist())
    resp = stub.ModelInfer(req, timeout=30)
    assert not resp.raw_output_contents
    assert resp.id == "typed"
    out = {o.name: o for o in resp.outputs}
    assert out["label"].datatype == "INT64"
    assert list(out["label"].shape) == [20]
    np.testing.assert_array_equal(np.array(out["label"].contents.int64_contents), classifier.predict(x))
    proba = np.array(out["probabilities"].contents.fp32_contents).reshape(list(out["probabilities"].shape))
    np.testing.assert_allclose(proba, classifier.predict_proba(x), atol=1e-5)


def _raw(x: np.ndarray, name: str = "X", datatype: str = "FP32", shape: list[int] | None = None,
         model: str = "iris") -> service_pb2.ModelInferRequest:
    req = service_pb2.ModelInferRequest(model_name=model)
    req.inputs.add(name=name, datatype=datatype, shape=shape if shape is not None else list(x.shape))
    req.raw_input_contents.append(x.tobytes())
    return req


X1 = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
TYPED_SHORT = service_pb2.ModelInferRequest(model_name="iris")
TYPED_SHORT.inputs.add(name="X", datatype="FP32", shape=[1, 4]).contents.fp32_contents.extend([1.0, 2.0])


@pytest.mark.parametrize(("case", "request_", "code", "message"), [
    ("unknown model", _raw(X1, model="nope"), grpc.StatusCode.NOT_FOUND, "model 'nope' not found"),
    ("wrong features", _raw(np.ones((2, 3), np.float32)), grpc.StatusCode.INVALID_ARGUMENT,
     "3 features per row, the model expects 4"),
    ("1-D input", _raw(np.ones(4, np.float32)), grpc.StatusCode.INVALID_ARGUMENT, "must be 2-D"),
    ("raw size vs shape", _raw(X1, shape=[2, 4]), grpc.StatusCode.INVALID_ARGUMENT, "needs 32"),
    ("unknown datatype", _raw(X1, datatype="FP8"), grpc.StatusCode.INVALID_ARGUMENT, "unknown datatype 'FP8'"),
    ("BYTES", _raw(X1, datatype="BYTES"), grpc.StatusCode.INVALID_ARGUMENT, "BYTES is not supported"),
    ("wrong input name", _raw(X1, name="Y"), grpc.StatusCode.INVALID_ARGUMENT, "unknown input 'Y'"),
    ("typed count vs shape", TYPED_SHORT, grpc.StatusCode.INVALID_ARGUMENT, "has 2 elements"),
])
def test_errors_are_status_codes(stub, case, request_, code, message):
    with pytest.raises(grpc.RpcError) as e:
        stub.ModelInfer(request_, timeout=30)
    assert e.value.code() == code, case
    assert message in e.value.details(), case


def test_unknown_model_in_client(client):
    with pytest.raises(InferenceServerException) as e:
        client.get_model_metadata("nope")
    assert e.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as e:
        client.is_model_ready("nope")
    assert e.value.status() == "StatusCode.NOT_FOUND"
    with pytest.raises(InferenceServerException) as e:
        client.infer("iris", [triton.InferInput("X", [1, 4], "FP32").set_data_from_numpy(X1)],
                     outputs=[triton.InferRequestedOutput("nope")])
    assert e.value.status() == "StatusCode.INVALID_ARGUMENT"


def test_grpc_and_http_share_the_batcher(server, iris, classifier, stub):
    """Concurrent gRPC and HTTP requests land in the same onnxruntime batches (one model, one batcher)."""
    before = metric(get(f"{server.base}/metrics").body.decode(), "mlstack_serve_batch_requests_sum")
    rows = [iris.x[i:i + 1] for i in range(60)]

    def one(i: int) -> int:
        if i % 2:
            r = post(f"{server.base}/predict", {"instances": rows[i].tolist()})
            assert r.status == 200
            return r.json()["predictions"][0]
        resp = stub.ModelInfer(_raw(rows[i]), timeout=30)
        label = next(k for k, o in enumerate(resp.outputs) if o.name == "label")
        return int(np.frombuffer(resp.raw_output_contents[label], np.int64)[0])

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        labels = list(pool.map(one, range(len(rows))))
    assert labels == classifier.predict(iris.x[:60]).tolist()
    text = get(f"{server.base}/metrics").body.decode()
    assert metric(text, "mlstack_serve_batch_requests_sum") - before == len(rows)
    assert metric(text, "mlstack_serve_requests_total", endpoint="grpc_infer", status="200") >= 30


@pytest.mark.parametrize("transport", ["http1", "uvicorn"])
def test_grpc_port_taken_fails_fast(serve, onnx_model_dir, server, transport):
    """A gRPC port that cannot be bound stops the server with a non-zero exit, not a half-up server, and says
    why, on either HTTP transport."""
    import os
    import subprocess
    import sys

    port = server.grpc.rsplit(":", 1)[1]
    proc = subprocess.run([sys.executable, "-m", "mlstack", "serve", "--model", str(onnx_model_dir),
                           "--host", "127.0.0.1", "--port", "0", "--grpc-port", port],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MLSTACK_SERVE_HTTP_SERVER": transport})
    assert proc.returncode != 0
    assert f"OSError: could not bind gRPC to 127.0.0.1:{port}" in proc.stderr, proc.stderr[-2000:]


def test_large_tensors_cross_flow_control_windows(client, iris, classifier):
    """A request and an answer far over HTTP/2's 64 KiB initial windows and 16 KiB frames arrive whole."""
    x = np.tile(iris.x, (200, 1))  # 30,000 rows: 480 KB in, 240 KB of labels + 360 KB of probabilities out
    inp = triton.InferInput("X", list(x.shape), "FP32").set_data_from_numpy(x)
    result = client.infer("iris", [inp])
    np.testing.assert_array_equal(result.as_numpy("label"), np.tile(classifier.predict(iris.x), 200))
    assert result.as_numpy("probabilities").shape == (len(x), 3)


def test_many_calls_in_flight_on_one_channel(stub, iris, classifier):
    """Concurrent streams on one HTTP/2 connection are answered each with its own rows."""
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(stub.ModelInfer, _raw(iris.x[i:i + 1]), timeout=30) for i in range(150)]
        labels = []
        for f in futures:
            resp = f.result()
            k = next(k for k, o in enumerate(resp.outputs) if o.name == "label")
            labels.append(int(np.frombuffer(resp.raw_output_contents[k], np.int64)[0]))
    assert labels == classifier.predict(iris.x[:150]).tolist()


def test_unimplemented_method(stub):
    with pytest.raises(grpc.RpcError) as e:
        stub.RepositoryIndex(service_pb2.RepositoryIndexRequest(), timeout=30)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "RepositoryIndex" in e.value.details()


def test_grpcio_server_still_serves(serve, onnx_model_dir, iris, classifier):
    """MLSTACK_SERVE_GRPC_SERVER=grpcio: grpc.aio.server instead of the loop's own HTTP/2 server, same answers."""
    s = serve(str(onnx_model_dir), name="iris", grpc=True, env={"MLSTACK_SERVE_GRPC_SERVER": "grpcio"})
    c = triton.InferenceServerClient(url=s.grpc)
    try:
        assert c.is_model_ready("iris")
        x = iris.x[:5]
        result = c.infer("iris", [triton.InferInput("X", list(x.shape), "FP32").set_data_from_numpy(x)])
        np.testing.assert_array_equal(result.as_numpy("label"), classifier.predict(x))
        with pytest.raises(InferenceServerException) as e:
            c.is_model_ready("nope")
        assert e.value.status() == "StatusCode.NOT_FOUND"
    finally:
        c.close()
