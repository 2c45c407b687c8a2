"""Transport-agnostic request handling: (method, path, body) -> ``Response``.

The raw ASGI app (``app``) and the Ray Serve deployment (``rayserve``) only adapt their transport to
``ModelService.handle``; decoding, validation, batching, prediction, encoding and metrics live here.
Every client error is a 4xx with ``{"error": "..."}``, as Triton and KServe clients expect.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from mlstack.monitoring.payload import PayloadLog
from mlstack.serving import v2
from mlstack.serving.batching import Batcher
from mlstack.serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from mlstack.serving.metrics import ServingMetrics
from mlstack.serving.predictor import PredictError, Predictor, label_output, load_predictor, n_features, proba_output
from mlstack.serving.resolve import ModelRef, fetch_model

log = logging.getLogger(__name__)

JSON = b"application/json"
OCTET = b"application/octet-stream"
SERVER_NAME = "mlstack"
_NUMPY = orjson.OPT_SERIALIZE_NUMPY
MAX_LOGGED_ROWS = 32  # a sampled request keeps at most this many rows in the payload log
# set only while a sampled request is handled (its own task): the endpoint leaves (inputs, outputs) here
_SAMPLE: ContextVar[list | None] = ContextVar("mlstack_payload_sample", default=None)


def _server_version() -> str:
    try:
        from importlib.metadata import version

        return version("mlstack")
    except Exception:
        return "0"


@dataclass(slots=True)
class Response:
    status: int
    body: bytes
    content_type: bytes = JSON
    header_length: int | None = None  # Inference-Header-Content-Length for binary v2 responses


def error(status: int, message: str) -> Response:
    return Response(status, orjson.dumps({"error": message}))


def ok(obj: Any) -> Response:
    return Response(200, orjson.dumps(obj, option=_NUMPY))


Handler = Callable[[bytes, "int | None"], Awaitable[Response]]


class ClientError(Exception):
    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.message = message
        self.status = status


class ModelService:
    """One model: its loading state, dynamic batcher, metrics and endpoints."""

    def __init__(self, ref: ModelRef, name: str | None = None, max_batch: int = 64, window_s: float = 0.0,
                 payloads: PayloadLog | None = None, track: str = "stable"):
        self.ref = ref
        self.payloads = payloads or PayloadLog(sample_rate=0.0)  # the monitor's sampled requests (off: rate 0)
        self.track = track
        self.name = name or ref.name
        self.version: str | None = ref.version
        self.max_batch = max_batch
        self.window_s = window_s
        self.metrics = ServingMetrics(self.name)
        self.predictor: Predictor | None = None
        self.load_error: str | None = None
        self._batcher: Batcher | None = None
        self._n_features: int | None = None
        self._input_name = ""
        self._label = ""
        self._proba: str | None = None
        self._live = _const(ok({"live": True}))
        self._server_meta = _const(Response(200, orjson.dumps(
            {"name": SERVER_NAME, "version": _server_version(), "extensions": ["binary_tensor_data"]})))

    # -- loading ------------------------------------------------------------------------------------

    def load(self, tracking_uri: str, cache_dir: Path, intra_op_threads: int = 1) -> None:
        """Resolve, download and load the model (blocking; call from a worker thread)."""
        model_dir, resolved = fetch_model(self.ref, tracking_uri, cache_dir)
        self.version = resolved.version or self.version
        self.set_predictor(load_predictor(model_dir, intra_op_threads=intra_op_threads))
        gc.collect()
        gc.freeze()  # the model and imports are long-lived: keep them out of every later GC pass (p99)
        log.info("model %r (version %s) ready from %s", self.name, self.version, model_dir)

    def set_predictor(self, predictor: Predictor) -> None:
        self._n_features = n_features(predictor)
        self._input_name = predictor.inputs[0].name
        self._label = label_output(predictor)
        self._proba = proba_output(predictor)
        self._batcher = Batcher(predictor.predict, max_batch=self.max_batch, window_s=self.window_s,
                                inline=predictor.inline, on_batch=self.metrics.observe_batch)
        self.predictor = predictor
        self.metrics.set_ready(True)

    def set_failed(self, message: str) -> None:
        self.load_error = message
        self.metrics.set_ready(False)

    @property
    def ready(self) -> bool:
        return self.predictor is not None

    def _not_ready(self) -> Response:
        if self.load_error:
            return error(503, f"model {self.name!r} failed to load: {self.load_error}")
        return error(503, f"model {self.name!r} is loading")

    # -- dispatch -----------------------------------------------------------------------------------

    async def handle(self, method: str, path: str, body: bytes, header_length: int | None = None,
                     request_id: str | None = None, force_log: bool = False) -> Response:
        """``request_id``: the id the transport answers with; a sampled inference request is logged under it.
        ``force_log``: log this one whatever the sample rate (a request mirrored to a shadow: the monitor compares the
        two answers), unless the payload log is off."""
        t0 = time.perf_counter()
        endpoint, call = self._route(method, path)
        sample = token = None
        if request_id is not None and endpoint in _LOGGED and (
                (force_log and self.payloads.enabled) or self.payloads.sampled()):
            sample = []
            token = _SAMPLE.set(sample)
        try:
            resp = await call(body, header_length)
        except ClientError as e:
            resp = error(e.status, e.message)
        except v2.V2Error as e:
            resp = error(e.status, e.message)
        except PredictError as e:
            resp = error(400, f"the model rejected the input: {e}")
        except Exception as e:  # a bug: say so, keep serving
            log.exception("error handling %s %s", method, path)
            resp = error(500, f"internal error: {type(e).__name__}: {e}")
        elapsed = time.perf_counter() - t0
        self.metrics.observe_request(endpoint, resp.status, elapsed)
        if token is not None:
            _SAMPLE.reset(token)
            if sample and resp.status == 200:
                self.log_payload(request_id, *sample[0], elapsed * 1000.0)
        return resp

    def log_payload(self, request_id: str, x: np.ndarray, outputs: np.ndarray | dict[str, np.ndarray],
                    latency_ms: float) -> None:
        """Keep one answered request in the payload log (its first ``MAX_LOGGED_ROWS`` rows and the label output)."""
        y = outputs[self._label] if isinstance(outputs, dict) else outputs
        self.payloads.record(request_id, self.name, self.version or "", self.track, x[:MAX_LOGGED_ROWS].tolist(),
                             _plain(y[:MAX_LOGGED_ROWS]), latency_ms)

    def _route(self, method: str, path: str) -> tuple[str, Handler]:
        """(metrics label, handler) for a request; pure string matching, no framework."""
        if path.startswith("/v2/models/"):
            return self._model_route(method, path[len("/v2/models/"):])
        if path == "/predict":
            return "predict", _only(method, "POST", self._predict)
        if path == "/v2/health/live":
            return "live", _only(method, "GET", self._live)
        if path == "/v2/health/ready":
            return "ready", _only(method, "GET", self._server_ready)
        if path in ("/v2", "/v2/"):
            return "server_metadata", _only(method, "GET", self._server_meta)
        if path == "/metrics":
            return "metrics", _only(method, "GET", self._metrics)
        return "other", _const(error(404, f"no route for {method} {path}"))

    def _model_route(self, method: str, rest: str) -> tuple[str, Handler]:
        # NAME | NAME/ready | NAME/infer | NAME/versions/V[/ready|/infer]
        parts = rest.split("/")
        name, tail = parts[0], parts[1:]
        version = None
        if len(tail) >= 2 and tail[0] == "versions":
            version, tail = tail[1], tail[2:]
        action = tail[0] if len(tail) == 1 else ("" if not tail else None)
        routes: dict[str, tuple[str, str, Handler]] = {
            "": ("model_metadata", "GET", self._model_metadata),
            "ready": ("model_ready", "GET", self._model_ready),
            "infer": ("infer", "POST", self._infer),
        }
        route = routes.get(action) if action is not None else None
        if route is None:
            return "other", _const(error(404, f"no route for {method} /v2/models/{rest}"))
        endpoint, allowed, handler = route
        if name != self.name:
            return endpoint, _const(error(404, f"model {name!r} not found (this server serves {self.name!r})"))
        if version is not None and self.version is not None and version != self.version:
            return endpoint, _const(error(404, f"version {version!r} of model {name!r} not found "
                                               f"(this server serves version {self.version})"))
        return endpoint, _only(method, allowed, handler)

    # -- endpoints ----------------------------------------------------------------------------------

    async def _server_ready(self, body: bytes, header_length: int | None) -> Response:
        return ok({"ready": True}) if self.ready else self._not_ready()

    async def _model_ready(self, body: bytes, header_length: int | None) -> Response:
        return ok({"name": self.name, "ready": True}) if self.ready else self._not_ready()

    async def _metrics(self, body: bytes, header_length: int | None) -> Response:
        return Response(200, self.metrics.render(), METRICS_CONTENT_TYPE)

    async def _model_metadata(self, body: bytes, header_length: int | None) -> Response:
        p = self.predictor
        if p is None:
            return self._not_ready()
        return ok({
            "name": self.name,
            "versions": [self.version] if self.version else [],
            "platform": p.platform,
            "inputs": [t.to_dict() for t in p.inputs],
            "outputs": [t.to_dict() for t in p.outputs],
        })

    def _check_rows(self, x: np.ndarray, what: str) -> np.ndarray:
        if x.ndim != 2:
            raise ClientError(f"{what} must be 2-D [rows, features], got shape {list(x.shape)}", 400)
        if x.shape[0] == 0:
            raise ClientError(f"{what} has no rows", 400)
        nf = self._n_features
        if nf is not None and x.shape[1] != nf:
            raise ClientError(f"{what} has {x.shape[1]} features per row, the model expects {nf}", 400)
        if x.dtype.kind not in "iuf":
            raise ClientError(f"{what} must be numeric, got {v2.datatype_of(x.dtype)}", 400)
        if x.dtype != np.float32 or not x.flags.c_contiguous:
            x = np.ascontiguousarray(x, dtype=np.float32)
        return x

    def check_input(self, name: str, x: np.ndarray) -> np.ndarray:
        """The v2 input ``name`` as the predictor takes it (C-contiguous float32 rows); ClientError if not."""
        if name != self._input_name:
            raise ClientError(f"unknown input {name!r}; the model's input is {self._input_name!r}", 400)
        return self._check_rows(x, f"input {name!r}")

    @property
    def input_name(self) -> str:
        return self._input_name

    @property
    def batcher(self) -> Batcher | None:
        """The dynamic batcher every transport (HTTP, gRPC) submits to; None until the model is loaded."""
        return self._batcher

    async def _infer(self, body: bytes, header_length: int | None) -> Response:
        if self._batcher is None:
            return self._not_ready()
        req = v2.decode_infer_request(body, header_length)
        if len(req.inputs) != 1:
            raise ClientError(f"the model takes one input {self._input_name!r}, got {len(req.inputs)}", 400)
        in_name, x = req.inputs[0]
        x = self.check_input(in_name, x)
        outputs = await self._batcher.submit(x)
        if (sample := _SAMPLE.get()) is not None:
            sample.append((x, outputs[self._label]))
        payload, hlen = v2.encode_infer_response(self.name, self.version, outputs, req)
        return Response(200, payload, OCTET if hlen is not None else JSON, hlen)

    async def _predict(self, body: bytes, header_length: int | None = None) -> Response:
        if self._batcher is None:
            return self._not_ready()
        try:
            req = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise ClientError(f"request body is not valid JSON: {e}", 422) from None
        instances = req.get("instances") if isinstance(req, dict) else None
        if not isinstance(instances, list) or not instances:
            raise ClientError('body must be {"instances": [[feature, ...], ...]} with at least one row', 422)
        try:
            x = np.asarray(instances)
        except (ValueError, TypeError) as e:
            raise ClientError(f"'instances' is not a regular 2-D array of numbers: {e}", 422) from None
        try:
            x = self._check_rows(x, "'instances'")
        except ClientError as e:
            raise ClientError(e.message, 422) from None
        out = await self._batcher.submit(x)
        label = out[self._label]
        if label.ndim == 2 and label.shape[1] == 1:
            label = label.reshape(-1)
        if (sample := _SAMPLE.get()) is not None:
            sample.append((x, label))
        resp: dict[str, Any] = {"predictions": label if label.dtype.kind in "iuf" else label.tolist()}
        if self._proba is not None:
            resp["probabilities"] = out[self._proba]
        return ok(resp)


_LOGGED = frozenset(("predict", "infer"))  # the endpoints whose requests the payload log samples


def _plain(y: np.ndarray) -> list:
    """Model outputs as JSON-able values (string labels decoded, 1-column outputs flattened)."""
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.dtype.kind in "SO":
        return [v.decode() if isinstance(v, bytes) else str(v) for v in y.tolist()]
    return y.tolist()


def _const(resp: Response) -> Handler:
    async def handler(body: bytes, header_length: int | None) -> Response:
        return resp

    return handler


def _only(method: str, allowed: str, handler: Handler) -> Handler:
    if method == allowed:
        return handler
    return _const(error(405, f"method {method} not allowed here (use {allowed})"))
