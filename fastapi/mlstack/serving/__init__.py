"""The lean model server: one ``Predictor`` (onnxruntime, pyfunc fallback) behind Open Inference Protocol v2.

- ``predictor``: load an MLflow model directory, predict on a float32 2-D array.
- ``resolve``: turn ``models:/…``, ``runs:/…`` or a local directory into a local model directory.
- ``v2``: the v2 JSON / binary-tensor codec (pure).
- ``batching``: dynamic batching of concurrent requests into one predictor call.
- ``service``: transport-agnostic request handling (used by the ASGI app and by Ray Serve).
- ``app`` / ``server``: the raw ASGI app and ``mlstack serve``.
- ``rayserve``: the same predictor as a Ray Serve application.
- ``client``: the lean keep-alive client the API's ``/inference`` calls local model servers with.
"""
