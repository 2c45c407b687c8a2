"""PyTriton: Triton Inference Server's C++ HTTP and gRPC front ends, the shared ONNX graph in a ``@batch``
inference callable (bench/peers.py). Dynamic batching on (PyTriton's default ``DynamicBatcher``),
``max_batch_size`` from ``BENCH_MAX_BATCH``.

    python pytriton_server.py HTTP_PORT GRPC_PORT METRICS_PORT
"""

from __future__ import annotations

import os
import sys

import numpy as np
from onnx_model import OnnxIris
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

model = OnnxIris()


@batch
def infer(X: np.ndarray) -> dict[str, np.ndarray]:  # X: the input's name in the request
    label, proba = model.predict(X)
    return {"label": label.reshape(-1, 1), "probabilities": proba}


def main() -> None:
    http, grpc, metrics = (int(a) for a in sys.argv[1:4])
    config = TritonConfig(http_address="127.0.0.1", http_port=http, grpc_address="127.0.0.1", grpc_port=grpc,
                          metrics_port=metrics, log_verbose=0)
    with Triton(config=config, workspace=os.environ.get("BENCH_WORKSPACE")) as triton:
        instances = int(os.environ.get("BENCH_WORKERS", "1"))
        triton.bind(model_name="iris", infer_func=[infer] * instances,
                    inputs=[Tensor(name="X", dtype=np.float32, shape=(4,))],
                    outputs=[Tensor(name="label", dtype=np.int64, shape=(1,)),
                             Tensor(name="probabilities", dtype=np.float32, shape=(3,))],
                    config=ModelConfig(max_batch_size=int(os.environ.get("BENCH_MAX_BATCH", "16")),
                                       batcher=DynamicBatcher()), strict=False)
        triton.serve()


if __name__ == "__main__":
    main()
