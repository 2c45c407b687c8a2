"""``POST /inference`` through real local model servers started by the API."""

from __future__ import annotations

import re
import signal
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.utils.api import model_server_pid, signal_pid
from tests.utils.procs import wait_until

SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.9, 3.1, 5.4, 2.1]


def test_champion_prediction(client, trained):
    r = client.post("/inference", json={"input_data": SETOSA})
    assert r.status_code == 200, r.text
    body = r.json()
    champion = client.get("/models/iris_model").json()["aliases"]["champion"]
    assert body["model_version"] == champion
    assert body["prediction"] == 0
    assert np.argmax(body["probabilities"][0]) == 0
    assert body["attempts"] == 1
    assert body["latency_ms"] > 0


def test_batch_and_version_pinning(client, trained):
    r = client.post("/inference", json={"input_data": [SETOSA, VIRGINICA], "model_version": trained["version"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model_version"] == trained["version"]
    assert body["predictions"] == [0, 2]
    assert body["prediction"] is None


@pytest.mark.parametrize("body, status, needle", [
    ({"input_data": SETOSA, "model_version": "9999"}, 404, "no version 9999"),
    ({"input_data": [1.0, 2.0, 3.0]}, 422,
     "expects 4 features (sepal_length, sepal_width, petal_length, petal_width), rows have 3"),
    ({"input_data": SETOSA, "model": "no_such_model"}, 404, "model 'no_such_model' has no alias @champion"),
    ({"input_data": SETOSA, "model": "iris_model", "alias": "nope"}, 404, "has no alias @nope"),
    ({"input_data": SETOSA, "model": "iris_model", "version": "9999"}, 404, "no version 9999"),
    ({"input_data": SETOSA, "deployment": "models/no-such-deployment"}, 404,
     "ModelDeployment models/no-such-deployment not found"),
    ({"input_data": SETOSA, "deployment": "models/x", "model": "iris_model"}, 422, "without model, version or alias"),
    ({"input_data": SETOSA, "deployment": "no-slash"}, 422, "pattern"),
    ({"input_data": SETOSA, "version": "1", "alias": "champion"}, 422, "version or alias, not both"),
    ({"input_data": SETOSA, "version": "1", "model_version": "2"}, 422, "disagree"),
    ({"input_data": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4}]}, 422,
     "row 0 does not match the features of model iris_model v"),
    ({"input_data": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2,
                      "colour": 1}]}, 422, "unknown colour"),
    ({"input_data": {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4}}, 422, "missing petal_width"),
    ({"input_data": []}, 422, "at least one feature"),
    ({"input_data": [[1, 2, 3, 4], [1, 2]]}, 422, "same number of features"),
    ({"input_data": ["a", "b", "c", "d"]}, 422, "valid number"),
    ({"input_data": SETOSA, "retries": 11}, 422, "less than or equal to 10"),
    ({"input_data": SETOSA, "sla_seconds": 0.01}, 422, "greater than or equal to 0.1"),
    ({"input_data": SETOSA, "model_version": "v2"}, 422, "pattern"),
])
def test_errors_are_clear(client, trained, body, status, needle):
    r = client.post("/inference", json=body)
    assert r.status_code == status, r.text
    assert needle in r.text


def test_any_model_by_name_version_or_alias_with_named_rows(client, trained):
    champion = client.get("/models/iris_model").json()["aliases"]["champion"]
    r = client.post("/inference", json={"model": "iris_model", "alias": "champion", "input_data": SETOSA})
    assert r.status_code == 200, r.text
    assert r.json()["model_name"] == "iris_model" and r.json()["model_version"] == champion
    named = [dict(zip(["petal_width", "petal_length", "sepal_width", "sepal_length"], reversed(row), strict=True))
             for row in (SETOSA, VIRGINICA)]  # objects: any key order
    r = client.post("/inference", json={"model": "iris_model", "version": trained["version"], "input_data": named})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["predictions"] == [0, 2] and body["model_version"] == trained["version"]
    r = client.post("/inference", json={"model": "iris_model", "version": trained["version"], "input_data": named[1]})
    assert r.status_code == 200 and r.json()["prediction"] == 2


def _metric(client, name: str) -> float:
    m = re.search(rf"^{name} ([0-9.e+]+)$", client.get("/metrics").text, re.M)
    return float(m.group(1)) if m else 0.0


def test_unresponsive_server_gives_503_after_retries(client, trained, stack_env):
    version = trained["version"]
    assert client.post("/inference", json={"input_data": SETOSA, "model_version": version}).status_code == 200
    pid = model_server_pid(stack_env["MLSTACK_STATE_DIR"], "iris_model", version)
    signal_pid(pid, signal.SIGSTOP)
    try:
        r = client.post("/inference", json={"input_data": SETOSA, "model_version": version,
                                            "retries": 1, "sla_seconds": 2})
        assert r.status_code == 503, r.text
        assert "unavailable after 2 attempt(s)" in r.json()["detail"]
    finally:
        signal_pid(pid, signal.SIGCONT)
    r = client.post("/inference", json={"input_data": SETOSA, "model_version": version})
    assert r.status_code == 200, r.text


def test_transient_failure_is_retried_within_the_sla(client, trained, stack_env):
    version = trained["version"]
    assert client.post("/inference", json={"input_data": SETOSA, "model_version": version}).status_code == 200
    pid = model_server_pid(stack_env["MLSTACK_STATE_DIR"], "iris_model", version)
    retries_before = _metric(client, "mlstack_inference_retries_total")
    result: dict = {}

    def call():
        result["r"] = client.post("/inference", json={"input_data": SETOSA, "model_version": version,
                                                      "retries": 5, "sla_seconds": 30})

    signal_pid(pid, signal.SIGSTOP)
    t = threading.Thread(target=call)
    try:
        t.start()
        wait_until(lambda: _metric(client, "mlstack_inference_retries_total") > retries_before, 30,
                   what="a retried attempt")
    finally:
        signal_pid(pid, signal.SIGCONT)
    t.join(60)
    r = result["r"]
    assert r.status_code == 200, r.text
    assert r.json()["attempts"] >= 2


def test_crashed_server_is_restarted_on_the_same_port(client, trained, stack_env):
    version, state = trained["version"], stack_env["MLSTACK_STATE_DIR"]
    assert client.post("/inference", json={"input_data": SETOSA, "model_version": version}).status_code == 200
    first = model_server_pid(state, "iris_model", version)
    port = _port_of(first)
    old = first
    for _ in range(2):  # each kill gives the port back: the restarted server listens on it again (same URL)
        signal_pid(old, signal.SIGKILL)
        r = client.post("/inference", json={"input_data": SETOSA, "model_version": version, "sla_seconds": 120})
        assert r.status_code == 200, r.text
        new = model_server_pid(state, "iris_model", version)
        assert new != old and _port_of(new) == port
        old = new


def _port_of(pid: int) -> int:
    args = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    return int(args[args.index("--port") + 1])
