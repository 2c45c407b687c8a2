"""Model resolution through the MLflow registry: alias -> version, and "does this version exist".

MlflowClient is synchronous; calls run in a worker thread. Existing versions are cached for the
process lifetime (a version number never changes its meaning); aliases for ``cache_seconds``.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any


class ModelNotFound(Exception):
    """The registry answered: no such model, version or alias. Not transient."""


class RegistryUnavailable(Exception):
    """The registry could not be asked (network, 5xx). Transient."""


class ModelResolver:
    def __init__(self, tracking_uri: str, cache_seconds: float = 30.0, client: Any = None,
                 timeout_seconds: float = 10.0, max_retries: int = 1) -> None:
        self.tracking_uri = tracking_uri
        # MLflow's own HTTP retries back off for minutes; the operator retries through kopf instead.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(timeout_seconds)))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(max_retries))
        self.cache_seconds = cache_seconds
        self._client = client
        self._versions: set[tuple[str, str]] = set()
        self._aliases: dict[tuple[str, str], tuple[float, str]] = {}

    def _mlflow(self) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        return self._client

    @staticmethod
    def _classify(e: Exception, what: str) -> Exception:
        code = getattr(e, "error_code", "") or ""
        if code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return ModelNotFound(f"{what} not found in the MLflow registry")
        return RegistryUnavailable(f"MLflow registry unavailable while resolving {what}: {e}")

    def _version_sync(self, name: str, version: str) -> str:
        try:
            mv = self._mlflow().get_model_version(name, version)
        except Exception as e:
            raise self._classify(e, f"model {name!r} version {version}") from e
        return str(mv.version)

    def _alias_sync(self, name: str, alias: str) -> str:
        try:
            mv = self._mlflow().get_model_version_by_alias(name, alias)
        except Exception as e:
            raise self._classify(e, f"model {name!r} alias {alias!r}") from e
        return str(mv.version)

    async def version(self, name: str, version: str) -> str:
        if (name, version) not in self._versions:
            await asyncio.to_thread(self._version_sync, name, version)
            self._versions.add((name, version))
        return version

    async def alias(self, name: str, alias: str) -> str:
        hit = self._aliases.get((name, alias))
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.cache_seconds:
            return hit[1]
        version = await asyncio.to_thread(self._alias_sync, name, alias)
        self._aliases[(name, alias)] = (now, version)
        self._versions.add((name, version))
        return version

    async def refresh(self, name: str, alias: str) -> str:
        """The alias's version now (the cache entry is replaced): the alias poll's one call per model/alias."""
        self._aliases.pop((name, alias), None)
        return await self.alias(name, alias)

    async def resolve(self, name: str, *, version: str | None = None, alias: str | None = None) -> str:
        if version is not None:
            return await self.version(name, version)
        assert alias is not None
        return await self.alias(name, alias)
