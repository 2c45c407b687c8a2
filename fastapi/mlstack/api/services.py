"""Clients and managers the API uses, built once in the lifespan (never at import)."""

from __future__ import annotations

import asyncio
import logging
import os
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from mlstack.alerts import AlertSink, NullSink
from mlstack.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    alerts: AlertSink = field(default_factory=NullSink)
    redis: Any = None  # redis.asyncio.Redis
    registry: Any = None  # mlstack.registry.Registry
    training: Any = None  # mlstack.training.jobs.JobManager
    servers: Any = None  # mlstack.local.servers.ServerPool (local mode)
    inference: Any = None  # mlstack.inference.InferenceClient
    deployments: Any = None  # mlstack.deployments backend (local processes or the Kubernetes API)
    kube: Any = None  # kubernetes.client.ApiClient (cluster mode)
    auth: Any = None  # mlstack.auth.Authority: who calls and what they may do
    orgs: Any = None  # mlstack.orgs.KubeOrgs (cluster mode)
    extras: dict[str, Any] = field(default_factory=dict)  # room for later subsystems (schedules, k8s, ...)


async def start_services(settings: Settings, stack: AsyncExitStack) -> Services:
    """Create every client; ``stack`` closes them in reverse order at shutdown."""
    import redis.asyncio as aioredis

    from mlstack.alerts.setup import start as start_alerts
    from mlstack.auth.setup import start as start_auth
    from mlstack.deployments.setup import start as start_deployments
    from mlstack.inference import InferenceClient
    from mlstack.local.servers import ServerPool
    from mlstack.monitoring.setup import start as start_monitoring
    from mlstack.orgs.setup import start as start_orgs
    from mlstack.registry import Registry
    from mlstack.schedules.setup import start as start_schedules
    from mlstack.training.jobs import JobManager

    svc = Services(settings=settings)
    # MLflow's client retries for minutes by default; an API request must fail fast and clearly instead
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(settings.mlflow_http_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(settings.mlflow_http_timeout))
    svc.redis = aioredis.from_url(settings.redis_url, decode_responses=True, health_check_interval=10)
    stack.push_async_callback(svc.redis.aclose)

    await start_alerts(svc, stack)

    svc.registry = Registry.from_settings(settings)
    svc.training = JobManager(settings, svc.redis, svc.registry, svc.alerts)
    await svc.training.start()
    stack.push_async_callback(svc.training.stop)

    svc.servers = ServerPool(settings)
    stack.push_async_callback(svc.servers.stop_all)
    await start_deployments(svc, stack)  # may swap svc.servers for the cluster's ModelDeployments
    await start_auth(svc, stack, svc.deployments.default_namespace)  # cluster mode: shares svc.kube
    start_orgs(svc)
    svc.inference = InferenceClient(settings, svc.registry, svc.servers, getattr(svc, "deployments", None))
    stack.push_async_callback(svc.inference.aclose)

    await start_schedules(svc, stack)
    await start_monitoring(svc, stack)
    return svc


async def check_ready(svc: Services) -> dict[str, str]:
    """Each dependency's state: "ok" or an error message."""
    checks: dict[str, str] = {}

    async def probe(name, coro):
        try:
            await asyncio.wait_for(coro, timeout=2)
            checks[name] = "ok"
        except Exception as e:
            checks[name] = f"{type(e).__name__}: {e}"[:300]

    await probe("redis", svc.redis.ping())
    await probe("mlflow", asyncio.to_thread(svc.registry.ping))
    for name, check in svc.extras.get("ready_checks", {}).items():  # subsystems register their own
        try:
            checks[name] = check()
        except Exception as e:
            checks[name] = f"{type(e).__name__}: {e}"[:300]
    checks["ray"] = "ok" if svc.training.ray_ready else (
        svc.training.ray_error or "not started yet (local Ray starts with the first training job)")
    return checks
