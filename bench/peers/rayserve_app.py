"""Ray Serve: one deployment running the shared ONNX graph (bench/peers.py) behind Serve's HTTP proxy,
``POST /predict {"instances": [[...]]}``, requests merged by ``@serve.batch``.

    python rayserve_app.py HTTP_PORT RAY_TEMP_DIR

A local Ray (``num_cpus=2``, a 256 MB object store, its files under RAY_TEMP_DIR); SIGTERM shuts Serve and
Ray down.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

import numpy as np
import ray
from onnx_model import OnnxIris
from ray import serve
from starlette.requests import Request

MAX_BATCH = int(os.environ.get("BENCH_MAX_BATCH", "16"))
WORKERS = int(os.environ.get("BENCH_WORKERS", "1"))


@serve.deployment(num_replicas=WORKERS, ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=2 * MAX_BATCH)
class Iris:
    def __init__(self) -> None:
        self.model = OnnxIris()

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=0.001)
    async def predict(self, rows: list[list[float]]) -> list[dict]:
        label, proba = self.model.predict(np.asarray(rows, dtype=np.float32))
        return [{"predictions": [int(a)], "probabilities": [p]} for a, p in zip(label, proba.tolist(), strict=True)]

    async def __call__(self, request: Request) -> dict:
        body = await request.json()
        return await self.predict(body["instances"][0])


def main() -> None:
    port, temp = int(sys.argv[1]), sys.argv[2]
    ray.init(num_cpus=2, object_store_memory=256 * 1024 * 1024, _temp_dir=temp, include_dashboard=False,
             log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(Iris.bind(), name="iris", route_prefix="/predict")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
