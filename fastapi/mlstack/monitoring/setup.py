"""Lifespan wiring: ``Monitoring``: feedback (``quality``), the time series and, in local mode, the monitor loop.

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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlstack.monitoring.monitor import Monitor, Profiles, Target
from mlstack.monitoring.quality import Quality
from mlstack.monitoring.series import Series, SeriesSettings
from mlstack.monitoring.settings import MonitorSettings
from mlstack.settings import Settings

if TYPE_CHECKING:
    from mlstack.alerts import AlertSink
    from mlstack.registry import Registry

log = logging.getLogger(__name__)


@dataclass
class Monitoring:
    settings: MonitorSettings
    quality: Quality
    series: Series  # read by the API in both modes
    monitor: Monitor | None = None  # local mode with monitoring enabled: this process drains the model servers


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


async def start(settings: Settings, stack: AsyncExitStack, redis: Any, registry: Registry, alerts: AlertSink,
                backend: Any, ms: MonitorSettings, ss: SeriesSettings) -> Monitoring:
    """``redis``: the API's redis.asyncio client; ``backend``: the deployments backend (``LocalDeployments`` in
    local mode; None: nothing to monitor)."""
    quality = Quality(redis, ms)
    series = Series(redis, ms.key_prefix, ss)
    out = Monitoring(ms, quality, series)
    if not ms.enabled or backend is None:
        return out
    conditions_key = f"{ms.key_prefix}:conditions"

    if settings.mode != "local":
        log.info("monitor: cluster mode: the monitor Deployment (mlstack monitor) drains the model servers")
        return out
    backend.conditions_key = conditions_key

    async def targets() -> list[Target]:
        return [Target(ns, name, spec, tuple(servers), canary)
                for ns, name, spec, servers, canary in backend.monitor_targets()]

    async def conditions(t: Target, cond: dict[str, Any]) -> None:
        """Keep lastTransitionTime while the status stays; local status views merge this hash."""
        prev = await redis.hget(conditions_key, t.key)
        old = json.loads(prev) if prev else {}
        since = old.get("lastTransitionTime") if old.get("status") == cond["status"] else None
        new = {**cond, "lastTransitionTime": since or _now()}
        if new != old:
            await redis.hset(conditions_key, t.key, json.dumps(new))

    history = None
    if ms.history_enabled:
        from mlstack.monitoring.history import History

        history = History.from_settings(settings, ms)
    async def existing() -> set[str]:
        return set(await redis.hkeys(backend.ds.deployments_redis_key))

    monitor = Monitor(redis, ms, targets, alerts, Profiles(registry, ms), quality, conditions, history,
                      existing, series if series.ss.enabled else None)
    monitor.start()
    stack.push_async_callback(series.aclose)
    stack.push_async_callback(monitor.stop)
    out.monitor = monitor
    return out
