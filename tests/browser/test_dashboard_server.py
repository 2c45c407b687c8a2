"""The two things that put the dashboard in front of the API, held to one contract against a stand-in
upstream: ``mlstack dashboard`` (local mode) and ``frontend/nginx.conf`` (the cluster image). Static
files with cache headers, SPA fallback, ``/api`` prefix stripped, SSE streamed unbuffered, Last-Event-ID
forwarded. No browser needed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import httpx
import pytest

from tests.utils.procs import BIN, free_port, http_ok, start
from tests.utils.stand_in_api import Upstream, make_dist

NGINX_CONF = Path(__file__).resolve().parents[2] / "frontend" / "nginx.conf"


@pytest.fixture(scope="module")
def upstream():
    with Upstream() as up:
        yield up


@pytest.fixture(scope="module")
def fake_dist(tmp_path_factory) -> Path:
    return make_dist(tmp_path_factory.mktemp("dist"))


def _mlstack_dashboard(upstream, dist, logs):
    port = free_port()
    proc = start(
        [str(BIN / "mlstack"), "dashboard", "--port", str(port), "--api-url", f"http://127.0.0.1:{upstream.port}",
         "--dist", str(dist)],
        logs / "dashboard.log", ready=lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), timeout=30,
    )
    return f"http://127.0.0.1:{port}", proc


def render_nginx_conf(upstream: str, port: int, root: Path, read_timeout: str = "60s") -> str:
    """frontend/nginx.conf as the image's entrypoint renders it (envsubst of our two variables), on a
    free port and a test root."""
    text = NGINX_CONF.read_text()
    text = text.replace("${MLSTACK_API_UPSTREAM}", upstream).replace("${MLSTACK_API_READ_TIMEOUT}", read_timeout)
    assert "${" not in text, "a template variable the Dockerfile does not set"
    text = re.sub(r"^\s*listen \[::\]:8080;\n", "", text, flags=re.M)
    return text.replace("listen 8080;", f"listen 127.0.0.1:{port};").replace("/usr/share/nginx/html", str(root))


def _nginx(upstream, dist, logs):
    exe = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if exe is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    port = free_port()
    prefix = logs / "nginx"
    prefix.mkdir()
    (prefix / "default.conf").write_text(render_nginx_conf(f"127.0.0.1:{upstream.port}", port, dist))
    temp = "\n".join(f"  {k}_temp_path {prefix}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    (prefix / "nginx.conf").write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"daemon off;\nworker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log;\n"
        f"events {{}}\nhttp {{\n  include /etc/nginx/mime.types;\n  access_log off;\n{temp}\n"
        f"  include {prefix}/default.conf;\n}}\n"
    )
    proc = start([exe, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log")],
                 logs / "nginx.log", ready=lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), timeout=30)
    return f"http://127.0.0.1:{port}", proc


@pytest.fixture(scope="module", params=["mlstack-dashboard", "nginx"])
def served(request, upstream, fake_dist, tmp_path_factory):
    logs = tmp_path_factory.mktemp(request.param)
    make = _mlstack_dashboard if request.param == "mlstack-dashboard" else _nginx
    base, proc = make(upstream, fake_dist, logs)
    yield base, upstream
    proc.stop()


def test_static_files_spa_fallback_and_cache_headers(served):
    base, _ = served
    with httpx.Client(base_url=base) as c:
        index = c.get("/")
        assert index.status_code == 200 and "<title>app</title>" in index.text
        assert index.headers["cache-control"] == "no-cache"
        asset = c.get("/assets/app-abc123.js")
        assert asset.status_code == 200 and "immutable" in asset.headers["cache-control"]
        route = c.get("/models/iris_model")  # a client-side route
        assert route.status_code == 200 and "<title>app</title>" in route.text
        assert c.get("/assets/missing.js").status_code == 404
        assert "root:" not in c.get("/%2e%2e/%2e%2e/%2e%2e/etc/passwd").text  # never a file outside dist


def test_proxy_strips_prefix_and_passes_method_body_query_status(served):
    base, _ = served
    with httpx.Client(base_url=base) as c:
        r = c.patch("/api/echo?status=422&a=1", json={"x": 1}, headers={"X-Custom": "yes"})
        assert r.status_code == 422
        assert r.headers["x-upstream"] == "1"
        echo = r.json()
        assert echo["method"] == "PATCH" and echo["path"] == "/echo" and echo["query"] == "status=422&a=1"
        assert json.loads(echo["body"]) == {"x": 1}
        assert echo["headers"]["x-custom"] == "yes"
        assert echo["headers"]["x-forwarded-prefix"] == "/api"


def test_sse_streams_unbuffered_and_forwards_last_event_id(served):
    base, up = served
    up.release.clear()
    with httpx.Client(base_url=base, timeout=httpx.Timeout(20)) as c, c.stream(
        "GET", "/api/stream", headers={"Last-Event-ID": "41-0", "Accept": "text/event-stream"}
    ) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = r.iter_lines()
        got = []
        for line in lines:  # the first event arrives while the upstream still holds the second back
            got.append(line)
            if line.startswith("data:"):
                break
        assert "id: 1-0" in got
        assert json.loads(got[-1][len("data: "):]) == {"last": "41-0"}
        up.release.set()
        rest = []
        for line in lines:
            rest.append(line)
            if line.startswith("id: 2-0"):
                break
        assert "id: 2-0" in rest


def test_api_down_is_a_clear_502(fake_dist, tmp_path):
    port = free_port()
    dead = free_port()
    proc = start(
        [str(BIN / "mlstack"), "dashboard", "--port", str(port), "--api-url", f"http://127.0.0.1:{dead}",
         "--dist", str(fake_dist)],
        tmp_path / "dashboard.log", ready=lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), timeout=30,
    )
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/api/models")
        assert r.status_code == 502
        assert "unreachable" in r.json()["detail"]
    finally:
        proc.stop()


def test_missing_build_is_a_clear_error(tmp_path, capsys):
    from mlstack.dashboard import run

    assert run(port=free_port(), api_url="http://127.0.0.1:1", dist_dir=tmp_path / "nope") == 2
    assert "npm run build" in capsys.readouterr().err


def test_dist_dir_defaults_to_the_source_tree_or_the_env(monkeypatch, tmp_path):
    from mlstack.dashboard import DIST_ENV, default_dist_dir

    monkeypatch.delenv(DIST_ENV, raising=False)
    assert default_dist_dir() == Path(__file__).resolve().parents[2] / "frontend" / "dist"
    monkeypatch.setenv(DIST_ENV, str(tmp_path))
    assert default_dist_dir() == tmp_path
