"""Training jobs: accepted at once (202), run as Ray tasks, tracked in Redis so any API replica can answer.

A job's record lives under ``mlstack:training:job:<id>`` (JSON) and in the sorted set
``mlstack:training:jobs`` (by creation time). Local Ray is started on the first job, not at import.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from mlstack.alerts import AlertSink
from mlstack.errors import InvalidInput, NotFound, Unavailable
from mlstack.registry import Registry
from mlstack.settings import Settings
from mlstack.training.data import ObjectStore, check_exists
from mlstack.training.schemas import TrainingJob, TrainingRequest
from mlstack.training.train import TrainConfig, run_job

log = logging.getLogger(__name__)
JOB_KEY = "mlstack:training:job:{}"
JOBS_INDEX = "mlstack:training:jobs"
LOGS_KEY = "mlstack:training:logs:{}"
JOB_TTL_SECONDS = 30 * 24 * 3600
MAX_LOG_CHARS = 256 * 1024


def _now() -> str:
    return datetime.now(UTC).isoformat()


class JobManager:
    def __init__(self, settings: Settings, redis, registry: Registry, alerts: AlertSink):
        self.settings = settings
        self.redis = redis
        self.registry = registry
        self.alerts = alerts
        self.store = ObjectStore.from_settings(settings)
        self.ray_ready = False
        self.ray_error: str | None = None
        self._ray_lock = asyncio.Lock()
        self._tasks: dict[str, asyncio.Task] = {}

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        if self.settings.ray_address:  # a Ray cluster is cheap to connect to: do it now
            await self.ensure_ray()

    async def stop(self) -> None:
        for job_id, task in list(self._tasks.items()):
            task.cancel()
            await self._update(job_id, status="failed", finished_at=_now(),
                               error="the API stopped before the job finished")
        if self.ray_ready:
            import ray

            await asyncio.to_thread(ray.shutdown)
            self.ray_ready = False

    async def ensure_ray(self) -> None:
        async with self._ray_lock:
            if self.ray_ready:
                return
            try:
                await asyncio.to_thread(self._init_ray)
            except Exception as e:
                self.ray_error = f"Ray unavailable: {e}"
                raise Unavailable(self.ray_error) from None
            self.ray_ready, self.ray_error = True, None

    def _init_ray(self) -> None:
        import ray

        s = self.settings
        if s.ray_address:
            ray.init(address=s.ray_address, ignore_reinit_error=True, log_to_driver=False)
            return
        s.ray_temp_dir.mkdir(parents=True, exist_ok=True)
        ray.init(num_cpus=s.ray_num_cpus, object_store_memory=s.ray_object_store_mb * 1024 * 1024,
                 include_dashboard=False, _temp_dir=str(s.ray_temp_dir.resolve()), ignore_reinit_error=True,
                 log_to_driver=False)

    # -- records -----------------------------------------------------------------------------------
    async def _save(self, job: TrainingJob) -> None:
        await self.redis.set(JOB_KEY.format(job.job_id), job.model_dump_json(), ex=JOB_TTL_SECONDS)

    async def _update(self, job_id: str, **changes: Any) -> TrainingJob:
        job = await self.get(job_id)
        job = job.model_copy(update=changes)
        await self._save(job)
        return job

    async def _save_logs(self, job_id: str, logs: str) -> None:
        if len(logs) > MAX_LOG_CHARS:
            logs = f"[... {len(logs) - MAX_LOG_CHARS} characters cut ...]\n" + logs[-MAX_LOG_CHARS:]
        await self.redis.set(LOGS_KEY.format(job_id), logs, ex=JOB_TTL_SECONDS)

    async def logs(self, job_id: str) -> str:
        job = await self.get(job_id)  # 404 for unknown jobs
        logs = await self.redis.get(LOGS_KEY.format(job_id))
        if logs is None:
            return f"job {job_id} is {job.status}: its log is stored when it finishes\n"
        return logs

    async def get(self, job_id: str) -> TrainingJob:
        raw = await self.redis.get(JOB_KEY.format(job_id))
        if raw is None:
            raise NotFound(f"no training job {job_id!r}")
        return TrainingJob.model_validate_json(raw)

    async def list(self, limit: int = 50) -> list[TrainingJob]:
        ids = await self.redis.zrevrange(JOBS_INDEX, 0, limit - 1)
        raws = await self.redis.mget([JOB_KEY.format(i) for i in ids]) if ids else []
        return [TrainingJob.model_validate_json(r) for r in raws if r]

    async def store_upload(self, uri: str, data: bytes) -> None:
        await asyncio.to_thread(self.store.write, uri, data)

    # -- submit / run ------------------------------------------------------------------------------
    async def submit(self, req: TrainingRequest) -> TrainingJob:
        s = self.settings
        data_uri = req.data_uri or s.data_uri
        try:
            await asyncio.to_thread(check_exists, data_uri, self.store)
        except NotFound as e:
            raise InvalidInput(f"data_uri: {e.message}") from None
        job = TrainingJob(
            job_id=uuid.uuid4().hex[:12], status="queued", created_at=_now(),
            hyperparameters=req.hyperparameters.model_dump(), data_uri=data_uri,
            target=req.target or s.data_target, model_name=req.model_name or s.model_name,
        )
        await self._save(job)
        await self.redis.zadd(JOBS_INDEX, {job.job_id: datetime.now(UTC).timestamp()})
        self._tasks[job.job_id] = asyncio.create_task(self._run(job), name=f"train-{job.job_id}")
        return job

    async def _run(self, job: TrainingJob) -> None:
        s = self.settings
        cfg = TrainConfig(tracking_uri=s.mlflow_tracking_uri, experiment=s.mlflow_experiment,
                          model_name=job.model_name, data_uri=job.data_uri, target=job.target,
                          hyperparameters=job.hyperparameters, store=self.store, job_id=job.job_id)
        try:
            await self.ensure_ray()
            import ray

            remote = ray.remote(num_cpus=s.train_num_cpus, max_retries=0)(run_job)
            ref = remote.remote(cfg)
            await self._update(job.job_id, status="running", started_at=_now())
            out = await ref
        except asyncio.CancelledError:
            raise
        except Exception as e:  # Ray itself failed (worker died, cluster unreachable)
            await self._failed(job, e)
        else:
            await self._save_logs(job.job_id, out["logs"])
            if out["ok"]:
                await self._succeeded(job, out["result"])
            else:
                await self._failed(job, RuntimeError(out["error"]))
        finally:
            self._tasks.pop(job.job_id, None)

    async def _alert(self, *args, **fields) -> None:
        """Alerts must never break the job's bookkeeping (the job record is already written)."""
        try:
            await self.alerts.emit(*args, **fields)
        except Exception:
            log.exception("could not emit alert %s", args[0])

    async def _failed(self, job: TrainingJob, exc: BaseException) -> None:
        cause = getattr(exc, "cause", None) or exc  # unwrap ray.exceptions.RayTaskError
        message = getattr(cause, "message", None) or f"{type(cause).__name__}: {cause}"
        log.warning("training job %s failed: %s", job.job_id, message)
        await self._update(job.job_id, status="failed", finished_at=_now(), error=str(message)[:2000])
        await self._alert("training.failed", "error", f"Training job {job.job_id} failed", str(message)[:500],
                          model=job.model_name, data={"job_id": job.job_id})

    async def _succeeded(self, job: TrainingJob, r: dict) -> None:
        self.registry.forget(job.model_name)
        await self._update(job.job_id, status="succeeded", finished_at=_now(), task=r["task"], run_id=r["run_id"],
                           version=r["version"], metrics=r["metrics"], champion=r["champion"])
        primary = r["primary_metric"]
        value = r["metrics"][primary]
        verdict = "now champion" if r["champion"] else f"champion stays v{r['previous_champion']}"
        await self._alert(
            "training.finished", "info", f"{job.model_name} v{r['version']} trained",
            f"{primary}={value:.4f}; {verdict}", model=job.model_name, version=r["version"],
            data={"job_id": job.job_id, "run_id": r["run_id"], "metrics": r["metrics"], "champion": r["champion"]},
        )
        threshold = self.settings.alert_accuracy_threshold
        if r["task"] == "classification" and value >= threshold:
            await self._alert(
                "model.accuracy", "info", f"{job.model_name} v{r['version']} accuracy {value:.1%}",
                f"accuracy {value:.4f} is at or above the threshold {threshold:.2f}",
                model=job.model_name, version=r["version"], data={"accuracy": value, "job_id": job.job_id},
            )
