"""Local mode: ModelDeployments served on this machine by a real API process."""

from __future__ import annotations

import contextlib
import os
import signal
import uuid

import httpx
import psutil
import pytest

from tests.utils.deployments import ROWS, Api, condition, pid_files, wait_phase
from tests.utils.procs import wait_until

NS = "models"


@pytest.fixture(scope="module")
def local_api(api_factory, workdir) -> Api:
    key = f"mlstack:deployments:test:{uuid.uuid4().hex[:6]}"
    return api_factory("local", {
        "MLSTACK_STATE_DIR": str(workdir / "deploy-state"),
        "MLSTACK_SERVE_PORT_RANGE": "[24000, 24499]",
        "MLSTACK_DEPLOYMENTS_REDIS_KEY": key,
        "MLSTACK_DEPLOYMENTS_RETRY_SECONDS": "2",
    })


@pytest.fixture
def client(local_api) -> httpx.Client:
    with local_api.client() as c:
        yield c


def spec(model, **kw):
    return {"model": {"name": model.name, "alias": "champion"}, **kw}


def test_onnx_lifecycle(client, local_api, model):
    r = client.post("/deployments", json={"name": "iris-onnx", "spec": spec(model, replicas=3)})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["metadata"]["namespace"] == NS and created["metadata"]["uid"]
    assert created["status"]["phase"] in ("Pending", "Deploying", "Ready")
    assert created["spec"]["model"] == {"name": model.name, "alias": "champion", "version": None}

    obj = wait_phase(client, "iris-onnx", {"Ready", "Failed"})
    st = obj["status"]
    assert st["phase"] == "Ready", st
    assert st["resolvedVersion"] == model.version
    assert st["replicas"] == 1 and st["readyReplicas"] == 1 and st["observedGeneration"] == 1
    assert st["queuePosition"] is None
    assert {c["type"]: c["status"] for c in st["conditions"]} == {
        "Admitted": "True", "ModelResolved": "True", "Available": "True", "Ready": "True"}
    assert "capped at 1" in condition(obj, "Admitted")["message"]

    pred = httpx.post(f"{st['url']}/predict", json={"instances": ROWS}, timeout=30)
    assert pred.status_code == 200, pred.text
    assert pred.json()["predictions"] == [0, 2]

    # /inference of that version goes to the deployment (no extra pool server is started)
    r = client.post("/inference", json={"input_data": ROWS[0], "model_version": model.version})
    assert r.status_code == 200, r.text
    assert r.json()["prediction"] == 0
    assert not list((local_api.state_dir / "servers").glob("*.pid"))

    listed = client.get("/deployments").json()
    assert [d["metadata"]["name"] for d in listed] == ["iris-onnx"]
    assert client.get("/deployments", params={"namespace": "other"}).json() == []

    alerts = client.get("/alerts", params={"limit": 1000}).json()
    phases = [a["data"]["phase"] for a in alerts if a["type"] == "deployment.phase" and a["deployment"] == "iris-onnx"]
    assert "Ready" in phases, alerts

    [pid_file] = pid_files(local_api.state_dir, NS, "iris-onnx")
    pid = int(pid_file.read_text())
    assert psutil.pid_exists(pid)
    assert client.delete("/deployments/iris-onnx").status_code == 204
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not pid_file.exists()
    with pytest.raises(httpx.HTTPError):
        httpx.post(f"{st['url']}/predict", json={"instances": ROWS}, timeout=5).raise_for_status()
    assert client.get("/deployments/iris-onnx").status_code == 404
    r = client.delete("/deployments/iris-onnx")
    assert r.status_code == 404 and "not found" in r.json()["detail"]


def test_delete_during_startup_leaves_no_process(client, local_api, model):
    r = client.post("/deployments", json={"name": "iris-quick", "spec": spec(model)})
    assert r.status_code == 201, r.text
    wait_until(lambda: pid_files(local_api.state_dir, NS, "iris-quick"), 60, what="model server started")
    assert client.delete("/deployments/iris-quick").status_code == 204
    assert not pid_files(local_api.state_dir, NS, "iris-quick")
    wait_until(lambda: not serve_children(local_api), 15, what="model server gone")


def serve_children(api: Api) -> list[psutil.Process]:
    out = []
    for p in psutil.Process(api.proc.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if "serve" in p.cmdline() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
    return out


def test_vm_needs_a_cluster(client, model):
    r = client.post("/deployments", json={"name": "iris-vm", "spec": spec(
        model, runtime="vm", vm={"image": "quay.io/containerdisks/fedora:40"})})
    assert r.status_code == 422, r.text
    assert "KubeVirt" in r.json()["detail"]
    assert client.get("/deployments/iris-vm").status_code == 404


def test_invalid_spec_lists_the_reasons(client, model):
    r = client.post("/deployments", json={"name": "Bad_Name", "spec": {
        "model": {"name": model.name, "alias": "champion", "version": "1"}, "replicas": -1, "colour": "red"}})
    assert r.status_code == 422
    detail = r.json()["detail"]
    text = " ".join(f"{'.'.join(map(str, d['loc']))}: {d['msg']}" for d in detail)
    assert "body.name" in text
    assert "exactly one of model.version and model.alias" in text
    assert "replicas" in text and "colour" in text
    r = client.post("/deployments", json={"name": "x", "spec": {"model": {"name": model.name, "version": "1"},
                                                                "server": "triton"}})
    assert r.status_code == 422 and "server" in r.text


def test_duplicate_is_409_and_unknown_model_fails(client):
    body = {"name": "ghost", "spec": {"model": {"name": "no_such_model", "alias": "champion"}}}
    assert client.post("/deployments", json=body).status_code == 201
    r = client.post("/deployments", json=body)
    assert r.status_code == 409 and "already exists" in r.json()["detail"]

    obj = wait_phase(client, "ghost", {"Failed"}, timeout=60)
    cond = condition(obj, "ModelResolved")
    assert cond["status"] == "False" and cond["reason"] == "ModelNotFound"
    assert "no_such_model" in cond["message"]
    assert condition(obj, "Ready")["reason"] == "ModelNotFound"
    assert client.delete("/deployments/ghost").status_code == 204


def test_crashed_server_is_restarted(client, local_api, model):
    assert client.post("/deployments", json={"name": "iris-crash", "spec": spec(model)}).status_code == 201
    wait_phase(client, "iris-crash", {"Ready"})
    [pid_file] = pid_files(local_api.state_dir, NS, "iris-crash")
    old_pid = int(pid_file.read_text())
    os.kill(old_pid, signal.SIGKILL)

    def restarted():
        obj = client.get("/deployments/iris-crash").json()
        files = pid_files(local_api.state_dir, NS, "iris-crash")
        new = files and int(files[0].read_text()) != old_pid
        return obj if new and obj["status"]["phase"] == "Ready" else None

    obj = wait_until(restarted, 60, interval=0.2, what="model server restarted")
    assert httpx.post(f"{obj['status']['url']}/predict", json={"instances": ROWS}, timeout=30).status_code == 200
    alerts = client.get("/alerts", params={"limit": 1000}).json()
    crash = [a for a in alerts if a["type"] == "deployment.phase" and a["deployment"] == "iris-crash"
             and a["data"]["phase"] == "Failed"]
    assert crash and crash[-1]["data"]["reason"] == "ServerExited" and crash[-1]["severity"] == "error"
    assert client.delete("/deployments/iris-crash").status_code == 204


def test_alias_move_rolls_without_failed_requests_and_back(client, local_api, mlflow_uri):
    """Steady load on /inference through the deployment while its alias moves: every answer is a 200, the
    deployment rolls to the new version (status, alert, old server stopped) within 30 s, and back again.
    Forward: PUT /models/{name}/aliases/{alias} (wakes the deployment at once). Back: the alias moved in
    MLflow directly, as a training job's promotion does (seen by the periodic re-resolution)."""
    import threading
    import time

    from mlflow import MlflowClient

    from tests.utils.deployments import register_onnx

    name = f"roll_iris_{uuid.uuid4().hex[:6]}"
    v1, v2 = register_onnx(mlflow_uri, name), register_onnx(mlflow_uri, name)
    mlflow = MlflowClient(mlflow_uri)
    mlflow.set_registered_model_alias(name, "stable", v1)
    body = {"name": "iris-roll", "spec": {"model": {"name": name, "alias": "stable"}}}
    assert client.post("/deployments", json=body).status_code == 201
    assert wait_phase(client, "iris-roll", {"Ready"})["status"]["resolvedVersion"] == v1

    results: list[tuple[float, int, str | None]] = []  # (time, status, model_version)
    stop = threading.Event()

    def load(target: dict):
        with httpx.Client(base_url=local_api.url, timeout=60) as c:
            while not stop.is_set():
                r = c.post("/inference", json={**target, "input_data": ROWS})
                mv = r.json().get("model_version") if r.status_code == 200 else None
                results.append((time.monotonic(), r.status_code, mv))

    # 3 clients through the deployment, 1 by model and alias (served by the deployment too, never a 2nd server)
    targets = [{"deployment": f"{NS}/iris-roll"}] * 3 + [{"model": name, "alias": "stable"}]
    threads = [threading.Thread(target=load, args=(t,)) for t in targets]
    for t in threads:
        t.start()

    def roll(move, old: str, new: str) -> dict:
        wait_until(lambda: sum(1 for _, _, v in results if v == old) >= 20, 30, what=f"load on v{old}")
        t0 = time.monotonic()
        move()
        obj = wait_until(lambda: (o := client.get("/deployments/iris-roll").json())["status"].get(
            "resolvedVersion") == new and o["status"]["phase"] == "Ready" and o, 30, interval=0.1,
            what=f"iris-roll rolled to v{new}")
        rolled = time.monotonic() - t0
        wait_until(lambda: [f.name for f in pid_files(local_api.state_dir, NS, "iris-roll")] == [
            f"{name}-v{new}.pid"], 30, what=f"the v{old} server stopped")
        wait_until(lambda: sum(1 for ts, _, v in results if v == new and ts > t0) >= 20, 30,
                   what=f"load served by v{new}")
        return {"seconds": round(rolled, 2), "url": obj["status"]["url"]}

    try:
        forward = roll(lambda: client.put(f"/models/{name}/aliases/stable", json={"version": v2}).raise_for_status(),
                       v1, v2)
        back = roll(lambda: mlflow.set_registered_model_alias(name, "stable", v1), v2, v1)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    failed = [(s, v) for _, s, v in results if s != 200]
    print(f"\nroll under load: {len(results)} requests, {len(failed)} non-2xx; "
          f"forward (PUT alias) {forward['seconds']} s, back (alias moved in MLflow) {back['seconds']} s")
    assert not failed, failed[:10]
    assert forward["seconds"] < 30 and back["seconds"] < 30
    assert not list((local_api.state_dir / "servers").glob(f"{name}-*.pid"))  # no pool server was started

    alerts = client.get("/alerts", params={"limit": 1000}).json()
    rolls = [(a["data"]["from"], a["data"]["to"]) for a in alerts
             if a["type"] == "deployment.rolled" and a["deployment"] == "iris-roll"]
    assert rolls == [(v1, v2), (v2, v1)], rolls
    phases = [a["data"]["phase"] for a in alerts if a["type"] == "deployment.phase" and a["deployment"] == "iris-roll"]
    assert phases.count("Ready") == 1 and "Failed" not in phases, phases  # the rolls never left Ready
    assert client.delete("/deployments/iris-roll").status_code == 204


def test_restart_brings_deployments_back(api_factory, local_api, model):
    with local_api.client() as c:
        r = c.post("/deployments", json={"name": "iris-keep", "namespace": "team-a",
                                         "spec": {"model": {"name": model.name, "version": model.version}}})
        assert r.status_code == 201, r.text
        before = wait_phase(c, "iris-keep", {"Ready"}, namespace="team-a")
    [pid_file] = pid_files(local_api.state_dir, "team-a", "iris-keep")
    old_pid = int(pid_file.read_text())
    local_api.stop()  # its model servers stop with it; the record stays in Redis
    wait_until(lambda: not psutil.pid_exists(old_pid) or psutil.Process(old_pid).status() == psutil.STATUS_ZOMBIE,
               30, what="old model server gone")

    again = api_factory("local-restarted", local_api.env)
    with again.client() as c:
        after = wait_phase(c, "iris-keep", {"Ready"}, namespace="team-a")
        assert after["metadata"]["uid"] == before["metadata"]["uid"]
        pred = httpx.post(f"{after['status']['url']}/predict", json={"instances": ROWS}, timeout=30)
        assert pred.status_code == 200 and pred.json()["predictions"] == [0, 2]
        assert c.delete("/deployments/iris-keep", params={"namespace": "team-a"}).status_code == 204
    again.stop()


