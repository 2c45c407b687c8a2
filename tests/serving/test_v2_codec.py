"""The v2 codec on its own: JSON and binary tensors, requested outputs, and every malformed case."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest

from mlstack.serving.v2 import InferRequest, RequestedOutput, V2Error, decode_infer_request, encode_infer_response


def _req(*inputs: dict, **extra) -> bytes:
    return json.dumps({"inputs": list(inputs), **extra}).encode()


def test_decode_json_tensor_nested_or_flat():
    flat = decode_infer_request(_req({"name": "X", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}))
    nested = decode_infer_request(_req({"name": "X", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4]]}))
    for r in (flat, nested):
        (name, arr), = r.inputs
        assert name == "X" and arr.dtype == np.float32 and arr.tolist() == [[1, 2], [3, 4]]
    assert flat.outputs is None and flat.binary_output is False


def test_decode_binary_tensors_in_order():
    a = np.arange(6, dtype=np.float32).reshape(3, 2)
    b = np.array([7, 8], dtype=np.int64)
    header = _req(
        {"name": "A", "shape": [3, 2], "datatype": "FP32", "parameters": {"binary_data_size": a.nbytes}},
        {"name": "B", "shape": [2], "datatype": "INT64", "parameters": {"binary_data_size": b.nbytes}},
        outputs=[{"name": "out", "parameters": {"binary_data": True}}], id="r1",
        parameters={"binary_data_output": True},
    )
    r = decode_infer_request(header + a.tobytes() + b.tobytes(), header_length=len(header))
    np.testing.assert_array_equal(r.inputs[0][1], a)
    np.testing.assert_array_equal(r.inputs[1][1], b)
    assert r.id == "r1" and r.binary_output and r.outputs == [RequestedOutput("out", True)]


@pytest.mark.parametrize(("body", "header_length", "message"), [
    (b"{", None, "not valid JSON"),
    (b"[]", None, "JSON object"),
    (_req(), None, "non-empty"),
    (_req({"shape": [1], "datatype": "FP32", "data": [1]}), None, "'name'"),
    (_req({"name": "X", "shape": [-1], "datatype": "FP32", "data": [1]}), None, "non-negative"),
    (_req({"name": "X", "shape": "2", "datatype": "FP32", "data": [1]}), None, "'shape'"),
    (_req({"name": "X", "shape": [1], "datatype": "BYTES", "data": ["a"]}), None, "BYTES"),
    (_req({"name": "X", "shape": [1], "datatype": "F32", "data": [1]}), None, "unknown datatype"),
    (_req({"name": "X", "shape": [3], "datatype": "FP32", "data": [1, 2]}), None, "needs 3"),
    (_req({"name": "X", "shape": [2], "datatype": "FP32", "data": [[1], [2, 3]]}), None, "regular"),
    (_req({"name": "X", "shape": [2], "datatype": "INT32", "data": [1.5, 2]}), None, "not valid for INT32"),
    (_req({"name": "X", "shape": [2], "datatype": "FP32"}), None, "needs 'data'"),
    (_req({"name": "X", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 4}}), None,
     "does not match"),
])
def test_decode_rejects(body, header_length, message):
    with pytest.raises(V2Error, match=message) as e:
        decode_infer_request(body, header_length)
    assert e.value.status == 400


def test_decode_rejects_truncated_or_extra_binary():
    header = _req({"name": "X", "shape": [2], "datatype": "FP32", "parameters": {"binary_data_size": 8}})
    with pytest.raises(V2Error, match="truncated"):
        decode_infer_request(header + b"\0" * 4, len(header))
    with pytest.raises(V2Error, match="not claimed"):
        decode_infer_request(header + b"\0" * 12, len(header))
    with pytest.raises(V2Error, match="outside the body"):
        decode_infer_request(header, len(header) + 1)


def test_encode_json_all_outputs():
    outputs = {"label": np.array([1, 2], dtype=np.int64), "probabilities": np.array([[0.5, 0.5], [0.25, 0.75]],
                                                                                      dtype=np.float32)}
    body, hlen = encode_infer_response("m", "3", outputs, InferRequest(inputs=[], id="x"))
    assert hlen is None
    resp = orjson.loads(body)
    assert resp == {"model_name": "m", "model_version": "3", "id": "x", "outputs": [
        {"name": "label", "datatype": "INT64", "shape": [2], "data": [1, 2]},
        {"name": "probabilities", "datatype": "FP32", "shape": [2, 2], "data": [0.5, 0.5, 0.25, 0.75]},
    ]}


def test_encode_binary_selected_outputs_roundtrip():
    outputs = {"label": np.array([3, 4, 5], dtype=np.int64), "probabilities": np.eye(3, dtype=np.float32)}
    req = InferRequest(inputs=[], outputs=[RequestedOutput("probabilities", True), RequestedOutput("label", False)])
    body, hlen = encode_infer_response("m", None, outputs, req)
    assert hlen is not None
    header = orjson.loads(body[:hlen])
    assert "model_version" not in header
    probs, label = header["outputs"]
    assert probs["parameters"]["binary_data_size"] == 36 and "data" not in probs
    assert label["data"] == [3, 4, 5]
    np.testing.assert_array_equal(np.frombuffer(body[hlen:], np.float32).reshape(3, 3), np.eye(3))


def test_encode_request_level_binary_default_and_unknown_output():
    outputs = {"label": np.array([1], dtype=np.int64)}
    body, hlen = encode_infer_response("m", None, outputs, InferRequest(inputs=[], binary_output=True))
    assert hlen is not None and np.frombuffer(body[hlen:], np.int64).tolist() == [1]
    with pytest.raises(V2Error, match="unknown output 'p'"):
        encode_infer_response("m", None, outputs, InferRequest(inputs=[], outputs=[RequestedOutput("p", False)]))
