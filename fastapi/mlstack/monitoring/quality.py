"""Ground truth joined to predictions: online accuracy (classification) and RMSE (regression) over sliding windows.

Storage (Redis): one hash per deployment and time bucket, ``<prefix>:quality:<ns>/<name>:<bucket>`` (bucket =
``floor(ts / bucket_seconds)``), fields ``<version>|n`` (labelled predictions), ``<version>|correct`` (label equal
to the prediction), ``<version>|num`` and ``<version>|se`` (numeric pairs and their summed squared error); each
bucket expires after the longest window. A window sums its buckets (one pipelined round trip).

The join: the monitor keeps ``<prefix>:req:<request id>`` -> ``{namespace, deployment, model, version, outputs}``
for every logged (sampled) request, with a TTL; feedback by request id looks it up there.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from typing import Any

from mlstack.monitoring.settings import MonitorSettings


def same(prediction: Any, label: Any) -> bool:
    """Label equals prediction: numerically when both are numbers (``1 == 1.0 == "1"`` is not assumed)."""
    if _number(prediction) and _number(label):
        return float(prediction) == float(label)
    return str(prediction) == str(label)


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))


class Quality:
    def __init__(self, redis: Any, ms: MonitorSettings):
        self.redis = redis
        self.ms = ms

    def _bucket_key(self, namespace: str, name: str, bucket: int) -> str:
        return f"{self.ms.key_prefix}:quality:{namespace}/{name}:{bucket}"

    def request_key(self, request_id: str) -> str:
        return f"{self.ms.key_prefix}:req:{request_id}"

    @property
    def horizon(self) -> int:
        return max([*self.ms.quality_windows, 86_400]) + self.ms.bucket_seconds

    async def lookup(self, request_ids: list[str]) -> list[dict[str, Any] | None]:
        """The logged request of each id (None: unknown, not sampled, or expired)."""
        if not request_ids:
            return []
        raw = await self.redis.mget([self.request_key(r) for r in request_ids])
        return [json.loads(v) if v else None for v in raw]

    async def record(self, namespace: str, name: str, version: str, pairs: list[tuple[Any, Any]],
                     ts: float | None = None) -> None:
        """Count (prediction, label) pairs of ``version`` in the current bucket."""
        if not pairs:
            return
        n = len(pairs)
        correct = sum(same(p, y) for p, y in pairs)
        numeric = [(float(p), float(y)) for p, y in pairs if _number(p) and _number(y)]
        se = sum((p - y) ** 2 for p, y in numeric)
        key = self._bucket_key(namespace, name, int((ts or time.time()) // self.ms.bucket_seconds))
        pipe = self.redis.pipeline(transaction=False)
        pipe.hincrby(key, f"{version}|n", n)
        pipe.hincrby(key, f"{version}|correct", correct)
        if numeric:
            pipe.hincrby(key, f"{version}|num", len(numeric))
            pipe.hincrbyfloat(key, f"{version}|se", se)
        pipe.expire(key, self.horizon)
        await pipe.execute()

    async def window(self, namespace: str, name: str, seconds: int, now: float | None = None) -> dict[str, Any]:
        """``{"seconds", "total": {...}, "versions": {v: {...}}}`` with n, accuracy and rmse (None when unknown)."""
        now = now or time.time()
        b = self.ms.bucket_seconds
        last = int(now // b)
        first = int((now - seconds) // b) + 1
        pipe = self.redis.pipeline(transaction=False)
        for bucket in range(first, last + 1):
            pipe.hgetall(self._bucket_key(namespace, name, bucket))
        sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for fields in await pipe.execute():
            for field, value in (fields or {}).items():
                version, _, what = field.rpartition("|")
                sums[version][what] += float(value)
        total: dict[str, float] = defaultdict(float)
        for s in sums.values():
            for k, v in s.items():
                total[k] += v
        return {"seconds": seconds, "total": _metrics(total),
                "versions": {v: _metrics(s) for v, s in sorted(sums.items(), key=lambda kv: _vkey(kv[0]))}}


def _vkey(v: str) -> tuple[int, str]:
    return (int(v), "") if v.isdigit() else (1 << 62, v)


def _metrics(s: dict[str, float]) -> dict[str, Any]:
    n = int(s.get("n", 0))
    num = int(s.get("num", 0))
    return {"n": n, "accuracy": round(s.get("correct", 0) / n, 6) if n else None,
            "rmse": round(math.sqrt(s.get("se", 0.0) / num), 6) if num else None}
