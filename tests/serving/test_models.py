"""Where models come from: the MLflow registry (version, alias), the pyfunc fallback, readiness only
after loading, and a clear failure for a model that does not exist."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import tritonclient.http as triton

from mlstack.serving.resolve import ModelRef, parse_model_uri
from tests.utils.http import get, post
from tests.utils.procs import free_port, wait_until


@pytest.mark.parametrize(("uri", "ref"), [
    ("models:/iris@champion", ModelRef("models:/iris@champion", "iris", "iris", alias="champion")),
    ("models:/iris/3", ModelRef("models:/iris/3", "iris", "iris", version="3")),
    ("runs:/abc123/model", ModelRef("runs:/abc123/model", "model")),
    ("/tmp/some/iris_dir", ModelRef("/tmp/some/iris_dir", "iris_dir")),
])
def test_parse_model_uri(uri, ref):
    assert parse_model_uri(uri) == ref


@pytest.mark.parametrize("uri", ["models:/", "models:/a/b/c", "runs:/only-run-id"])
def test_parse_model_uri_rejects(uri):
    with pytest.raises(ValueError, match="bad model URI"):
        parse_model_uri(uri)


def test_registered_version_and_alias(serve, registered_model, mlflow_uri, iris, classifier):
    name, version = registered_model
    env = {"MLSTACK_MLFLOW_TRACKING_URI": mlflow_uri}
    by_version = serve(f"models:/{name}/{version}", env=env)
    by_alias = serve(f"models:/{name}@champion", env=env)
    x = iris.x[:20]
    for server in (by_version, by_alias):
        meta = get(f"{server.base}/v2/models/{name}").json()
        assert meta["name"] == name and meta["versions"] == [version]
        with triton.InferenceServerClient(server.hostport) as client:
            inp = triton.InferInput("X", list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=True)
            res = client.infer(name, [inp], model_version=version)  # /v2/models/NAME/versions/V/infer
            np.testing.assert_array_equal(res.as_numpy("label"), classifier.predict(x))
        r = get(f"{server.base}/v2/models/{name}/versions/999/ready")
        assert r.status == 404 and "999" in r.json()["error"]


def test_pyfunc_fallback(serve, sklearn_model_dir, iris, classifier):
    server = serve(str(sklearn_model_dir), name="iris_sk")
    meta = get(server.base + "/v2/models/iris_sk").json()
    assert meta["platform"] == "mlflow_pyfunc"
    assert meta["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}]
    rows = iris.x[[3, 70, 140]]
    body = post(server.base + "/predict", {"instances": rows.tolist()}).json()
    assert body["predictions"] == classifier.predict(rows).tolist()
    np.testing.assert_allclose(body["probabilities"], classifier.predict_proba(rows), atol=1e-6)
    with triton.InferenceServerClient(server.hostport) as client:
        inp = triton.InferInput("X", list(iris.x.shape), "FP32")
        inp.set_data_from_numpy(iris.x)
        res = client.infer("iris_sk", [inp])
        np.testing.assert_array_equal(res.as_numpy("label"), classifier.predict(iris.x))
    r = post(server.base + "/predict", {"instances": [[1, 2, 3]]})
    assert r.status == 422 and "expects 4" in r.json()["error"]


class GatedProxy:
    """An HTTP proxy to the MLflow server that holds every request until ``open()``."""

    def __init__(self, upstream: str):
        self.upstream = upstream
        self.gate = threading.Event()
        self.held = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                proxy.held += 1
                proxy.gate.wait(120)
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                req = urllib.request.Request(proxy.upstream + self.path, data=data, headers=headers,
                                             method=self.command)
                try:
                    with urllib.request.urlopen(req, timeout=60) as r:
                        status, rheaders, body = r.status, r.headers, r.read()
                except urllib.error.HTTPError as e:
                    status, rheaders, body = e.code, e.headers, e.read()
                self.send_response(status)
                self.send_header("Content-Type", rheaders.get("Content-Type", "application/octet-stream"))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def open(self) -> None:
        self.gate.set()

    def close(self) -> None:
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def gated_mlflow(mlflow_uri) -> Iterator[GatedProxy]:
    p = GatedProxy(mlflow_uri)
    yield p
    p.close()


def test_ready_only_after_the_model_is_loaded(serve, registered_model, gated_mlflow, iris, classifier, workdir):
    name, version = registered_model
    server = serve(f"models:/{name}/{version}", wait_ready=False,
                   env={"MLSTACK_MLFLOW_TRACKING_URI": gated_mlflow.url,
                        "MLSTACK_MODEL_CACHE_DIR": str(workdir / "serving-cache-gated")})
    wait_until(lambda: gated_mlflow.held > 0, timeout=60, what="the server asking MLflow for the model")
    # loading is now blocked inside the registry call: alive, not ready, inference refused with 503
    assert get(server.base + "/v2/health/live").status == 200
    for path in ("/v2/health/ready", f"/v2/models/{name}/ready"):
        r = get(server.base + path)
        assert r.status == 503 and "loading" in r.json()["error"]
    r = post(server.base + "/predict", {"instances": iris.x[:2].tolist()})
    assert r.status == 503 and "loading" in r.json()["error"]
    gated_mlflow.open()
    wait_until(lambda: get(server.base + "/v2/health/ready").status == 200, timeout=60, what="ready after load")
    body = post(server.base + "/predict", {"instances": iris.x[:2].tolist()}).json()
    assert body["predictions"] == classifier.predict(iris.x[:2]).tolist()


def test_missing_model_fails_with_a_clear_error(serve, mlflow_uri):
    server = serve("models:/no_such_model_xyz/1", wait_ready=False,
                   env={"MLSTACK_MLFLOW_TRACKING_URI": mlflow_uri})
    code = wait_until(lambda: server.proc.popen.poll(), timeout=60, what="the server to give up")
    assert code == 1
    log = server.proc.log_tail()
    assert "could not load 'models:/no_such_model_xyz/1'" in log and "no_such_model_xyz" in log
