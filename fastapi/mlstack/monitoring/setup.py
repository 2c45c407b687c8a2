"""Lifespan wiring: ``svc.extras["quality"]`` (feedback) and the monitor loop (``svc.extras["monitor"]``).

Called by ``start_services`` after the deployments backend exists. Local mode: the monitor drains the API's own
``mlstack serve`` deployments and the ``SLOMet`` condition is merged into their status views (a Redis hash the
local backend reads). Cluster mode: the API runs no monitor; ``mlstack monitor`` (``manifests/monitor``, see
``mlstack.monitoring.cluster``) does, with its own least-privilege ServiceAccount.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from contextlib import AsyncExitStack
from typing import Any

from mlstack.monitoring.monitor import Monitor, Profiles, Target
from mlstack.monitoring.quality import Quality
from mlstack.monitoring.series import Series, get_series_settings
from mlstack.monitoring.settings import MonitorSettings, get_monitor_settings

log = logging.getLogger(__name__)
QUALITY, MONITOR, SETTINGS, SERIES = "quality", "monitor", "monitor_settings", "monitor_series"


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


async def start(svc: Any, stack: AsyncExitStack, ms: MonitorSettings | None = None) -> None:
    ms = ms or get_monitor_settings()
    svc.extras[SETTINGS] = ms
    quality = Quality(svc.redis, ms)
    svc.extras[QUALITY] = quality
    series = Series(svc.redis, ms.key_prefix, get_series_settings())  # read by the API in both modes
    svc.extras[SERIES] = series
    backend = svc.deployments
    if not ms.enabled or backend is None:
        return
    conditions_key = f"{ms.key_prefix}:conditions"

    if svc.settings.mode != "local":
        log.info("monitor: cluster mode: the monitor Deployment (mlstack monitor) drains the model servers")
        return
    backend.conditions_key = conditions_key

    async def targets() -> list[Target]:
        return [Target(ns, name, spec, tuple(servers), canary)
                for ns, name, spec, servers, canary in backend.monitor_targets()]

    async def conditions(t: Target, cond: dict[str, Any]) -> None:
        """Keep lastTransitionTime while the status stays; local status views merge this hash."""
        prev = await svc.redis.hget(conditions_key, t.key)
        old = json.loads(prev) if prev else {}
        since = old.get("lastTransitionTime") if old.get("status") == cond["status"] else None
        new = {**cond, "lastTransitionTime": since or _now()}
        if new != old:
            await svc.redis.hset(conditions_key, t.key, json.dumps(new))

    history = None
    if ms.history_enabled:
        from mlstack.monitoring.history import History

        history = History.from_settings(svc.settings, ms)
    async def existing() -> set[str]:
        return set(await svc.redis.hkeys(backend.ds.deployments_redis_key))

    monitor = Monitor(svc.redis, ms, targets, svc.alerts, Profiles(svc.registry, ms), quality, conditions, history,
                      existing, series if series.ss.enabled else None)
    monitor.start()
    svc.extras[MONITOR] = monitor
    stack.push_async_callback(series.aclose)
    stack.push_async_callback(monitor.stop)
