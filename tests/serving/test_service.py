"""``ModelService`` in-process (no HTTP): a regressor's outputs, and loading predictors directly."""

from __future__ import annotations

import asyncio

import numpy as np
import orjson
import pytest

from mlstack.serving.predictor import OnnxPredictor, PyfuncPredictor, load_predictor
from mlstack.serving.resolve import parse_model_uri
from mlstack.serving.service import ModelService


@pytest.fixture(scope="module")
def regressor_dir(iris, workdir):
    import mlflow.onnx
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import RandomForestRegressor

    reg = RandomForestRegressor(n_estimators=5, max_depth=3, random_state=0).fit(iris.x[:, 1:], iris.x[:, 0])
    onx = to_onnx(reg, initial_types=[("X", FloatTensorType([None, 3]))])
    path = workdir / "serving-models" / "sepal_regressor"
    mlflow.onnx.save_model(onx, str(path))
    return path, reg


def test_regressor_predict_and_v2(regressor_dir, iris):
    path, reg = regressor_dir
    service = ModelService(parse_model_uri(str(path)))
    service.set_predictor(load_predictor(path))
    rows = iris.x[:4, 1:]

    async def calls():
        p = await service.handle("POST", "/predict", orjson.dumps({"instances": rows.tolist()}))
        tensor = {"name": "X", "shape": [4, 3], "datatype": "FP32", "data": rows.ravel().tolist()}
        body = orjson.dumps({"inputs": [tensor]})
        v = await service.handle("POST", "/v2/models/sepal_regressor/infer", body)
        return p, v

    p, v = asyncio.run(calls())
    assert p.status == 200 and v.status == 200
    pred = orjson.loads(p.body)
    assert set(pred) == {"predictions"}  # no probabilities for a regressor
    np.testing.assert_allclose(pred["predictions"], reg.predict(rows), rtol=1e-5)
    (out,) = orjson.loads(v.body)["outputs"]
    assert out["name"] == "variable" and out["shape"] == [4, 1]


def test_load_predictor_picks_the_flavour(onnx_model_dir, sklearn_model_dir, tmp_path):
    assert isinstance(load_predictor(onnx_model_dir), OnnxPredictor)
    assert isinstance(load_predictor(sklearn_model_dir), PyfuncPredictor)
    with pytest.raises(FileNotFoundError, match="no MLmodel"):
        load_predictor(tmp_path)
