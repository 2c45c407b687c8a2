"""An MLflow outage (issue 13, item 9): a model that was already resolved keeps being served (the last known
version, marked stale), and the registry's read routes answer 503 JSON with a message until MLflow is back."""

from __future__ import annotations

import time

import httpx

from tests.utils.alerts import until
from tests.utils.procs import BIN, Proc, free_port, http_ok, start, start_api

SETOSA = [5.1, 3.5, 1.4, 0.2]
MODEL = "mlflow_outage_model"


class MlflowServer:
    """A real ``mlflow server`` on a fixed port and sqlite file, so that it can be stopped and started again."""

    def __init__(self, root):
        self.root, self.port, self.starts = root, free_port(), 0
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: Proc | None = None
        root.mkdir(parents=True, exist_ok=True)

    def start(self) -> MlflowServer:
        self.starts += 1
        self.proc = start(
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", f"sqlite:///{self.root}/mlflow.db",
             "--artifacts-destination", str(self.root / "artifacts")],
            self.root / f"mlflow-{self.starts}.log", ready=lambda: http_ok(f"{self.url}/health"), timeout=180,
            env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, what="mlflow server",
        )
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None


async def test_resolved_versions_are_served_and_reads_answer_503_while_mlflow_is_down(stack_env, tmp_path):
    mlflow = MlflowServer(tmp_path / "mlflow").start()
    env = {**stack_env, "MLSTACK_MLFLOW_TRACKING_URI": mlflow.url, "MLSTACK_MODEL_NAME": MODEL,
           "MLSTACK_REGISTRY_CACHE_SECONDS": "1", "MLSTACK_STATE_DIR": str(tmp_path / "state"),
           "MLSTACK_SERVE_PORT_RANGE": "[24200, 24299]"}
    proc, base = start_api(tmp_path / "api.log", env)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=60) as c:
            r = await c.post("/trigger_training", json={"hyperparameters": {"n_estimators": 10, "random_state": 1}})
            assert r.status_code == 202, r.text
            job_id = r.json()["job_id"]

            async def finished():
                job = (await c.get(f"/training/{job_id}")).json()
                return job if job["status"] in ("succeeded", "failed") else None

            job = await until(finished, 300, "the training job")
            assert job["status"] == "succeeded", job
            version = job["version"]
            for body in ({"input_data": SETOSA}, {"input_data": SETOSA, "model_version": version}):
                r = await c.post("/inference", json=body)
                assert r.status_code == 200 and r.json()["model_version"] == version, r.text
                assert not r.json().get("version_stale")

            mlflow.stop()
            # the champion and the pinned version are still served: the last known version, marked stale
            for body in ({"input_data": SETOSA}, {"input_data": SETOSA, "model_version": version}):
                t0 = time.monotonic()
                r = await c.post("/inference", json=body)
                assert r.status_code == 200, r.text
                out = r.json()
                assert out["model_version"] == version and out["version_stale"] is True and out["prediction"] == 0
                print(f"inference with MLflow down ({sorted(body)}): {time.monotonic() - t0:.2f}s")
            # once MLflow failed to answer, requests do not wait for it again and again
            t0 = time.monotonic()
            r = await c.post("/inference", json={"input_data": SETOSA})
            assert r.status_code == 200 and r.json()["version_stale"] is True, r.text
            assert time.monotonic() - t0 < 2, f"{time.monotonic() - t0:.2f}s"
            # while the registry is down, its read routes say so (JSON, 503), never a plain-text 500
            for path in ("/models", f"/models/{MODEL}", "/get_metrics"):
                r = await c.get(path)
                assert r.status_code == 503, (path, r.status_code, r.text)
                assert "MLflow" in r.json()["detail"], r.text
            # a version never resolved before cannot be served without the registry: 503 with a message
            r = await c.post("/inference", json={"input_data": SETOSA, "model_version": "99"})
            assert r.status_code == 503 and "MLflow" in r.json()["detail"], r.text

            mlflow.start()
            await until(lambda: _ok(c, "/models"), 60, "GET /models after MLflow is back")

            async def fresh():
                r = await c.post("/inference", json={"input_data": SETOSA})
                return r.status_code == 200 and r.json()["version_stale"] is False

            await until(fresh, 30, "a fresh (not stale) resolution once MLflow is back")
            r = await c.post("/inference", json={"input_data": SETOSA, "model_version": "99"})
            assert r.status_code == 404, r.text
    finally:
        proc.stop(timeout=30)
        mlflow.stop()


async def _ok(c: httpx.AsyncClient, path: str) -> bool:
    return (await c.get(path)).status_code == 200
