"""KServe's Python ModelServer with a ``kserve.Model`` subclass running the shared ONNX graph (bench/peers.py).

Answers v1 (``POST /v1/models/iris:predict``, ``{"instances": [[...]]}``), v2 REST and v2 gRPC
(``ModelServer`` converts both v2 forms to an ``InferRequest``). ModelServer's own flags (``--http_port``,
``--grpc_port``, ``--workers``, ``--enable_latency_logging``...) are parsed by kserve from ``sys.argv``.
"""

from __future__ import annotations

import argparse
import uuid

import kserve
import numpy as np
from kserve import InferOutput, InferRequest, InferResponse
from onnx_model import OnnxIris


class OnnxIrisModel(kserve.Model):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.load()

    def load(self) -> bool:
        self._model = OnnxIris()
        self.ready = True
        return self.ready

    def predict(self, payload, headers=None, response_headers=None):  # type: ignore[no-untyped-def]
        if isinstance(payload, InferRequest):
            x = payload.inputs[0].as_numpy().reshape(-1, 4)
            label, proba = self._model.predict(x)
            outputs = [InferOutput("label", list(label.shape), "INT64", label),
                       InferOutput("probabilities", list(proba.shape), "FP32", proba)]
            return InferResponse(payload.id or str(uuid.uuid4()), self.name, outputs)
        label, proba = self._model.predict(np.asarray(payload["instances"], dtype=np.float32))
        return {"predictions": label.tolist(), "probabilities": proba.tolist()}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    args, _ = parser.parse_known_args()
    kserve.ModelServer().start([OnnxIrisModel(args.model_name)])
