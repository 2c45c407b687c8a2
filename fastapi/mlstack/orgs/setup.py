"""``svc.orgs``: organisations need Kubernetes (cluster mode); local mode answers 501 on ``/orgs``."""

from __future__ import annotations

from typing import Any

from mlstack.auth.settings import get_auth_settings
from mlstack.kubeapi import get_kube_settings


def start(svc: Any) -> None:
    if svc.settings.mode == "cluster" and svc.kube is not None:
        from mlstack.orgs.kube import KubeOrgs

        svc.orgs = KubeOrgs(svc.kube, svc.redis, get_auth_settings(), get_kube_settings().kube_timeout)
