"""``/inference`` in local mode: ``LocalRouter`` (``mlstack.inference.Endpoints``) sends a version to a Ready local
deployment serving it (``local.LocalDeployments``' entries), else to the shared ``ServerPool``."""

from __future__ import annotations

import asyncio
import time

from mlstack.deployments.local import LocalDeployments
from mlstack.local.servers import ServerPool
from mlstack_operator.contract import Phase


class LocalRouter:
    """The ``/inference`` endpoints (``mlstack.inference.Endpoints``) in local mode: a Ready local deployment of the
    version if any, else the shared pool."""

    GRACE_SECONDS = 1.0

    def __init__(self, deployments: LocalDeployments, pool: ServerPool):
        self.deployments = deployments
        self.pool = pool

    def ready_url(self, model: str, version: str) -> str | None:
        """URL of a Ready local deployment serving ``model`` ``version`` (or None)."""
        for e in self.deployments.entries():
            st = e.obj.get("status") or {}
            if (e.spec.model.name == model and st.get("phase") == Phase.Ready and st.get("resolvedVersion") == version
                    and st.get("url")):
                return st["url"]
        return None

    def follows_alias(self, model: str) -> bool:
        return any(e.spec.model.name == model and e.spec.model.alias is not None
                   for e in self.deployments.entries())

    def rolling_to(self, model: str, version: str) -> bool:
        """Whether a local deployment is starting ``model`` ``version`` in a roll (it serves it in moments)."""
        return any(e.spec.model.name == model and e.rolling_to == version for e in self.deployments.entries())

    async def endpoint(self, name: str, version: str, timeout: float | None = None,
                       namespace: str | None = None) -> str:
        """Local mode is one tenant: any Ready local deployment of the version, else a pool server. A version a
        deployment is rolling to is waited for (within ``timeout``) rather than started a second time."""
        if url := self.ready_url(name, version):
            return url
        if (srv := self.pool.get(name, version)) is not None:  # the hot path: one liveness check, not two
            return srv.url
        if self.follows_alias(name):
            # the version may be where an alias just moved (this request saw it before the deployment's next
            # re-resolution): wake the deployments and give them a moment to start rolling to it
            self.deployments.alias_moved(name)
            now = time.monotonic()
            deadline, grace = now + (timeout or 60.0), now + self.GRACE_SECONDS
            while time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                if url := self.ready_url(name, version):
                    return url
                if not self.rolling_to(name, version) and time.monotonic() > grace:
                    break
        return await self.pool.endpoint(name, version, timeout=timeout)

    async def stop_all(self) -> None:
        await self.pool.stop_all()
