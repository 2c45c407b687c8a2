"""The MLflow model registry as the API sees it: resolve versions, list models, metrics, aliases.

Sync methods (MLflow's client is sync); async routes call them through ``asyncio.to_thread`` except
``resolve`` whose answers are cached so the inference hot path rarely leaves the event loop.

MLflow unreachable: ``resolve`` answers the last version it resolved for that alias or pinned version, marked
stale (``stale()``), so serving a model that was already resolved never needs the registry. (Other methods let
``MlflowException`` through; the API maps it once, to a 503 when MLflow cannot answer.)
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlstack.errors import InvalidInput, NotFound, Unavailable
from mlstack.settings import Settings

log = logging.getLogger(__name__)
DOWN_SECONDS = 5.0  # how long resolve serves last known versions without asking MLflow again after it failed
PRIMARY_METRIC = {"classification": "accuracy", "regression": "r2"}
CHAMPION = "champion"
CANDIDATE = "candidate"


def _iso(ms: int | None) -> str | None:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat() if ms else None


def _ref(version: str | None, alias: str) -> str:
    return f"v:{version}" if version else f"@{alias}"


def _not_found(e: MlflowException) -> bool:
    return e.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(e).lower()


class Registry:
    def __init__(self, client: MlflowClient, experiment: str, cache_seconds: float = 5.0):
        self.client = client
        self.experiment = experiment
        self.cache_seconds = cache_seconds
        self._cache: dict[tuple[str, str], tuple[float, str]] = {}
        self._known: dict[tuple[str, str], str] = {}  # last resolved answer, kept for when MLflow is down
        self._stale: set[tuple[str, str]] = set()  # cached answers that come from _known, not from MLflow
        self._down_until = 0.0  # after MLflow failed to answer, resolve does not wait for it again until then

    @classmethod
    def from_settings(cls, s: Settings) -> Registry:
        return cls(MlflowClient(tracking_uri=s.mlflow_tracking_uri, registry_uri=s.mlflow_tracking_uri),
                   s.mlflow_experiment, s.registry_cache_seconds)

    def ping(self) -> None:
        self.client.search_registered_models(max_results=1)

    # -- resolution --------------------------------------------------------------------------------
    def cached(self, name: str, version: str | None = None, alias: str = CHAMPION) -> str | None:
        """What ``resolve`` answered within the last ``cache_seconds``, without I/O (None: not cached)."""
        hit = self._cache.get((name, _ref(version, alias)))
        if hit and hit[0] > time.monotonic():
            return hit[1]
        return None

    def stale(self, name: str, version: str | None = None, alias: str = CHAMPION) -> bool:
        """Whether ``resolve``'s answer is the last known one because MLflow could not be asked."""
        return (name, _ref(version, alias)) in self._stale

    def resolve(self, name: str, version: str | None = None, alias: str = CHAMPION) -> str:
        """The version a request means: ``version`` if it exists, else the version ``alias`` points at.

        MLflow down: the last known answer, marked stale and kept for ``cache_seconds`` before MLflow is
        asked again; Unavailable when there is none."""
        if (hit := self.cached(name, version, alias)) is not None:
            return hit
        key = (name, _ref(version, alias))
        known = self._known.get(key)
        if known is None or time.monotonic() >= self._down_until:
            try:
                return self._resolve(name, version, alias)
            except Unavailable:
                # only a real failed attempt opens the window; answers served inside it never extend it,
                # or steady traffic would keep MLflow from being asked again after it is back
                self._down_until = time.monotonic() + max(self.cache_seconds, DOWN_SECONDS)
                if known is None:
                    raise
        log.warning("MLflow unreachable: serving %s %s as v%s (last known, stale)", name, key[1], known)
        self._cache[key] = (time.monotonic() + self.cache_seconds, known)
        self._stale.add(key)
        return known

    def _resolve(self, name: str, version: str | None, alias: str) -> str:
        try:
            if version:
                if not version.isdigit():
                    raise InvalidInput(f"model_version must be a version number, got {version!r}")
                mv = self.client.get_model_version(name, version)
            else:
                mv = self.client.get_model_version_by_alias(name, alias)
        except MlflowException as e:
            if _not_found(e):
                what = f"version {version}" if version else f"alias @{alias}"
                raise NotFound(f"model {name!r} has no {what}") from None
            raise Unavailable(f"MLflow registry error: {e.message}") from None
        except OSError as e:
            raise Unavailable(f"MLflow registry unreachable: {e}") from None
        key = (name, _ref(version, alias))
        self._cache[key] = (time.monotonic() + self.cache_seconds, mv.version)
        self._known[key] = mv.version
        self._stale.discard(key)
        return mv.version

    def forget(self, name: str) -> None:
        for key in [k for k in self._cache if k[0] == name]:
            self._cache.pop(key, None)

    # -- models ------------------------------------------------------------------------------------
    def _run_metrics(self, run_id: str | None) -> dict[str, float]:
        if not run_id:
            return {}
        try:
            return dict(self.client.get_run(run_id).data.metrics)
        except MlflowException:
            return {}

    def version_dict(self, mv, with_metrics: bool = True) -> dict[str, Any]:
        return {
            "version": mv.version,
            "created_at": _iso(mv.creation_timestamp),
            "run_id": mv.run_id,
            "status": mv.status,
            "description": mv.description or "",
            "tags": dict(mv.tags or {}),
            "aliases": list(mv.aliases or []),
            "metrics": self._run_metrics(mv.run_id) if with_metrics else {},
        }

    def _model_dict(self, rm) -> dict[str, Any]:
        versions = self.client.search_model_versions(f"name = '{rm.name}'", order_by=["version_number DESC"])
        by_version: dict[str, list[str]] = {}
        for alias, version in (rm.aliases or {}).items():  # search results carry no aliases
            by_version.setdefault(str(version), []).append(alias)
        return {
            "name": rm.name,
            "description": rm.description or "",
            "tags": dict(rm.tags or {}),
            "aliases": dict(rm.aliases or {}),
            "created_at": _iso(rm.creation_timestamp),
            "versions": [{**self.version_dict(v), "aliases": by_version.get(v.version, [])} for v in versions],
        }

    def list_models(self) -> list[dict[str, Any]]:
        return [self._model_dict(rm) for rm in self.client.search_registered_models(max_results=1000)]

    def get_model(self, name: str) -> dict[str, Any]:
        try:
            rm = self.client.get_registered_model(name)
        except MlflowException as e:
            if _not_found(e):
                raise NotFound(f"model {name!r} is not registered") from None
            raise
        return self._model_dict(rm)

    def latest_version(self, name: str) -> dict[str, Any] | None:
        """Newest version of ``name`` with its creation time (epoch seconds), or None."""
        versions = self.client.search_model_versions(f"name = '{name}'", order_by=["version_number DESC"],
                                                     max_results=1)
        if not versions:
            return None
        mv = versions[0]
        return {**self.version_dict(mv, with_metrics=False), "created_at": mv.creation_timestamp / 1000}

    def set_alias(self, name: str, alias: str, version: str) -> dict[str, Any]:
        self.resolve(name, version=version)  # 404 for unknown model/version
        self.client.set_registered_model_alias(name, alias, version)
        self.forget(name)
        return self.get_model(name)

    def delete_alias(self, name: str, alias: str) -> None:
        model = self.get_model(name)
        if alias not in model["aliases"]:
            raise NotFound(f"model {name!r} has no alias {alias!r}")
        self.client.delete_registered_model_alias(name, alias)
        self.forget(name)

    def update_model(self, name: str, description: str | None, tags: dict[str, str] | None) -> dict[str, Any]:
        self.get_model(name)
        if description is not None:
            self.client.update_registered_model(name, description=description)
        for k, v in (tags or {}).items():
            self.client.set_registered_model_tag(name, k, v)
        return self.get_model(name)

    def update_version(self, name: str, version: str, description: str | None,
                       tags: dict[str, str] | None) -> dict[str, Any]:
        self.resolve(name, version=version)
        if description is not None:
            self.client.update_model_version(name, version, description=description)
        for k, v in (tags or {}).items():
            self.client.set_model_version_tag(name, version, k, v)
        return self.version_dict(self.client.get_model_version(name, version))

    # -- metrics -----------------------------------------------------------------------------------
    def metrics_summary(self, name: str, days: int = 7) -> dict[str, Any]:
        """The latest version's metrics, averages over the runs of the past ``days``, and per-version history."""
        versions = self.client.search_model_versions(f"name = '{name}'", order_by=["version_number DESC"])
        history = []
        for mv in reversed(versions):
            history.append({"version": mv.version, "run_id": mv.run_id, "created_at": _iso(mv.creation_timestamp),
                            "metrics": self._run_metrics(mv.run_id), "tags": dict(mv.tags or {})})
        task = history[-1]["tags"].get("mlstack.task", "classification") if history else "classification"
        latest = history[-1] if history else None
        since = datetime.now(UTC) - timedelta(days=days)
        exp = self.client.get_experiment_by_name(self.experiment)
        runs = []
        if exp is not None:
            runs = self.client.search_runs(
                [exp.experiment_id],
                filter_string="attributes.status = 'FINISHED' and "
                              f"attributes.start_time >= {int(since.timestamp() * 1000)}",
                max_results=5000,
            )
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for r in runs:
            for k, v in r.data.metrics.items():
                sums[k] = sums.get(k, 0.0) + v
                counts[k] = counts.get(k, 0) + 1
        return {
            "model_name": name,
            "primary_metric": PRIMARY_METRIC.get(task, "accuracy"),
            "latest": latest,
            "last_7_days": {"since": since.isoformat(), "runs": len(runs),
                            "averages": {k: sums[k] / counts[k] for k in sorted(sums)}},
            "history": history,
        }
