"""The API's composition root: every client and manager, built once in the lifespan (never at import).

Each subsystem's ``start`` returns what it built; ``start_services`` alone puts it into ``Services``, in the
order the subsystems need each other. Routes take what they use through ``mlstack.api.deps``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlstack.alerts import AlertSink, NullSink
from mlstack.settings import Settings

if TYPE_CHECKING:
    from kubernetes.client import ApiClient
    from redis.asyncio import Redis

    from mlstack.alerts.setup import Alerting
    from mlstack.api.config import Config
    from mlstack.api.quotas import Quotas
    from mlstack.auth import Authority
    from mlstack.deployments.kube import KubeDeployments
    from mlstack.deployments.local import LocalDeployments
    from mlstack.inference import Endpoints, InferenceClient
    from mlstack.monitoring.setup import Monitoring
    from mlstack.orgs.kube import KubeOrgs
    from mlstack.registry import Registry
    from mlstack.schedules.service import ScheduleService
    from mlstack.training.jobs import JobManager

log = logging.getLogger(__name__)


@dataclass
class Services:
    """What the API runs with. None: not started in this process (the mini-apps start a few subsystems only;
    a route needing one answers 503, see ``mlstack.api.deps``)."""

    config: Config  # the settings tree; ``settings`` is its core section
    alerts: AlertSink = field(default_factory=NullSink)  # where subsystems emit alerts (``alerting.sink``)
    redis: Redis | None = None
    registry: Registry | None = None
    training: JobManager | None = None
    endpoints: Endpoints | None = None  # where /inference finds a version's model server
    inference: InferenceClient | None = None
    deployments: LocalDeployments | KubeDeployments | None = None
    kube: ApiClient | None = None  # cluster mode
    auth: Authority | None = None  # who calls and what they may do
    orgs: KubeOrgs | None = None  # cluster mode
    alerting: Alerting | None = None  # the alert stream: sink, reader (hub), stream tickets
    schedules: ScheduleService | None = None
    monitoring: Monitoring | None = None
    quotas: Quotas | None = None
    ready_checks: dict[str, Callable[[], str]] = field(default_factory=dict)  # /readyz: name -> "ok" or the problem

    @property
    def settings(self) -> Settings:
        return self.config.core


async def start_core(config: Config, stack: AsyncExitStack) -> Services:
    """Redis and the alert stream: what every API process (the full API, the alerts-only app) starts with."""
    import redis.asyncio as aioredis

    from mlstack.alerts.setup import start as start_alerts

    settings = config.core
    svc = Services(config=config)
    svc.redis = aioredis.from_url(settings.redis_url, decode_responses=True, health_check_interval=10)
    stack.push_async_callback(svc.redis.aclose)
    svc.alerting = await start_alerts(svc.redis, settings.redis_url, stack, config.alerts)
    svc.alerts = svc.alerting.sink
    svc.ready_checks["alerts"] = svc.alerting.ready
    return svc


async def start_services(config: Config, stack: AsyncExitStack) -> Services:
    """Create every client, each from its section of ``config``; ``stack`` closes them in reverse order at
    shutdown."""
    from mlstack.api.quotas import Quotas
    from mlstack.auth.setup import start as start_auth
    from mlstack.deployments.setup import start as start_deployments
    from mlstack.inference import InferenceClient
    from mlstack.monitoring.setup import start as start_monitoring
    from mlstack.orgs.setup import start as start_orgs
    from mlstack.rayclient import RayClient
    from mlstack.registry import Registry
    from mlstack.schedules.setup import start as start_schedules
    from mlstack.training.jobs import JobManager

    settings = config.core
    # MLflow's client retries for minutes by default; an API request must fail fast and clearly instead
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(settings.mlflow_http_retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(settings.mlflow_http_timeout))
    svc = await start_core(config, stack)

    svc.registry = Registry.from_settings(settings)
    ray = RayClient(settings)  # Ray in this process, started on first use (local Ray Serve); stopped last
    stack.push_async_callback(ray.stop)
    svc.training = JobManager(settings, svc.redis, svc.registry, svc.alerts, ray)
    await svc.training.start()
    stack.push_async_callback(svc.training.stop)

    deployed = await start_deployments(settings, stack, svc.redis, svc.alerts, svc.registry, ray, config.deployments,
                                       config.kube)
    svc.deployments, svc.endpoints, svc.kube = deployed.backend, deployed.endpoints, deployed.kube
    # cluster mode: auth and orgs share the deployments' Kubernetes client
    svc.auth = await start_auth(settings.mode, stack, svc.deployments.default_namespace, config.auth, config.kube,
                                kube=svc.kube)
    svc.orgs = start_orgs(settings.mode, svc.kube, svc.redis, config.auth, config.kube)
    svc.inference = InferenceClient(settings, svc.registry, svc.endpoints, svc.deployments)
    stack.push_async_callback(svc.inference.aclose)

    svc.schedules = await start_schedules(svc, stack, config.schedules)
    svc.monitoring = await start_monitoring(settings, stack, svc.redis, svc.registry, svc.alerts, svc.deployments,
                                            config.monitor, config.series)
    svc.quotas = Quotas(svc.redis, config.quotas)
    return svc


async def check_ready(svc: Services) -> dict[str, str]:
    """Each dependency's state: "ok" or an error message."""
    checks: dict[str, str] = {}

    async def probe(name: str, coro: Any) -> None:
        try:
            await asyncio.wait_for(coro, timeout=2)
            checks[name] = "ok"
        except Exception as e:
            checks[name] = f"{type(e).__name__}: {e}"[:300]

    await probe("redis", svc.redis.ping())
    await probe("mlflow", asyncio.to_thread(svc.registry.ping))
    for name, check in svc.ready_checks.items():  # subsystems register their own
        try:
            checks[name] = check()
        except Exception as e:
            checks[name] = f"{type(e).__name__}: {e}"[:300]
    checks["ray"] = "ok" if svc.training.ray_ready else (
        svc.training.ray_error or "not started yet (local Ray starts with the first training job)")
    return checks
