"""The monitor end to end, local mode: a real ``mlstack api`` (Redis, MLflow, moto S3) serving real ``mlstack serve``
deployments of an ONNX iris model whose run carries its reference profile.

Shifted traffic -> a ``deployment.drift`` alert naming the shifted feature (once), then its recovery; wrong labels
-> a ``deployment.slo`` accuracy breach and ``SLOMet`` False, right labels -> recovery and True; a server slower
than ``maxP99LatencyMs`` -> a latency breach; payload history lands in S3 as Parquet.
"""

from __future__ import annotations

import io
import uuid

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.utils.deployments import FEATURES, Api, wait_phase
from tests.utils.procs import wait_until
from tests.utils.stack import IRIS_CSV

NS = "models"
SHIFTED = "petal_length"


@pytest.fixture(scope="module")
def model(mlflow_uri):
    """An ONNX iris classifier registered with its training profile (as training logs it)."""
    import mlflow
    import mlflow.onnx
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import RandomForestClassifier

    from mlstack.monitoring.profile import log_reference_profile
    from tests.utils.deployments import Model

    df = pd.read_csv(IRIS_CSV)
    x, y = df[FEATURES].to_numpy(np.float32), df["target"].to_numpy()
    clf = RandomForestClassifier(n_estimators=5, max_depth=3, random_state=0).fit(x, y)
    proto = to_onnx(clf, initial_types=[("X", FloatTensorType([None, 4]))], options={id(clf): {"zipmap": False}})
    name = f"mon_iris_{uuid.uuid4().hex[:6]}"
    mlflow.set_tracking_uri(mlflow_uri)
    mlflow.set_experiment("monitoring-tests")
    with mlflow.start_run():
        log_reference_profile(clf, x, FEATURES, "classification")
        info = mlflow.onnx.log_model(proto, name="model", registered_model_name=name)
    return Model(name, str(info.registered_model_version))


@pytest.fixture(scope="module")
def api(api_factory, workdir) -> Api:
    return api_factory("monitoring", {
        "MLSTACK_STATE_DIR": str(workdir / "monitoring-state"),
        "MLSTACK_SERVE_PORT_RANGE": "[25000, 25499]",
        "MLSTACK_DEPLOYMENTS_REDIS_KEY": f"mlstack:deployments:mon:{uuid.uuid4().hex[:6]}",
        "MLSTACK_MONITOR_KEY_PREFIX": f"mlstack:monitoring:{uuid.uuid4().hex[:6]}",
        "MLSTACK_MONITOR_DRAIN_SECONDS": "0.3", "MLSTACK_MONITOR_EVALUATE_SECONDS": "0.5",
        "MLSTACK_MONITOR_HISTORY_SECONDS": "1", "MLSTACK_MONITOR_HISTORY_URI": f"s3://mlops/mon-{uuid.uuid4().hex[:6]}",
        "MLSTACK_SERVE_BATCH_WINDOW_MS": "4",  # every request waits 4 ms for a batch: a slow model, on purpose
    })


@pytest.fixture(scope="module")
def client(api):
    with api.client() as c:
        yield c


def deploy(client: httpx.Client, model, name: str, **spec) -> str:
    r = client.post("/deployments", json={"name": name, "namespace": NS, "spec": {
        "model": {"name": model.name, "version": model.version}, **spec}})
    assert r.status_code == 201, r.text
    wait_phase(client, name, {"Ready"}, NS)
    return f"{NS}/{name}"


def iris_rows(n: int, seed: int, shift: float = 0.0) -> tuple[list[list[float]], list[int]]:
    df = pd.read_csv(IRIS_CSV).sample(n, replace=True, random_state=seed)
    x = df[FEATURES].to_numpy(float)
    x[:, FEATURES.index(SHIFTED)] += shift
    return x.round(3).tolist(), df["target"].astype(int).tolist()


def infer(client: httpx.Client, deployment: str, rows: list[list[float]]) -> dict:
    r = client.post("/inference", json={"deployment": deployment, "input_data": rows})
    assert r.status_code == 200, r.text
    return r.json()


def alerts(client: httpx.Client, type_: str, deployment: str) -> list[dict]:
    r = client.get("/alerts", params={"limit": 1000})
    assert r.status_code == 200, r.text
    return [a for a in r.json() if a["type"] == type_ and a["deployment"] == deployment]


def test_shifted_inputs_raise_one_drift_alert_naming_the_feature_then_recover(client, model):
    dep = deploy(client, model, "drifty", monitoring={"sampleRate": 1, "windowSeconds": 10, "minRows": 100})
    name = dep.split("/")[1]
    for i in range(8):  # 160 rows like the training data
        infer(client, dep, iris_rows(20, i)[0])

    def judged():
        q = client.get(f"/deployments/{name}/quality", params={"namespace": NS}).json()
        d = q["drift"].get(model.version)
        return q if d and d["judged"] and d["rows"] >= 100 else None

    q = wait_until(judged, 30, interval=0.3, what="a judged drift window")
    assert q["drift"][model.version]["drifted"] == [], q["drift"]
    assert q["payloads"]["records"] >= 8 and q["payloads"]["missed"] == 0
    assert not alerts(client, "deployment.drift", name)

    for i in range(12):  # 240 rows with petal_length 2.5 cm longer: most leave the reference's bins
        infer(client, dep, iris_rows(20, 100 + i, shift=2.5)[0])
    found = wait_until(lambda: alerts(client, "deployment.drift", name), 30, interval=0.3, what="a drift alert")
    (alert,) = found
    assert alert["severity"] == "warning" and alert["version"] == model.version
    assert alert["data"]["state"] == "drifting"
    named = {f["name"]: f["psi"] for f in alert["data"]["features"]}
    assert SHIFTED in named and named[SHIFTED] > 0.2, alert
    assert not {"sepal_length", "sepal_width"} & set(named), alert  # untouched features are not blamed
    assert SHIFTED in alert["title"]

    # still shifted: the same episode, no second alert; then normal traffic once the window slid past it
    infer(client, dep, iris_rows(20, 999, shift=2.5)[0])

    def recovered():
        infer(client, dep, iris_rows(40, np.random.randint(1 << 30))[0])
        return [a for a in alerts(client, "deployment.drift", name) if a["data"]["state"] == "recovered"]

    wait_until(recovered, 60, interval=1.0, what="the drift recovery")
    states = [a["data"]["state"] for a in alerts(client, "deployment.drift", name)]
    assert states == ["drifting", "recovered"], states


def test_wrong_labels_breach_min_accuracy_and_right_ones_recover(client, model):
    dep = deploy(client, model, "labelled", monitoring={"sampleRate": 1, "windowSeconds": 300},
                 alerts={"minAccuracy": 0.8})
    name = dep.split("/")[1]

    # by request id: the API's answer names it; a sampled request joins, an unknown id is 404 (single) or counted
    rows, labels = iris_rows(3, 5)
    out = infer(client, dep, rows)
    assert out["request_id"]
    rid = out["request_id"]
    r = wait_until(lambda: (lambda r: r if r.status_code == 200 else None)(
        client.post("/feedback", json={"request_id": rid, "label": labels})), 20, interval=0.3, what="a joined id")
    assert r.json()["matched"] == 1 and r.json()["labelled"] == 3, r.text
    assert client.post("/feedback", json={"request_id": "never-seen", "label": 1}).status_code == 404
    r = client.post("/feedback", json={"items": [{"request_id": rid, "label": labels},
                                                 {"request_id": "never-seen", "label": 1}]})
    assert r.status_code == 200 and r.json()["matched"] == 1 and r.json()["unmatched"] == 1, r.text
    assert r.json()["unmatched_ids"] == ["never-seen"]
    assert client.post("/feedback", json={"request_id": rid, "label": [1]}).status_code == 422  # 3 rows, 1 label
    assert client.post("/feedback", json={"deployment": dep, "rows": rows, "labels": [1]}).status_code == 422

    # rows scored through the deployment with wrong labels: accuracy 0 -> breach
    rows, labels = iris_rows(40, 6)
    r = client.post("/feedback", json={"deployment": dep, "rows": rows, "labels": [(y + 1) % 3 for y in labels]})
    assert r.status_code == 200 and r.json()["labelled"] == 40, r.text
    (breach,) = wait_until(lambda: alerts(client, "deployment.slo", name), 20, interval=0.3, what="an SLO breach")
    assert breach["data"]["objective"] == "minAccuracy" and breach["data"]["state"] == "breached"
    assert breach["data"]["value"] < 0.8 and breach["severity"] == "warning"

    def slo_met():
        obj = client.get(f"/deployments/{name}", params={"namespace": NS}).json()
        return next((c for c in obj["status"]["conditions"] if c["type"] == "SLOMet"), None)

    cond = wait_until(slo_met, 10, interval=0.3, what="the SLOMet condition")
    assert cond["status"] == "False" and cond["reason"] == "AccuracyBelowMin", cond

    rows, labels = iris_rows(400, 7)  # the model is right on most of these: accuracy over the window > 0.8
    assert client.post("/feedback", json={"deployment": dep, "rows": rows, "labels": labels}).status_code == 200
    wait_until(lambda: [a for a in alerts(client, "deployment.slo", name) if a["data"]["state"] == "recovered"],
               20, interval=0.3, what="the SLO recovery")
    wait_until(lambda: (slo_met() or {}).get("status") == "True", 10, interval=0.3, what="SLOMet True")
    q = client.get(f"/deployments/{name}/quality", params={"namespace": NS}).json()
    window = q["feedback"][0]
    assert window["seconds"] == 300 and window["versions"][model.version]["n"] == 3 + 3 + 40 + 400
    assert 0.8 < window["total"]["accuracy"] < 1.0
    assert q["condition"]["status"] == "True"


def test_a_slow_server_breaches_max_p99_latency(client, model):
    dep = deploy(client, model, "slowpoke", monitoring={"sampleRate": 1, "windowSeconds": 60},
                 alerts={"maxP99LatencyMs": 2})
    name = dep.split("/")[1]
    for i in range(25):
        infer(client, dep, iris_rows(2, i)[0])
    (breach,) = wait_until(lambda: alerts(client, "deployment.slo", name), 20, interval=0.3, what="a latency breach")
    assert breach["data"]["objective"] == "maxP99LatencyMs" and breach["data"]["value"] > 2
    q = client.get(f"/deployments/{name}/quality", params={"namespace": NS}).json()
    assert q["latency"]["samples"] >= 20 and q["latency"]["p99_ms"] > 2


def test_payload_history_is_written_as_parquet(client, api, model, s3_endpoint):
    import boto3
    import pyarrow.parquet as pq

    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id="test-access-key",
                      aws_secret_access_key="test-secret-key", region_name="us-east-1")
    prefix = api.env["MLSTACK_MONITOR_HISTORY_URI"].split("/", 3)[3] + f"/{NS}/drifty/date="

    def files():
        return [o["Key"] for o in s3.list_objects_v2(Bucket="mlops", Prefix=prefix).get("Contents", [])]

    keys = wait_until(files, 20, interval=0.5, what="Parquet history")
    table = pq.read_table(io.BytesIO(s3.get_object(Bucket="mlops", Key=keys[0])["Body"].read()))
    assert {"id", "ts", "version", "track", "latency_ms", "inputs", "outputs"} <= set(table.column_names)
    assert table.num_rows > 0 and set(table.column("track").to_pylist()) == {"stable"}
