"""``POST /inference``: resolve the version, send rows to that version's model server, retry inside the SLA.

What to serve: ``model`` (a registered name; default ``MLSTACK_MODEL_NAME``) with ``version`` or ``alias``
(default ``@champion``; the seed's ``model_version`` is ``version``), or ``deployment`` ("namespace/name"):
the request goes to that ModelDeployment's ``status.url`` (its canary included: ``model_version`` is the
version that answered, from the model server's ``X-Model-Version``). Rows are lists or objects
keyed by feature name; they are checked against the version's features before a model server is called:
the ``mlstack.features`` tag (training and uploads record the signature's columns there), else the
signature in the version's ``MLmodel`` (column names, or a ``[-1, n]`` tensor's width), read once per version.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Annotated, Protocol

import aiohttp
import orjson
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlstack.errors import InvalidInput, NotFound, Unavailable
from mlstack.registry import CHAMPION, Registry
from mlstack.serving.client import LocalClient, local
from mlstack.settings import Settings
from mlstack_operator.contract import DeploymentRef, ModelAlias, ModelName, ModelVersion

log = logging.getLogger(__name__)
Finite = Annotated[float, Field(allow_inf_nan=False)]
RETRIES = Counter("mlstack_inference_retries_total", "Inference attempts that failed and were retried")
FAILURES = Counter("mlstack_inference_unavailable_total", "Inference requests that ran out of retries or SLA")
LATENCY = Histogram("mlstack_inference_seconds", "End-to-end /inference latency",
                    buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
MAX_ROWS = 1000
MAX_FEATURES = 1000
FEATURES_TAG = "mlstack.features"
FEATURES_RETRY_SECONDS = 30.0
Row = list[Finite] | dict[Annotated[str, Field(min_length=1, max_length=200)], Finite]


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"input_data": [5.1, 3.5, 1.4, 0.2]},
        {"model": "iris_model", "alias": "champion",
         "input_data": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}]},
        {"deployment": "models/iris", "input_data": [[5.1, 3.5, 1.4, 0.2]]}]})

    input_data: list[Finite] | list[list[Finite]] | dict[str, Finite] | list[dict[str, Finite]] = Field(
        ..., description="one row or a list of rows (at most 1000); a row is a list of feature values in the "
                         "model's order or an object {feature name: value}")
    model: ModelName | None = Field(None, description="registered model name; default: the API's MLSTACK_MODEL_NAME")
    version: ModelVersion | None = Field(None, description="a version of `model`")
    alias: ModelAlias | None = Field(None, description="an alias of `model`; default: champion")
    deployment: DeploymentRef | None = Field(None, description='"namespace/name" of a ModelDeployment: served '
                                                                'through it')
    model_version: ModelVersion | None = Field(None, description="the seed's name for `version`")
    retries: int = Field(3, ge=0, le=10)
    sla_seconds: float = Field(60, ge=0.1, le=600, description="deadline for the whole request, retries included")

    @field_validator("input_data")
    @classmethod
    def _shape(cls, v):
        rows = v if v and isinstance(v, list) and isinstance(v[0], list | dict) else [v]
        if not rows or not rows[0]:
            raise ValueError("input_data must hold at least one feature")
        if len(rows) > MAX_ROWS:
            raise ValueError(f"at most {MAX_ROWS} rows per request")
        width = len(rows[0])
        if width > MAX_FEATURES or any(len(r) != width for r in rows):
            raise ValueError(f"every row must have the same number of features (at most {MAX_FEATURES})")
        return v

    @model_validator(mode="after")
    def _target(self):
        if self.version and self.model_version and self.version != self.model_version:
            raise ValueError(f"version {self.version} and model_version {self.model_version} disagree: send one")
        self.version = self.version or self.model_version
        if self.version and self.alias:
            raise ValueError("send version or alias, not both")
        if self.deployment and (self.model or self.version or self.alias):
            raise ValueError("deployment names what serves the request: send it without model, version or alias")
        return self

    @property
    def single(self) -> bool:
        data = self.input_data
        return not (isinstance(data, list) and data and isinstance(data[0], list | dict))

    def raw_rows(self) -> list:
        return [self.input_data] if self.single else list(self.input_data)  # type: ignore[arg-type]

    def rows(self, features: list[str] | None = None, what: str = "the model",
             width: int | None = None) -> list[list[float]]:
        """Rows as lists in the model's feature order; checked against ``features`` (or only their number,
        ``width``) when known (422)."""
        rows = self.raw_rows()
        if isinstance(rows[0], dict):
            if not features:
                raise InvalidInput(f"{what} records no feature names (no signature), so rows must be lists of "
                                   "values in the model's order, not objects")
            out = []
            for i, row in enumerate(rows):
                missing = [f for f in features if f not in row]
                unknown = [k for k in row if k not in set(features)]
                if missing or unknown:
                    parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
                        [f"unknown {', '.join(unknown[:20])}"] if unknown else [])
                    raise InvalidInput(f"row {i} does not match the features of {what} "
                                       f"({', '.join(features)}): {'; '.join(parts)}")
                out.append([row[f] for f in features])
            return out
        if features and len(rows[0]) != len(features):
            raise InvalidInput(f"{what} expects {len(features)} features ({', '.join(features)}), "
                               f"rows have {len(rows[0])}")
        if not features and width and len(rows[0]) != width:
            raise InvalidInput(f"{what} expects {width} features (its signature), rows have {len(rows[0])}")
        return rows


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    prediction: float | int | str | None = Field(None, description="the single prediction when one row was sent")
    predictions: list
    probabilities: list[list[float]] | None = None
    latency_ms: float
    attempts: int
    request_id: str | None = Field(None, description="the model server's X-Request-ID: send it with the ground "
                                   "truth to POST /feedback (joined when the request was sampled)")
    version_stale: bool = Field(False, description="MLflow was unreachable: model_version is the last version "
                                "resolved for this request's alias or pin, not a fresh answer")


class Endpoints(Protocol):
    """Where ``/inference`` sends a version's rows: the base URL of a ready model server of ``name``/``version``
    (``namespace``: the caller's, in cluster mode). Implementations: ``mlstack.local.servers.ServerPool`` (starts
    a server per version), ``mlstack.deployments.local_routing.LocalRouter`` (a Ready local deployment first, else
    the pool), ``mlstack.deployments.kube.KubeEndpoints`` (the ``status.url`` of a Ready ModelDeployment)."""

    async def endpoint(self, name: str, version: str, timeout: float | None = None,
                       namespace: str | None = None) -> str: ...


class InferenceClient:
    def __init__(self, settings: Settings, registry: Registry, servers: Endpoints, deployments=None):
        self.settings = settings
        self.registry = registry
        self.servers = servers
        self.deployments = deployments  # /deployments backend: requests naming a deployment
        self._features: dict[tuple[str, str], tuple[list[str] | None, int | None]] = {}
        self._features_retry: dict[tuple[str, str], float] = {}  # failed lookups: not again before then
        self._resolving: dict[tuple[str, str | None, str], asyncio.Future[str]] = {}  # registry calls in flight
        # aiohttp, not httpx: ~0.4 ms vs ~2.4 ms per call to a model server; to a local one (loopback) the lean
        # client: ~14 µs of CPU per call vs aiohttp's ~90
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256, ttl_dns_cache=300),
                                          headers={"content-type": "application/json"})
        self.local = LocalClient()

    async def aclose(self) -> None:
        self.local.close()
        await self.http.close()

    async def _predict(self, url: str, body: bytes, pin: str | None,
                       timeout: float) -> tuple[int, bytes, str | None, str | None]:
        """``POST {url}/predict``: (status, body, X-Model-Version, X-Request-ID) of the answer."""
        if local(url) and (pin is None or pin.isdigit()):
            answer = await self.local.post(url, b"/predict", body,
                                           b"X-Model-Version: %s\r\n" % pin.encode() if pin else b"", timeout)
            served, request_id = answer.headers.get(b"x-model-version"), answer.headers.get(b"x-request-id")
            return (answer.status, answer.body, served.decode("latin-1") if served is not None else None,
                    request_id.decode("latin-1") if request_id is not None else None)
        async with self.http.post(f"{url}/predict", data=body, headers={"X-Model-Version": pin} if pin else None,
                                  timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            return (resp.status, await resp.read(), resp.headers.get("x-model-version"),
                    resp.headers.get("x-request-id"))

    async def resolve(self, name: str, version: str | None, alias: str = CHAMPION) -> str:
        hit = self.registry.cached(name, version, alias)
        if hit is not None:
            return hit
        # one registry call per (name, version, alias) at a time: under load, every request that comes while an
        # expired answer is being refreshed (a few ms, each ``cache_seconds``) waits for that call instead of
        # making its own (a burst of MLflow calls in threads that took the event loop's CPU and GIL)
        key = (name, version, alias)
        call = self._resolving.get(key)
        if call is None:
            call = self._resolving[key] = asyncio.ensure_future(
                asyncio.to_thread(self.registry.resolve, name, version, alias))

            def over(done: asyncio.Future[str]) -> None:
                del self._resolving[key]
                if not done.cancelled():
                    done.exception()  # retrieved here: every waiter may have left before it came

            call.add_done_callback(over)
        return await asyncio.shield(call)  # a waiter that leaves does not cancel the others' call

    async def features(self, name: str, version: str) -> tuple[list[str] | None, int | None]:
        """``(names, width)`` of the version's input; ``(None, None)``: unknown (the model server still checks)."""
        key = (name, version)
        if key not in self._features:
            now = time.monotonic()
            # MLflow just failed (the registry serves last known versions) or this lookup failed moments ago:
            # do not wait for it on the hot path
            if now < self.registry._down_until or now < self._features_retry.get(key, 0.0):
                return None, None
            try:
                found = await asyncio.to_thread(self._read_features, name, version)
            except Exception as e:  # MLflow down or an odd model: not cached, the model server checks the width
                log.info("no input schema for %s v%s: %s", name, version, e)
                self._features_retry[key] = time.monotonic() + FEATURES_RETRY_SECONDS
                return None, None
            self._features[key] = found
        return self._features[key]

    def _read_features(self, name: str, version: str) -> tuple[list[str] | None, int | None]:
        mv = self.registry.client.get_model_version(name, version)
        names = [f for f in ((mv.tags or {}).get(FEATURES_TAG) or "").split(",") if f]
        if names:
            return names, len(names)
        sig = _signature(self.registry.client, self.settings.mlflow_tracking_uri, mv.source)
        if sig is None or sig.inputs is None:
            return None, None
        if sig.inputs.is_tensor_spec():
            specs = sig.inputs.inputs
            shape = specs[0].shape if len(specs) == 1 else None
            return None, (shape[1] if shape is not None and len(shape) == 2 and shape[1] > 0 else None)
        cols = [c for c in sig.inputs.input_names() if isinstance(c, str)]
        return (cols or None), (len(cols) or None)

    async def _deployment(self, ref: str, namespace: str | None) -> tuple[str, str, str]:
        """``(model, version, url)`` of a Ready ModelDeployment "namespace/name"."""
        ns, name = ref.split("/", 1)
        deployments = self.deployments
        if deployments is None:
            raise Unavailable("ModelDeployments are not available in this API")
        try:
            dep = await deployments.get(ns, name)
        except NotFound:
            raise NotFound(f"ModelDeployment {ref} not found") from None
        st = dep.status
        phase = getattr(st.phase, "value", st.phase)
        if phase != "Ready" or not st.url or not st.resolved_version:
            raise Unavailable(f"ModelDeployment {ref} is {phase}, not Ready: it serves nothing yet")
        return dep.spec.model.name, str(st.resolved_version), st.url.rstrip("/")

    async def infer(self, req: InferenceRequest, namespace: str | None = None) -> InferenceResponse:
        """``namespace``: the caller's home; in cluster mode its ModelDeployments serve it first."""
        t0 = time.perf_counter()
        deadline = t0 + req.sla_seconds
        if req.deployment:
            name, version, fixed_url = await self._deployment(req.deployment, namespace)
        else:
            name, fixed_url = req.model or self.settings.model_name, None
            version = await self.resolve(name, req.version, req.alias or CHAMPION)
        names, width = await self.features(name, version)
        rows = req.rows(names, f"model {name} v{version}", width)
        body = orjson.dumps({"instances": rows})
        attempts, delay, last = 0, 0.05, ""
        while True:
            attempts += 1
            remaining = deadline - time.perf_counter()
            try:
                if req.deployment and attempts > 1:  # it may have rolled meanwhile: follow its status
                    name, version, fixed_url = await self._deployment(req.deployment, namespace)
                elif attempts > 1 and not req.version:  # the alias may have moved (a deployment rolled)
                    version = await self.resolve(name, None, req.alias or CHAMPION)
                url = fixed_url or await self.servers.endpoint(name, version, timeout=remaining, namespace=namespace)
                per_try = max(remaining / (req.retries - attempts + 2), min(remaining, 1.0))
                # a request for a model version (not a deployment) is answered by that version, never by the
                # canary of a deployment that serves it: X-Model-Version pins it; a deployment's canary answers
                # with its own version
                status, content, served, request_id = await self._predict(
                    url, body, None if req.deployment else version, per_try)
                if status == 200:
                    out = orjson.loads(content)
                    preds = out["predictions"]
                    LATENCY.observe(time.perf_counter() - t0)
                    return InferenceResponse(
                        model_name=name, model_version=served or version, predictions=preds,
                        prediction=preds[0] if req.single else None,
                        probabilities=out.get("probabilities"), attempts=attempts, request_id=request_id,
                        version_stale=(not req.deployment
                                       and self.registry.stale(name, req.version, req.alias or CHAMPION)),
                        latency_ms=round((time.perf_counter() - t0) * 1000, 3),
                    )
                if status in (400, 404, 422):
                    raise InvalidInput(f"model {name} v{version} rejected the input: {_error_text(content)}")
                last = f"model server answered {status}: {_error_text(content)}"
            except (aiohttp.ClientError, OSError) as e:  # OSError: TimeoutError, a refused or dropped connection
                last = f"{type(e).__name__}: {e}" if str(e) else f"{type(e).__name__} (no answer within the attempt)"
            except Unavailable as e:
                last = e.message
            remaining = deadline - time.perf_counter()
            if attempts > req.retries or remaining <= delay:
                FAILURES.inc()
                raise Unavailable(f"model {name} v{version} unavailable after {attempts} attempt(s) "
                                  f"within the {req.sla_seconds:g}s SLA: {last}")
            RETRIES.inc()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


def _signature(client, tracking_uri: str, source: str):
    """The signature in a version's ``MLmodel`` (MLflow 3: ``models:/m-…`` is a logged model; uploads point at
    run artifacts); only that one small file is downloaded."""
    import tempfile

    import mlflow.artifacts
    from mlflow.models import Model

    location = source
    if source.startswith("models:/m-"):
        location = client.get_logged_model(source[len("models:/"):]).artifact_location
    with tempfile.TemporaryDirectory(prefix="mlstack-mlmodel-") as tmp:
        path = mlflow.artifacts.download_artifacts(artifact_uri=location.rstrip("/") + "/MLmodel", dst_path=tmp,
                                                   tracking_uri=tracking_uri)
        return Model.load(path).signature


def _error_text(content: bytes) -> str:
    try:
        body = orjson.loads(content)
        return str(body.get("error") or body.get("detail") or body)[:500]
    except (orjson.JSONDecodeError, AttributeError):
        return content.decode(errors="replace")[:500]
