"""Wire ``/deployments`` into the API's services (called by ``start_services`` before the inference client).

Local mode: ``LocalDeployments`` (re-creates the recorded deployments) and ``svc.servers`` becomes a
router that prefers a Ready local deployment of the requested version. Cluster mode: the Kubernetes
client is created here (never at import) and ``svc.servers`` routes ``/inference`` to Ready
ModelDeployments.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

from mlstack.deployments.settings import DeploymentSettings


async def start(svc: Any, stack: AsyncExitStack, ds: DeploymentSettings | None = None) -> None:
    ds = ds or DeploymentSettings()
    if svc.settings.mode == "cluster":
        from mlstack.deployments.kube import KubeDeployments, KubeEndpoints, PhaseAlerts
        from mlstack.kubeapi import connect, get_kube_settings

        ks = get_kube_settings()
        svc.kube = await asyncio.to_thread(connect, ks)
        backend = KubeDeployments(svc.kube, ds, ks.kube_timeout)
        stack.push_async_callback(backend.close)
        svc.deployments = backend
        endpoints = KubeEndpoints(backend, ds)
        svc.servers = endpoints  # the local pool (stopped by the stack) stays unused
        watcher = PhaseAlerts(backend, endpoints.namespaces, svc.redis, svc.alerts, ds.deployments_watch_seconds,
                              f"{ds.deployments_redis_key}:alerted")
        watcher.start()
        stack.push_async_callback(watcher.stop)
        return

    from mlstack.deployments.local import LocalDeployments, LocalRouter, ray_env_defaults

    ray_env_defaults()
    backend = LocalDeployments(svc.settings, ds, svc.redis, svc.registry, svc.alerts, svc.training,
                               reserved_ports=svc.servers.reserved_ports)  # one port book for this machine
    await backend.start()
    stack.push_async_callback(backend.stop)
    svc.deployments = backend
    svc.servers = LocalRouter(backend, svc.servers)
