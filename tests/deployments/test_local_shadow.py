"""Shadow traffic in local mode (issue 15, item 5), through a real ``mlstack api`` (Redis, MLflow) and its real
``mlstack serve`` processes: ``spec.shadow`` mirrors exactly its share of the requests to the shadow version, every
answer the client gets is the live version's, and the monitor's agreement between the two (joined by request id)
shows in ``GET /deployments/{name}/quality`` and equals what the two models really answer on the mirrored rows.
"""

from __future__ import annotations

import contextlib
import uuid

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.utils.deployments import FEATURES
from tests.utils.procs import wait_until
from tests.utils.stack import IRIS_CSV

NS = "models"
N = 500
PERCENT = 20


def register(tracking_uri: str, name: str, depth: int):
    """An iris RandomForest of ``depth`` logged as an ONNX model and registered: (version, ONNX bytes)."""
    import mlflow
    import mlflow.onnx
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import RandomForestClassifier

    df = pd.read_csv(IRIS_CSV)
    x, y = df[FEATURES].to_numpy(np.float32), df["target"].to_numpy()
    clf = RandomForestClassifier(n_estimators=3, max_depth=depth, random_state=depth).fit(x, y)
    proto = to_onnx(clf, initial_types=[("X", FloatTensorType([None, 4]))], options={id(clf): {"zipmap": False}})
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment("shadow-tests")
    with mlflow.start_run():
        info = mlflow.onnx.log_model(proto, name="model", registered_model_name=name)
    return str(info.registered_model_version), proto.SerializeToString()


def labels_of(onnx: bytes, rows: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    return sess.run(None, {"X": rows.astype(np.float32)})[0].reshape(-1)


@pytest.fixture(scope="module")
def versions(mlflow_uri):
    """Two versions that disagree on some rows: a stump (depth 1) live, a deeper forest as the shadow."""
    name = f"shadow_iris_{uuid.uuid4().hex[:6]}"
    (v1, m1), (v2, m2) = register(mlflow_uri, name, 1), register(mlflow_uri, name, 4)
    return name, (v1, m1), (v2, m2)


@pytest.fixture(scope="module")
def api(api_factory, workdir):
    return api_factory("local-shadow", {
        "MLSTACK_STATE_DIR": str(workdir / "deploy-shadow-state"),
        "MLSTACK_SERVE_PORT_RANGE": "[25500, 25999]",
        "MLSTACK_DEPLOYMENTS_REDIS_KEY": f"mlstack:deployments:shadow:{uuid.uuid4().hex[:6]}",
        "MLSTACK_MONITOR_KEY_PREFIX": f"mlstack:monitoring:{uuid.uuid4().hex[:6]}",
        "MLSTACK_MONITOR_DRAIN_SECONDS": "0.3", "MLSTACK_MONITOR_EVALUATE_SECONDS": "0.5",
        "MLSTACK_MONITOR_HISTORY_ENABLED": "false",
    })


@pytest.fixture
def client(api):
    with api.client() as c:
        yield c


def serve_processes(api, name: str) -> list[str]:
    """The ``mlstack serve`` command lines the API runs for deployment ``name`` (by their pid files)."""
    import psutil

    out = []
    for pid_file in (api.state_dir / "deployments" / NS / name).glob("*/*.pid"):
        with contextlib.suppress(psutil.Error, ValueError, OSError):
            out.append(" ".join(psutil.Process(int(pid_file.read_text())).cmdline()))
    return sorted(out)


def ready(client: httpx.Client, name: str) -> dict:
    def check():
        obj = client.get(f"/deployments/{name}", params={"namespace": NS}).json()
        assert obj["status"]["phase"] != "Failed", obj["status"]
        return obj if obj["status"]["phase"] == "Ready" else None

    return wait_until(check, 120, interval=0.2, what=f"deployment {name} Ready")


def test_the_shadow_gets_its_share_never_answers_and_its_agreement_shows_in_quality(client, api, versions):
    name, (v1, live_onnx), (v2, shadow_onnx) = versions
    r = client.post("/deployments", json={"name": "shadowed", "namespace": NS, "spec": {
        "model": {"name": name, "version": v1}, "shadow": {"version": v2, "percent": PERCENT},
        "monitoring": {"sampleRate": 0.01, "windowSeconds": 300}}})
    assert r.status_code == 201, r.text
    obj = ready(client, "shadowed")
    assert obj["status"]["resolvedVersion"] == v1 and obj["status"]["shadowVersion"] == v2, obj["status"]
    assert any("shadow" in c["message"] for c in obj["status"]["conditions"] if c["type"] == "Admitted")
    cmds = serve_processes(api, "shadowed")
    assert len(cmds) == 2 and sum(f"--shadow-percent {PERCENT}" in c for c in cmds) == 1, cmds
    assert any(f"models:/{name}/{v2}" in c and "--shadow" not in c for c in cmds), cmds

    # one client in order: the stable server mirrors requests 5, 10, 15, ... (exactly 20 of every 100)
    df = pd.read_csv(IRIS_CSV)
    rows = df[FEATURES].to_numpy(float)[np.arange(N) % len(df)]
    ids, answered = [], []
    for row in rows:
        r = client.post("/inference", json={"deployment": f"{NS}/shadowed", "input_data": [row.tolist()]})
        assert r.status_code == 200, r.text
        assert r.json()["model_version"] == v1  # never the shadow's answer
        ids.append(r.json()["request_id"])
        answered.append(r.json()["predictions"][0])
    live, shadow = labels_of(live_onnx, rows), labels_of(shadow_onnx, rows)
    assert answered == live.tolist()  # the live version's labels, row for row
    mirrored = [i for i in range(N) if (i + 1) * PERCENT // 100 > i * PERCENT // 100]
    expected = float(np.mean(live[mirrored] == shadow[mirrored]))
    assert 0.3 < expected < 1.0, expected  # the two versions do disagree on some of these rows

    def compared():
        q = client.get("/deployments/shadowed/quality", params={"namespace": NS}).json()
        s = (q.get("shadow") or {}).get("versions", {}).get(v2)
        return q if s and s["compared"] == N * PERCENT // 100 else None

    q = wait_until(compared, 30, interval=0.3, what="every mirrored request compared")
    s = q["shadow"]["versions"][v2]
    assert s["requests"] == N * PERCENT // 100  # exactly the share: the shadow logged every request it got
    assert s["rows"] == N * PERCENT // 100 and s["live_versions"] == [v1]
    assert s["kind"] == "classification" and s["agreement"] == pytest.approx(expected, abs=1e-6), (s, expected)
    assert q["shadow"]["window_seconds"] == 300
    # the shadow's copies stay out of the live version's latency window (and out of its drift: another version)
    assert q["latency"]["samples"] == q["payloads"]["records"] - s["requests"]
    assert q["latency"]["samples"] >= s["compared"]  # the stable server logged every request it mirrored
    assert set(q["drift"]) <= {v1}

    # feedback by request id joins the live answer, not the shadow's copy of the same id
    i = mirrored[0]
    r = wait_until(lambda: (lambda r: r if r.status_code == 200 else None)(
        client.post("/feedback", json={"request_id": ids[i], "label": int(live[i])})), 20, interval=0.3,
        what="a joined id")
    assert r.json()["deployments"] == {f"{NS}/shadowed": {v1: 1}}, r.json()

    assert client.delete("/deployments/shadowed", params={"namespace": NS}).status_code == 204
    wait_until(lambda: not serve_processes(api, "shadowed"), 30, what="both servers stopped")
