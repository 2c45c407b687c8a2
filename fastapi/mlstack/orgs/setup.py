"""``Services.orgs``: organisations need Kubernetes (cluster mode); local mode answers 404 on ``/orgs``."""

from __future__ import annotations

from typing import Any

from mlstack.auth.settings import AuthSettings
from mlstack.kubeapi import KubeSettings
from mlstack.orgs.kube import KubeOrgs


def start(api_mode: str, kube: Any, redis: Any, auth: AuthSettings, ks: KubeSettings) -> KubeOrgs | None:
    """``kube``: the API's Kubernetes client (``ApiClient``, cluster mode), ``redis``: its redis.asyncio client."""
    if api_mode == "cluster" and kube is not None:
        return KubeOrgs(kube, redis, auth, ks.kube_timeout)
    return None
