"""Registry views: ``/models``, aliases, edits, and ``/get_metrics`` (latest + 7-day averages)."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient


def test_get_metrics_latest_and_seven_day_averages(client, trained, mlflow_uri):
    body = client.get("/get_metrics").json()
    assert body["model_name"] == "iris_model"
    assert body["primary_metric"] == "accuracy"
    mc = MlflowClient(tracking_uri=mlflow_uri)
    latest = mc.search_model_versions("name = 'iris_model'", order_by=["version_number DESC"])[0]
    assert body["latest"]["version"] == latest.version
    exp = mc.get_experiment_by_name("api-tests")
    runs = mc.search_runs([exp.experiment_id], filter_string="attributes.status = 'FINISHED'")
    accs = [r.data.metrics["accuracy"] for r in runs if "accuracy" in r.data.metrics]
    assert body["last_7_days"]["runs"] == len(runs)
    assert body["last_7_days"]["averages"]["accuracy"] == pytest.approx(sum(accs) / len(accs))
    versions = [h["version"] for h in body["history"]]
    assert versions == sorted(versions, key=int)
    assert trained["version"] in versions


def test_models_list_and_aliases(client, trained):
    models = client.get("/models").json()
    iris = next(m for m in models if m["name"] == "iris_model")
    assert "champion" in iris["aliases"]
    champion = next(v for v in iris["versions"] if v["version"] == iris["aliases"]["champion"])
    assert "champion" in champion["aliases"]
    v = next(v for v in iris["versions"] if v["version"] == trained["version"])
    assert v["metrics"]["accuracy"] == pytest.approx(trained["metrics"]["accuracy"])

    r = client.put("/models/iris_model/aliases/staging", json={"version": trained["version"]})
    assert r.status_code == 200, r.text
    assert r.json()["aliases"]["staging"] == trained["version"]
    assert client.delete("/models/iris_model/aliases/staging").status_code == 204
    assert client.delete("/models/iris_model/aliases/staging").status_code == 404
    assert client.put("/models/iris_model/aliases/staging", json={"version": "9999"}).status_code == 404
    assert client.put("/models/nosuchmodel/aliases/x", json={"version": "1"}).status_code == 404
    assert client.get("/models/nosuchmodel").status_code == 404


def test_edit_description_and_tags(client, trained):
    r = client.patch("/models/iris_model", json={"description": "iris RF", "tags": {"team": "ml"}})
    assert r.status_code == 200, r.text
    assert r.json()["description"] == "iris RF" and r.json()["tags"]["team"] == "ml"
    r = client.patch(f"/models/iris_model/versions/{trained['version']}", json={"description": "first"})
    assert r.status_code == 200 and r.json()["description"] == "first"
    assert client.patch("/models/iris_model", json={"owner": "x"}).status_code == 422


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"]["redis"] == "ok" and r.json()["checks"]["mlflow"] == "ok"
    assert "mlstack_inference_seconds" in client.get("/metrics").text
