"""Training end to end: API → Ray task → MLflow (sklearn + ONNX flavours) → registered version → aliases."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.utils.api import wait_job


def test_trigger_returns_202_then_registers_version_with_both_flavours(client, trained, mlflow_uri):
    assert trained["task"] == "classification"
    assert set(trained["metrics"]) == {"accuracy", "precision", "recall", "f1"}
    assert trained["metrics"]["accuracy"] > 0.8
    assert trained["version"] and trained["run_id"]

    mc = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    mv = mc.get_model_version("iris_model", trained["version"])
    assert mv.tags["mlstack.task"] == "classification"
    # the registered version is the ONNX flavour; the sklearn flavour is logged in the same run
    import mlflow

    mlflow.set_tracking_uri(mlflow_uri)
    onnx_model = mlflow.models.get_model_info(f"models:/iris_model/{trained['version']}")
    assert "onnx" in onnx_model.flavors
    sk_model = mlflow.models.get_model_info(mv.tags["mlstack.sklearn_model_uri"])
    assert "sklearn" in sk_model.flavors
    assert sk_model.run_id == trained["run_id"] == onnx_model.run_id
    run = mc.get_run(trained["run_id"])
    assert run.data.params["n_estimators"] == "20"
    assert run.data.metrics["accuracy"] == pytest.approx(trained["metrics"]["accuracy"])

    aliases = client.get("/models/iris_model").json()["aliases"]
    assert int(aliases["candidate"]) >= int(trained["version"])
    assert "champion" in aliases


def test_champion_moves_only_when_the_primary_metric_improves(client, trained, mlflow_uri):
    mc = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    before = mc.get_model_version_by_alias("iris_model", "champion").version
    champ_acc = mc.get_run(mc.get_model_version("iris_model", before).run_id).data.metrics["accuracy"]
    # one tree of depth 1 cannot beat the champion on iris
    r = client.post("/trigger_training", json={"hyperparameters": {"n_estimators": 1, "max_depth": 1}})
    job = wait_job(client, r.json()["job_id"])
    assert job["status"] == "succeeded", job
    assert job["metrics"]["accuracy"] < champ_acc
    assert job["champion"] is False
    assert mc.get_model_version_by_alias("iris_model", "champion").version == before
    assert mc.get_model_version_by_alias("iris_model", "candidate").version == job["version"]


@pytest.mark.parametrize("body, needle", [
    ({"hyperparameters": {"n_estimators": 0}}, "greater than or equal to 1"),
    ({"hyperparameters": {"n_estimators": 2001}}, "less than or equal to 2000"),
    ({"hyperparameters": {"learning_rate": 0.1}}, "Extra inputs are not permitted"),
    ({"hyperparameters": {"max_features": 1.5}}, "fraction"),
    ({"hyperparameters": {}, "colour": "red"}, "Extra inputs"),
    ({"data_uri": "s3://mlops/data/missing.csv"}, "does not exist"),
    ({"data_uri": "ftp://host/x.csv"}, "unsupported data URI scheme"),
    ({"model_name": "../etc"}, "pattern"),
])
def test_bad_requests_are_422_with_a_message(client, body, needle):
    r = client.post("/trigger_training", json=body)
    assert r.status_code == 422, r.text
    assert needle in r.text


def test_logs_of_a_job(client, trained):
    logs = client.get(f"/training/{trained['job_id']}/logs")
    assert logs.status_code == 200
    assert "text/plain" in logs.headers["content-type"]
    assert f"registered iris_model version {trained['version']}" in logs.text
    assert "accuracy=" in logs.text
    assert client.get("/training/doesnotexist/logs").status_code == 404


def test_unknown_job_is_404(client):
    r = client.get("/training/doesnotexist")
    assert r.status_code == 404
    assert "no training job" in r.json()["detail"]


def test_failed_job_reports_its_error(client, s3_endpoint):
    import boto3

    from tests.utils.stack import S3_KEY, S3_SECRET

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET,
                      region_name="us-east-1")
    s3.put_object(Bucket="mlops", Key="data/notarget.csv", Body=b"a,b\n1,2\n3,4\n")
    r = client.post("/trigger_training", json={"data_uri": "s3://mlops/data/notarget.csv"})
    assert r.status_code == 202
    job = wait_job(client, r.json()["job_id"])
    assert job["status"] == "failed"
    assert "no target column 'target'" in job["error"]
    assert "training failed" in client.get(f"/training/{job['job_id']}/logs").text


def test_upload_csv_regression_with_timestamp_column(client):
    rng = np.random.default_rng(0)
    n = 200
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    df = pd.DataFrame({"timestamp": pd.date_range("2026-01-01", periods=n, freq="h").astype(str),
                       "x1": x1, "x2": x2, "target": 3 * x1 - 2 * x2 + rng.normal(scale=0.1, size=n)})
    buf = io.BytesIO(df.to_csv(index=False).encode())
    r = client.post("/train", files={"file": ("series.csv", buf, "text/csv")},
                    data={"hyperparameters": json.dumps({"n_estimators": 30}), "target": "target",
                          "model_name": "series_model"})
    assert r.status_code == 202, r.text
    assert r.json()["data_uri"].startswith("s3://mlops/uploads/")
    job = wait_job(client, r.json()["job_id"])
    assert job["status"] == "succeeded", job
    assert job["task"] == "regression" and job["model_name"] == "series_model"
    assert set(job["metrics"]) == {"r2", "rmse"}
    assert job["metrics"]["r2"] > 0.8


@pytest.mark.parametrize("files, data, needle", [
    ({"file": ("x.csv", b"a,b\n1,2\n", "text/csv")}, {}, "no target column"),
    ({"file": ("x.csv", b"\x00\x01garbage", "text/csv")}, {}, "target"),
    ({"file": ("x.csv", b"a,target\n1,2\n", "text/csv")}, {}, "at least 10 rows"),
    ({"file": ("x.csv", b"a,target\n1,2\n", "text/csv")}, {"hyperparameters": "{bad json"}, "hyperparameters"),
    ({"file": ("x.csv", b"a,target\n1,2\n", "text/csv")}, {"hyperparameters": '{"n_estimators": -1}'},
     "greater than or equal"),
])
def test_upload_rejects_bad_csv_and_hyperparameters(client, files, data, needle):
    r = client.post("/train", files=files, data=data)
    assert r.status_code == 422, r.text
    assert needle in r.text


def test_jobs_are_listed_newest_first(client, trained):
    jobs = client.get("/training", params={"limit": 100}).json()
    assert any(j["job_id"] == trained["job_id"] for j in jobs)
    created = [j["created_at"] for j in jobs]
    assert created == sorted(created, reverse=True)
