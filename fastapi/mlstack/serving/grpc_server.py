"""Open Inference Protocol v2 over gRPC (the KServe/Triton ``inference.GRPCInferenceService``).

Runs on the same event loop as the HTTP app and submits to the same ``ModelService`` batcher, so HTTP
and gRPC requests are batched together and the model is loaded once. ``ModelInfer`` takes raw
(``raw_input_contents``) or typed (``contents``) inputs and answers in the same form. Errors are gRPC
status codes with a message: unknown model or version NOT_FOUND, a bad shape, datatype or input
INVALID_ARGUMENT, a model still loading (or failed) UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import orjson

from mlstack.monitoring.payload import RequestIds
from mlstack.serving import v2
from mlstack.serving.grpc_v2 import grpc_predict_v2_pb2 as pb
from mlstack.serving.grpc_v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from mlstack.serving.predictor import PredictError
from mlstack.serving.service import SERVER_NAME, ClientError, ModelService, _server_version

log = logging.getLogger(__name__)

Done = Callable[["pb.ModelInferResponse | None", grpc.StatusCode, str], None]  # a fast-path call's answer

MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # as the HTTP body limit

# v2 datatype -> the InferTensorContents field holding it (FP16 travels raw only)
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
    "FP32": "fp32_contents", "FP64": "fp64_contents",
}
# gRPC code -> the HTTP status the request counts as in /metrics
_HTTP_STATUS = {
    grpc.StatusCode.OK: 200, grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.INTERNAL: 500,
}


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _decode_input(t: Any, raw: bytes | None) -> np.ndarray:
    where = f"input {t.name!r}"
    if t.datatype == "BYTES":
        raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                     f"{where}: datatype BYTES is not supported by this model (numeric tensors only)")
    dtype = v2.V2_TO_NP.get(t.datatype)
    if dtype is None:
        raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                     f"{where}: unknown datatype {t.datatype!r} (expected one of {', '.join(v2.V2_TO_NP)})")
    shape = tuple(t.shape)
    if any(d < 0 for d in shape):
        raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"{where}: shape {list(shape)} has a negative dimension")
    size = math.prod(shape)
    if raw is not None:
        expected = size * dtype.itemsize
        if len(raw) != expected:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                         f"{where}: raw contents hold {len(raw)} bytes but shape {list(shape)} of {t.datatype} "
                         f"needs {expected}")
        return np.frombuffer(raw, dtype=dtype).reshape(shape)
    field = _CONTENTS_FIELD.get(t.datatype)
    if field is None:
        raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"{where}: {t.datatype} must be sent as raw_input_contents")
    values = getattr(t.contents, field)
    if len(values) != size:
        raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                     f"{where}: contents.{field} has {len(values)} elements but shape {list(shape)} needs {size}")
    if size <= 64:  # numpy's buffer probing costs ~4 µs per call, more than iterating a few values (~1)
        return np.fromiter(values, dtype, size).reshape(shape)
    return np.array(values, dtype=dtype).reshape(shape)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The v2 gRPC endpoints of one ``ModelService``."""

    def __init__(self, service: ModelService, canary: Any = None, canary_grpc: Any = None, shadow: Any = None):
        self.service = service
        self.shadow = shadow  # a ShadowMirror: copies of its share of the requests this server answers
        # exact canary split: the HTTP forwarder's counter (one count for both transports) and a gRPC channel
        self.canary = canary if canary_grpc is not None else None
        self.canary_grpc = canary_grpc
        self.ids = RequestIds()  # a response's id: the request's, else a new one (the payload log's key)
        self._server_meta = pb.ServerMetadataResponse(name=SERVER_NAME, version=_server_version(),
                                                      extensions=["binary_tensor_data"])

    def _check_model(self, name: str, version: str) -> None:
        s = self.service
        if name != s.name:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"model {name!r} not found (this server serves {s.name!r})")
        if version and s.version is not None and version != s.version:
            raise _Abort(grpc.StatusCode.NOT_FOUND, f"version {version!r} of model {name!r} not found "
                                                    f"(this server serves version {s.version})")

    def _not_ready(self) -> _Abort:
        s = self.service
        if s.load_error:
            return _Abort(grpc.StatusCode.UNAVAILABLE, f"model {s.name!r} failed to load: {s.load_error}")
        return _Abort(grpc.StatusCode.UNAVAILABLE, f"model {s.name!r} is loading")

    async def _run(self, endpoint: str, context: grpc.aio.ServicerContext, fn: Any, *args: Any) -> Any:
        t0 = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            result = fn(*args)
            return await result if inspect.isawaitable(result) else result
        except Exception as e:
            code, message = _status_of(e, endpoint)
        finally:
            self._observe(endpoint, code, t0)
        await context.abort(code, message)

    def _observe(self, endpoint: str, code: grpc.StatusCode, t0: float) -> None:
        """Count a finished call in /metrics (as the HTTP status its code stands for) with its latency."""
        self.service.metrics.observe_request(endpoint, _HTTP_STATUS.get(code, 500), time.perf_counter() - t0)

    # -- health and metadata ------------------------------------------------------------------------

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.service.ready)

    async def ServerMetadata(self, request, context):
        return self._server_meta

    async def ModelReady(self, request, context):
        def ready() -> pb.ModelReadyResponse:
            self._check_model(request.name, request.version)
            return pb.ModelReadyResponse(ready=self.service.ready)

        return await self._run("grpc_model_ready", context, ready)

    async def ModelMetadata(self, request, context):
        def metadata() -> pb.ModelMetadataResponse:
            self._check_model(request.name, request.version)
            s, p = self.service, self.service.predictor
            if p is None:
                raise self._not_ready()
            tensors = [pb.ModelMetadataResponse.TensorMetadata(name=t.name, datatype=t.datatype, shape=t.shape)
                       for t in (*p.inputs, *p.outputs)]
            return pb.ModelMetadataResponse(name=s.name, versions=[s.version] if s.version else [],
                                            platform=p.platform, inputs=tensors[:len(p.inputs)],
                                            outputs=tensors[len(p.inputs):])

        return await self._run("grpc_model_metadata", context, metadata)

    # -- inference ----------------------------------------------------------------------------------

    async def ModelInfer(self, request, context):
        c = self.canary
        if c is not None and not request.model_version and c.take():
            try:
                resp = await self.canary_grpc.infer(request)
                c.forwarded += 1
                await context.send_initial_metadata((("x-model-track", "canary"),))
                return resp
            except grpc.aio.AioRpcError as e:
                if e.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND):
                    c.forwarded += 1  # the canary's own answer to this input
                    await context.abort(e.code(), e.details() or "")
                c.fell_back(f"gRPC {e.code().name}: {e.details()}")
        return await self._run("grpc_infer", context, self._infer, request)

    def fast_paths(self) -> dict[str, Callable[..., asyncio.Future | None]]:
        """Methods a transport may run from callbacks instead of a task per call (``grpc_h2``): ``ModelInfer``,
        unless a canary split needs its coroutine (the forward to the canary)."""
        return {} if self.canary is not None else {"ModelInfer": self.infer_later}

    def infer_later(self, request: pb.ModelInferRequest, done: Done) -> asyncio.Future | None:
        """``ModelInfer`` without a coroutine: the checks now, the batch on the batcher's turn, then
        ``done(response, code, details)`` on the loop (once; not if the returned future is cancelled: the call went
        away). Returns None when ``done`` was called already (a bad request)."""
        t0 = time.perf_counter()
        try:
            x, name, raw = self._infer_begin(request)
            fut = self.service.batcher.enqueue(x)  # type: ignore[union-attr]  # _infer_begin checked it
        except Exception as e:
            code, message = _status_of(e, "grpc_infer")
            self._observe("grpc_infer", code, t0)
            done(None, code, message)
            return None

        def finished(f: asyncio.Future) -> None:
            if f.cancelled():
                return
            response, code, message = None, grpc.StatusCode.OK, ""
            try:
                response = self._infer_end(request, x, name, raw, f.result(), t0)
            except Exception as e:
                code, message = _status_of(e, "grpc_infer")
            self._observe("grpc_infer", code, t0)
            done(response, code, message)

        fut.add_done_callback(finished)
        return fut

    async def _infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        t0 = time.perf_counter()
        x, name, raw = self._infer_begin(request)
        outputs = await self.service.batcher.submit(x)  # type: ignore[union-attr]  # _infer_begin checked it
        return self._infer_end(request, x, name, raw, outputs, t0)

    def _infer_begin(self, request: pb.ModelInferRequest) -> tuple[np.ndarray, str, bool]:
        """The request's input as the batcher takes it, its name, and whether it came raw; raises on a bad one."""
        s = self.service
        self._check_model(request.model_name, request.model_version)
        if s.batcher is None:
            raise self._not_ready()
        inputs = request.inputs
        if len(inputs) != 1:
            raise ClientError(f"the model takes one input {s.input_name!r}, got {len(inputs)}", 400)
        raw_contents = request.raw_input_contents
        raw = bool(raw_contents)
        if raw and len(raw_contents) != len(inputs):
            raise ClientError(f"raw_input_contents has {len(raw_contents)} entries for {len(inputs)} inputs", 400)
        t = inputs[0]
        return s.check_input(t.name, _decode_input(t, raw_contents[0] if raw else None)), t.name, raw

    def _infer_end(self, request: pb.ModelInferRequest, x: np.ndarray, name: str, raw: bool,
                   outputs: dict[str, np.ndarray], t0: float) -> pb.ModelInferResponse:
        """The answer to ``request`` from the model's ``outputs`` (and the shadow copy, the payload log)."""
        s = self.service
        if request.outputs:
            names = [o.name for o in request.outputs]
            for n in names:
                if n not in outputs:
                    raise ClientError(f"unknown output {n!r}; the model has {', '.join(outputs)}", 400)
        else:
            names = list(outputs)
        request_id = self.ids.accept(request.id)
        mirrored = (self.shadow is not None and not request.model_version and self.shadow.take()
                    and self.shadow.mirror("POST", f"/v2/models/{s.name}/infer", _v2_json(request_id, name, x),
                                           [(b"content-type", b"application/json"),
                                            (b"x-request-id", request_id.encode("latin-1"))]))
        # the payload log samples gRPC requests as it does HTTP ones, and keeps every mirrored one (to compare)
        if (mirrored and s.payloads.enabled) or s.payloads.sampled():
            s.log_payload(request_id, x, outputs, (time.perf_counter() - t0) * 1000.0)
        resp = pb.ModelInferResponse(model_name=s.name, model_version=s.version or "", id=request_id)
        for n in names:
            a = outputs[n]
            datatype = v2.datatype_of(a.dtype)
            o = resp.outputs.add(name=n, datatype=datatype, shape=a.shape)
            field = _CONTENTS_FIELD.get(datatype)
            if raw or field is None:  # answer in the form asked (raw for raw requests, as Triton does)
                resp.raw_output_contents.append(np.ascontiguousarray(a).tobytes())
            else:
                getattr(o.contents, field).extend(a.reshape(-1).tolist())
        return resp


def _status_of(e: Exception, endpoint: str) -> tuple[grpc.StatusCode, str]:
    """The gRPC status (and message) a call that raised ``e`` ends with."""
    if isinstance(e, _Abort):
        return e.code, e.message
    if isinstance(e, (ClientError, v2.V2Error)):
        return grpc.StatusCode.INVALID_ARGUMENT, e.message
    if isinstance(e, PredictError):
        return grpc.StatusCode.INVALID_ARGUMENT, f"the model rejected the input: {e}"
    log.error("error handling gRPC %s", endpoint, exc_info=e)  # a bug: say so, keep serving
    return grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}: {e}"


def _v2_json(request_id: str, name: str, x: np.ndarray) -> bytes:
    """A gRPC request's input as a v2 JSON infer body (what the shadow's HTTP endpoint takes)."""
    return orjson.dumps({"id": request_id, "inputs": [{"name": name, "shape": list(x.shape),
                                                       "datatype": v2.datatype_of(x.dtype), "data": x.ravel()}]},
                        option=orjson.OPT_SERIALIZE_NUMPY)


async def start_grpc_server(service: ModelService, host: str, port: int, canary: Any = None,
                            canary_grpc: Any = None, impl: str = "h2", shadow: Any = None) -> Any:
    """Start serving ``service`` on ``host:port`` on the running event loop (raises if the port is taken).

    ``impl``: ``h2`` (default) is the asyncio HTTP/2 server of ``grpc_h2`` on this loop; ``grpcio`` is
    ``grpc.aio.server`` (its own polling threads; ~3x the CPU per call, kept for comparison). Both have
    ``stop(grace)``.
    """
    servicer = InferenceServicer(service, canary, canary_grpc, shadow)
    if impl == "h2":
        from mlstack.serving.grpc_h2 import GrpcServer, method_table

        h2_server = GrpcServer(method_table(servicer, pb), MAX_MESSAGE_BYTES)
        try:
            await h2_server.start(host, port)
        except OSError as e:
            raise OSError(f"could not bind gRPC to {host}:{port}: {e.strerror or e}") from None
        return h2_server
    if impl != "grpcio":
        raise ValueError(f"unknown gRPC server {impl!r} (h2 or grpcio)")
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.so_reuseport", 0),  # a taken port is an error, not a second listener
    ])
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:
        raise OSError(f"could not bind gRPC to {address}: {e}") from None
    if bound == 0:
        raise OSError(f"could not bind gRPC to {address}")
    await server.start()
    return server
