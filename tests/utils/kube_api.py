"""The API in cluster mode on the real control plane, as its own ServiceAccount, and clients of it.

Shared by the cluster-mode test modules (auth, organisations, the dashboard's organisation panel, /deployments):
``start_cluster_api`` runs ``mlstack api`` with ``KUBECONFIG`` = the ``api_kubeconfig`` fixture (a TokenRequest
token of ``mlstack/mlstack-api``, nothing more) and ``MLSTACK_MODE=cluster``; no server override.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import httpx

from tests.utils.procs import Proc, start_api


def cluster_api_env(stack_env: dict[str, str], api_kubeconfig: Path, state_dir: Path,
                    **extra: str) -> dict[str, str]:
    """``stack_env`` switched to cluster mode on the real API server, as the API's ServiceAccount."""
    env = {**stack_env, "MLSTACK_MODE": "cluster", "KUBECONFIG": str(api_kubeconfig),
           "MLSTACK_STATE_DIR": str(state_dir),
           "MLSTACK_AUTH_CACHE_SECONDS": "0",  # RBAC changes take effect at once (tests)
           "MLSTACK_DEPLOYMENTS_WATCH_SECONDS": "0.5", **extra}
    # nothing may point it elsewhere: the kubeconfig is all it has
    for key in ("MLSTACK_KUBE_SERVER", "MLSTACK_KUBECONFIG", "MLSTACK_KUBE_CONTEXT"):
        env.pop(key, None)
    return env


def start_cluster_api(stack_env: dict[str, str], api_kubeconfig: Path, logdir: Path, name: str,
                      args: tuple[str, ...] = (), **extra: str) -> tuple[Proc, str]:
    env = cluster_api_env(stack_env, api_kubeconfig, logdir / f"{name}-state", **extra)
    return start_api(logdir / f"{name}.log", env, what=f"mlstack api (cluster mode, {name})", args=args)


def unique(prefix: str) -> str:
    """A name unique per run (MLSTACK_TEST_KUBECONFIG clusters outlive test runs)."""
    return f"{prefix}-{secrets.token_hex(3)}"


class As:
    """An API client holding one bearer token (or none)."""

    def __init__(self, api: str, token: str | None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.c = httpx.Client(base_url=api, headers=headers, timeout=30)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.c, name)
