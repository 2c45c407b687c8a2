"""Wire ``/deployments`` at startup (called by ``start_services`` before the inference client).

Returns the backend and the ``/inference`` endpoints (``mlstack.inference.Endpoints``) that go with it.
Local mode: ``LocalDeployments`` (re-creates the recorded deployments) and a ``LocalRouter`` that prefers a
Ready local deployment of the requested version, else the shared ``ServerPool``. Cluster mode: the Kubernetes
client is created here (never at import), ``KubeDeployments`` and ``KubeEndpoints`` (``/inference`` goes to
Ready ModelDeployments).
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlstack.deployments.settings import DeploymentSettings
from mlstack.kubeapi import KubeSettings
from mlstack.settings import Settings

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

    from mlstack.alerts import AlertSink
    from mlstack.deployments.kube import KubeDeployments, KubeEndpoints
    from mlstack.deployments.local import LocalDeployments
    from mlstack.deployments.local_routing import LocalRouter
    from mlstack.rayclient import RayClient
    from mlstack.registry import Registry


@dataclass
class Deployed:
    backend: LocalDeployments | KubeDeployments
    endpoints: LocalRouter | KubeEndpoints
    kube: ApiClient | None = None  # cluster mode: the API's Kubernetes client (auth and orgs share it)


async def start(settings: Settings, stack: AsyncExitStack, redis: Any, alerts: AlertSink, registry: Registry,
                ray: RayClient, ds: DeploymentSettings, ks: KubeSettings) -> Deployed:
    """``redis``: the API's redis.asyncio client; ``ray``: its Ray connection (local Ray Serve deployments start
    it). What starts here is stopped by ``stack``."""
    if settings.mode == "cluster":
        return await _cluster(stack, redis, alerts, ds, ks)

    from mlstack.deployments.local import LocalDeployments
    from mlstack.deployments.local_routing import LocalRouter
    from mlstack.local.servers import ServerPool
    from mlstack.rayclient import ray_env_defaults

    pool = ServerPool(settings)  # /inference of a version no deployment serves
    stack.push_async_callback(pool.stop_all)
    ray_env_defaults()
    backend = LocalDeployments(settings, ds, redis, registry, alerts, ray,
                               reserved_ports=pool.reserved_ports)  # one port book for this machine
    await backend.start()
    stack.push_async_callback(backend.stop)
    return Deployed(backend, LocalRouter(backend, pool))


async def _cluster(stack: AsyncExitStack, redis: Any, alerts: AlertSink, ds: DeploymentSettings,
                   ks: KubeSettings) -> Deployed:
    from mlstack.deployments.kube import KubeDeployments, KubeEndpoints, PhaseAlerts
    from mlstack.kubeapi import connect

    kube = await asyncio.to_thread(connect, ks)
    backend = KubeDeployments(kube, ds, ks.kube_timeout)
    stack.push_async_callback(backend.close)
    endpoints = KubeEndpoints(backend, ds)
    watcher = PhaseAlerts(backend, endpoints.namespaces, redis, alerts, ds.deployments_watch_seconds,
                          f"{ds.deployments_redis_key}:alerted")
    watcher.start()
    stack.push_async_callback(watcher.stop)
    return Deployed(backend, endpoints, kube)
