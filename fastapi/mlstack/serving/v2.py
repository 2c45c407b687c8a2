"""Open Inference Protocol v2 codec: JSON tensors and the binary tensor data extension (pure functions).

Request: ``{"id"?, "parameters"?, "inputs": [{"name", "shape", "datatype", "data" | parameters.binary_data_size}],
"outputs"?: [{"name", "parameters"?: {"binary_data": bool}}]}``. With the binary extension the body is the
JSON header (``Inference-Header-Content-Length`` bytes) followed by the raw tensors in input order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

V2_TO_NP: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8), "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
}
NP_TO_V2: dict[np.dtype, str] = {v: k for k, v in V2_TO_NP.items()}
# which numpy kinds a JSON ``data`` array may hold for a declared datatype
_JSON_KINDS = {"b": "b", "u": "iu", "i": "iu", "f": "iuf"}
# orjson serialises these numpy dtypes natively
_ORJSON_NATIVE = {"f": {4, 8}, "i": {1, 2, 4, 8}, "u": {1, 2, 4, 8}, "b": {1}}


class V2Error(Exception):
    """A malformed request; the HTTP status travels with it."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class RequestedOutput:
    name: str
    binary: bool


@dataclass
class InferRequest:
    inputs: list[tuple[str, np.ndarray]]
    id: str | None = None
    outputs: list[RequestedOutput] | None = None  # None: all outputs
    binary_output: bool = False  # request-level default for outputs not listed
    parameters: dict[str, Any] = field(default_factory=dict)


def datatype_of(dtype: np.dtype) -> str:
    try:
        return NP_TO_V2[np.dtype(dtype)]
    except KeyError:
        return "BYTES"


def _shape(value: Any, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in value):
        raise V2Error(f"{where}: 'shape' must be a list of non-negative integers, got {value!r}")
    return tuple(value)


def _dtype(value: Any, where: str) -> np.dtype:
    if value == "BYTES":
        raise V2Error(f"{where}: datatype BYTES is not supported by this model (numeric tensors only)")
    try:
        return V2_TO_NP[value]
    except (KeyError, TypeError):
        raise V2Error(f"{where}: unknown datatype {value!r} (expected one of {', '.join(V2_TO_NP)})") from None


def _json_tensor(data: Any, dtype: np.dtype, shape: tuple[int, ...], where: str) -> np.ndarray:
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError) as e:  # ragged nesting
        raise V2Error(f"{where}: 'data' is not a regular array: {e}") from None
    size = math.prod(shape)
    if arr.size != size:
        raise V2Error(f"{where}: 'data' has {arr.size} elements but shape {list(shape)} needs {size}")
    if size and arr.dtype.kind not in _JSON_KINDS.get(dtype.kind, ""):
        raise V2Error(f"{where}: 'data' holds {arr.dtype.kind!r}-kind values, not valid for {NP_TO_V2[dtype]}")
    return arr.astype(dtype, copy=False).reshape(shape)


def decode_infer_request(body: bytes, header_length: int | None = None) -> InferRequest:
    """Parse a v2 infer request body (JSON, or JSON header + binary tensors)."""
    if header_length is not None:
        if header_length < 0 or header_length > len(body):
            raise V2Error(f"Inference-Header-Content-Length {header_length} is outside the body ({len(body)} bytes)")
        header, binary = body[:header_length], memoryview(body)[header_length:]
    else:
        header, binary = body, memoryview(b"")
    try:
        req = orjson.loads(header)
    except orjson.JSONDecodeError as e:
        raise V2Error(f"request body is not valid JSON: {e}") from None
    if not isinstance(req, dict):
        raise V2Error("request body must be a JSON object with an 'inputs' list")
    inputs = req.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise V2Error("'inputs' must be a non-empty list of tensors")
    params = req.get("parameters") or {}
    if not isinstance(params, dict):
        raise V2Error("'parameters' must be an object")

    offset = 0
    decoded: list[tuple[str, np.ndarray]] = []
    for i, t in enumerate(inputs):
        if not isinstance(t, dict):
            raise V2Error(f"inputs[{i}] must be an object")
        name = t.get("name")
        where = f"input {name!r}" if isinstance(name, str) else f"inputs[{i}]"
        if not isinstance(name, str):
            raise V2Error(f"{where}: 'name' must be a string")
        shape = _shape(t.get("shape"), where)
        dtype = _dtype(t.get("datatype"), where)
        tparams = t.get("parameters") or {}
        nbytes = tparams.get("binary_data_size") if isinstance(tparams, dict) else None
        if nbytes is not None:
            if not isinstance(nbytes, int) or nbytes < 0:
                raise V2Error(f"{where}: binary_data_size must be a non-negative integer")
            expected = math.prod(shape) * dtype.itemsize
            if nbytes != expected:
                raise V2Error(f"{where}: binary_data_size {nbytes} does not match shape {list(shape)} "
                              f"of {NP_TO_V2[dtype]} ({expected} bytes)")
            if offset + nbytes > len(binary):
                raise V2Error(f"{where}: binary data is truncated ({len(binary) - offset} of {nbytes} bytes)")
            arr = np.frombuffer(binary[offset:offset + nbytes], dtype=dtype).reshape(shape)
            offset += nbytes
        elif "data" in t:
            arr = _json_tensor(t["data"], dtype, shape, where)
        else:
            raise V2Error(f"{where}: needs 'data' or parameters.binary_data_size")
        decoded.append((name, arr))
    if offset != len(binary):
        raise V2Error(f"{len(binary) - offset} bytes of binary data are not claimed by any input")

    outputs = None
    raw_outputs = req.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise V2Error("'outputs' must be a list")
        outputs = []
        for i, o in enumerate(raw_outputs):
            if not isinstance(o, dict) or not isinstance(o.get("name"), str):
                raise V2Error(f"outputs[{i}] must be an object with a string 'name'")
            op = o.get("parameters") or {}
            outputs.append(RequestedOutput(o["name"], bool(op.get("binary_data", False)) if isinstance(op, dict)
                                           else False))
    rid = req.get("id")
    return InferRequest(
        inputs=decoded, id=str(rid) if rid is not None else None, outputs=outputs,
        binary_output=bool(params.get("binary_data_output", False)), parameters=params,
    )


def _json_data(a: np.ndarray) -> Any:
    flat = np.ascontiguousarray(a).reshape(-1)
    if flat.dtype.kind in _ORJSON_NATIVE and flat.dtype.itemsize in _ORJSON_NATIVE[flat.dtype.kind]:
        return flat  # serialised by orjson without a Python list
    return flat.tolist()


def encode_infer_response(
    model_name: str,
    model_version: str | None,
    outputs: dict[str, np.ndarray],
    request: InferRequest,
) -> tuple[bytes, int | None]:
    """Encode outputs as a v2 response; returns (body, JSON header length if binary tensors follow)."""
    if request.outputs is None:
        selected = [(name, request.binary_output) for name in outputs]
    else:
        selected = []
        for o in request.outputs:
            if o.name not in outputs:
                raise V2Error(f"unknown output {o.name!r}; the model has {', '.join(outputs)}")
            selected.append((o.name, o.binary or request.binary_output))
    tensors: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, binary in selected:
        a = outputs[name]
        t: dict[str, Any] = {"name": name, "datatype": datatype_of(a.dtype), "shape": list(a.shape)}
        if binary:
            blob = np.ascontiguousarray(a).tobytes()
            t["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            t["data"] = _json_data(a)
        tensors.append(t)
    resp: dict[str, Any] = {"model_name": model_name, "outputs": tensors}
    if model_version is not None:
        resp["model_version"] = model_version
    if request.id is not None:
        resp["id"] = request.id
    header = orjson.dumps(resp, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)
