"""``POST /inference``: resolve the version, send rows to that version's model server, retry inside the SLA."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

import aiohttp
import orjson
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlstack.errors import InvalidInput, Unavailable
from mlstack.registry import Registry
from mlstack.settings import Settings

Finite = Annotated[float, Field(allow_inf_nan=False)]
RETRIES = Counter("mlstack_inference_retries_total", "Inference attempts that failed and were retried")
FAILURES = Counter("mlstack_inference_unavailable_total", "Inference requests that ran out of retries or SLA")
LATENCY = Histogram("mlstack_inference_seconds", "End-to-end /inference latency",
                    buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
MAX_ROWS = 1000
MAX_FEATURES = 1000


class InferenceRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"input_data": [5.1, 3.5, 1.4, 0.2]}]})

    input_data: list[Finite] | list[list[Finite]] = Field(
        ..., description="one row of features, or a list of rows (at most 1000)")
    model_version: str | None = Field(None, pattern=r"^[0-9]{1,9}$", description="pin a version; default: @champion")
    retries: int = Field(3, ge=0, le=10)
    sla_seconds: float = Field(60, ge=0.1, le=600, description="deadline for the whole request, retries included")

    @field_validator("input_data")
    @classmethod
    def _shape(cls, v):
        rows = v if v and isinstance(v[0], list) else [v]
        if not rows or not rows[0]:
            raise ValueError("input_data must hold at least one feature")
        if len(rows) > MAX_ROWS:
            raise ValueError(f"at most {MAX_ROWS} rows per request")
        width = len(rows[0])
        if width > MAX_FEATURES or any(len(r) != width for r in rows):
            raise ValueError(f"every row must have the same number of features (at most {MAX_FEATURES})")
        return v

    def rows(self) -> list[list[float]]:
        return self.input_data if isinstance(self.input_data[0], list) else [self.input_data]  # type: ignore[return-value]


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    prediction: float | int | str | None = Field(None, description="the single prediction when one row was sent")
    predictions: list
    probabilities: list[list[float]] | None = None
    latency_ms: float
    attempts: int
    version_stale: bool = Field(False, description="MLflow was unreachable: model_version is the last version "
                                "resolved for this request's alias or pin, not a fresh answer")


class InferenceClient:
    def __init__(self, settings: Settings, registry: Registry, servers):
        self.settings = settings
        self.registry = registry
        self.servers = servers
        # aiohttp, not httpx, on the hot path: ~0.4 ms vs ~2.4 ms per call to a local model server
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256, ttl_dns_cache=300),
                                          headers={"content-type": "application/json"})

    async def aclose(self) -> None:
        await self.http.close()

    async def resolve(self, name: str, version: str | None) -> str:
        hit = self.registry.cached(name, version)
        return hit if hit is not None else await asyncio.to_thread(self.registry.resolve, name, version)

    async def infer(self, req: InferenceRequest, namespace: str | None = None) -> InferenceResponse:
        """``namespace``: the caller's home; in cluster mode its ModelDeployments serve it first."""
        t0 = time.perf_counter()
        deadline = t0 + req.sla_seconds
        name = self.settings.model_name
        version = await self.resolve(name, req.model_version)
        body = orjson.dumps({"instances": req.rows()})
        attempts, delay, last = 0, 0.05, ""
        while True:
            attempts += 1
            remaining = deadline - time.perf_counter()
            try:
                url = await self.servers.endpoint(name, version, timeout=remaining, namespace=namespace)
                per_try = max(remaining / (req.retries - attempts + 2), min(remaining, 1.0))
                async with self.http.post(f"{url}/predict", data=body,
                                          timeout=aiohttp.ClientTimeout(total=per_try)) as resp:
                    status, content = resp.status, await resp.read()
                if status == 200:
                    out = orjson.loads(content)
                    preds = out["predictions"]
                    LATENCY.observe(time.perf_counter() - t0)
                    return InferenceResponse(
                        model_name=name, model_version=version, predictions=preds,
                        prediction=preds[0] if not isinstance(req.input_data[0], list) else None,
                        probabilities=out.get("probabilities"), attempts=attempts,
                        version_stale=self.registry.stale(name, req.model_version),
                        latency_ms=round((time.perf_counter() - t0) * 1000, 3),
                    )
                if status in (400, 404, 422):
                    raise InvalidInput(f"model {name} v{version} rejected the input: {_error_text(content)}")
                last = f"model server answered {status}: {_error_text(content)}"
            except (aiohttp.ClientError, TimeoutError) as e:
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


def _error_text(content: bytes) -> str:
    try:
        body = orjson.loads(content)
        return str(body.get("error") or body.get("detail") or body)[:500]
    except (orjson.JSONDecodeError, AttributeError):
        return content.decode(errors="replace")[:500]
