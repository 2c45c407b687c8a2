"""MLServer custom inference runtime (``mlserver.MLModel``) running the shared ONNX graph (bench/peers.py).

model-settings.json: ``"implementation": "mlserver_runtime.OnnxIrisRuntime"``, ``parameters.uri``: the .onnx file.
"""

from __future__ import annotations

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from onnx_model import OnnxIris


class OnnxIrisRuntime(MLModel):
    async def load(self) -> bool:
        self._model = OnnxIris(self.settings.parameters.uri)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).reshape(-1, 4)
        label, proba = self._model.predict(x)
        return InferenceResponse(model_name=self.name, outputs=[
            NumpyCodec.encode_output("label", label), NumpyCodec.encode_output("probabilities", proba)])
