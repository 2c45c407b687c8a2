"""What the API tells of a deployment's monitoring, in both modes (read from the monitor's Redis state, whoever
drains the model servers: the API's own monitor in local mode, ``mlstack monitor`` in a cluster):

- ``label_logged``: ``POST /feedback`` by request id: labels joined to the logged predictions, counted per
  deployment and version (only for deployments the caller may update);
- ``quality_report``: ``GET /deployments/{name}/quality``: feedback accuracy/RMSE over windows, payload counters,
  latency of the sampled traffic, the last drift and shadow results, open alert episodes, ``SLOMet``.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlstack.errors import Forbidden, InvalidInput, NotFound
from mlstack.monitoring.monitor import SHADOW_LAST, payload_stream, read_records, state_hash, stats_hash, windows_of
from mlstack.monitoring.quality import Quality
from mlstack.monitoring.settings import MonitorSettings
from mlstack_operator.contract import ModelDeploymentSpec

MayUpdate = Callable[[str, str], Awaitable[None]]  # raises Forbidden when the caller may not update ns/name


@dataclass
class FeedbackCounts:
    matched: int = 0
    unmatched: int = 0
    labelled: int = 0
    unmatched_ids: list[str] = field(default_factory=list)
    deployments: dict[str, dict[str, int]] = field(default_factory=dict)  # "ns/name" -> {version: pairs}


def _pairs(outputs: Any, label: Any) -> list[tuple[Any, Any]] | None:
    outs = outputs if isinstance(outputs, list) else [outputs]
    labels = label if isinstance(label, list) else [label]
    if len(labels) != len(outs):
        return None
    return list(zip(outs, labels, strict=True))


async def label_logged(quality: Quality, items: Sequence[tuple[str, Any]], may_update: MayUpdate,
                       single: bool) -> FeedbackCounts:
    """Join ``(request_id, label)`` items to their logged predictions and count the pairs. ``single``: one item
    sent on its own, whose problems are errors (404 unknown id, 403, 422 wrong row count) instead of counts."""
    logged = await quality.lookup([rid for rid, _ in items])
    groups: dict[tuple[str, str, str], list[tuple[Any, Any]]] = defaultdict(list)
    unmatched: list[str] = []
    allowed: dict[str, bool] = {}
    for (request_id, label), rec in zip(items, logged, strict=True):
        if rec is None:
            if single:
                raise NotFound(f"request {request_id} was not logged (only sampled requests are: see "
                               "spec.monitoring.sampleRate; or it expired), send the rows with the deployment instead")
            unmatched.append(request_id)
            continue
        key = f"{rec['namespace']}/{rec['deployment']}"
        if key not in allowed:
            try:
                await may_update(rec["namespace"], rec["deployment"])
                allowed[key] = True
            except Forbidden:
                if single:
                    raise
                allowed[key] = False
        if not allowed[key]:
            unmatched.append(request_id)
            continue
        pairs = _pairs(rec.get("outputs"), label)
        if pairs is None:
            msg = f"request {request_id} had {len(rec.get('outputs') or [])} rows: send one label per row"
            if single:
                raise InvalidInput(msg)
            unmatched.append(request_id)
            continue
        groups[(rec["namespace"], rec["deployment"], str(rec.get("version")))].extend(pairs)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    labelled = 0
    for (ns, name, version), pairs in groups.items():
        await quality.record(ns, name, version, pairs)
        counts[f"{ns}/{name}"][version] += len(pairs)
        labelled += len(pairs)
    return FeedbackCounts(matched=len(items) - len(unmatched), unmatched=len(unmatched), labelled=labelled,
                          unmatched_ids=unmatched[:100], deployments={k: dict(v) for k, v in counts.items()})


async def quality_report(redis: Any, ms: MonitorSettings, quality: Quality, namespace: str, name: str,
                         spec: ModelDeploymentSpec, slo_met: dict[str, Any] | None) -> dict[str, Any]:
    """The ``/quality`` answer of deployment ``namespace/name`` (``slo_met``: its status's SLOMet condition)."""
    key = f"{namespace}/{name}"
    mon = spec.effective_monitoring
    now = time.time()
    stats = await redis.hgetall(stats_hash(ms, key))
    latency: dict[str, Any] = {"window_seconds": mon.window_seconds, "samples": 0}
    records = await read_records(redis, ms, key, mon.window_seconds, now)
    lat = [x for w in windows_of(records).values() for x in w.latencies]
    if lat:
        p50, p99 = np.percentile(lat, [50, 99])
        latency.update(samples=len(lat), p50_ms=round(float(p50), 3), p99_ms=round(float(p99), 3))
    state = await redis.hgetall(state_hash(ms, key))
    return {
        "namespace": namespace, "name": name, "monitoring": mon.model_dump(by_alias=True),
        "alerts": spec.alerts.model_dump(by_alias=True) if spec.alerts else None,
        "feedback": [await quality.window(namespace, name, s, now)
                     for s in sorted({mon.window_seconds, *ms.quality_windows})],
        "payloads": {"records": int(stats.get("records", 0)), "missed": int(stats.get("missed", 0)),
                     "dropped": sum(int(v) for k, v in stats.items() if k.startswith("dropped|")),
                     "stream": payload_stream(ms, key)},
        "latency": latency,  # from the payload stream itself, whoever drains it
        "drift": {f.split("|", 1)[1]: json.loads(v) for f, v in state.items() if f.startswith("drift:last|")},
        "episodes": {f: json.loads(v) for f, v in state.items() if f.startswith(("drift|", "slo|", "shadow|"))},
        # spec.shadow: the shadow version's answers against the live ones (agreement / mean absolute difference)
        "shadow": json.loads(state[SHADOW_LAST]) if SHADOW_LAST in state else None,
        "condition": slo_met,
    }
