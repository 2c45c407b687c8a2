"""Browser-test fixtures: the real API on the session's real services, ``mlstack dashboard`` in front of
it serving the built front end, and the system Chromium driven by Playwright (never a downloaded browser).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.utils.procs import BIN, Proc, free_port, http_ok, start, start_api

ROOT = Path(__file__).resolve().parents[2]
FRONTEND = ROOT / "frontend"
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = os.environ.get("MLSTACK_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="session")
def dashboard_dist() -> Path:
    """The built front end: ``$MLSTACK_DASHBOARD_DIST``, else ``frontend/dist`` (built here if missing)."""
    if env := os.environ.get("MLSTACK_DASHBOARD_DIST"):
        dist = Path(env)
    else:
        dist = FRONTEND / "dist"
        if not (dist / "index.html").is_file():
            npm = shutil.which("npm")
            if npm is None:
                pytest.fail("frontend/dist is not built and npm is missing: (cd frontend && npm ci && npm run build)")
            if not (FRONTEND / "node_modules").is_dir():
                subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=FRONTEND, check=True, timeout=600)
            subprocess.run([npm, "run", "build"], cwd=FRONTEND, check=True, timeout=600)
    if not (dist / "index.html").is_file():
        pytest.fail(f"no built dashboard at {dist}")
    return dist


# module scope: the API, its Ray and its model servers are gone before the next module runs
@pytest.fixture(scope="module")
def api_url(stack_env, workdir):
    """The real API (``mlstack api``) on Redis, MLflow and moto S3, training on a local Ray of its own."""
    # a Ray of its own, in a short path (Ray's unix sockets must fit in 107 bytes)
    ray_dir = Path(tempfile.mkdtemp(prefix="mlsb-", dir="/tmp"))
    # its own registered model and experiment: other modules' versions must not move the chart
    env = {**stack_env, "MLSTACK_RAY_TEMP_DIR": str(ray_dir), "MLSTACK_STATE_DIR": str(workdir / "state-browser"),
           "MLSTACK_MODEL_NAME": "browser_iris", "MLSTACK_MLFLOW_EXPERIMENT": "browser-tests",
           "MLSTACK_SERVE_PORT_RANGE": "[26000, 26999]",
           # its own deployments: the panel starts empty whatever other modules left in the session's Redis
           "MLSTACK_DEPLOYMENTS_REDIS_KEY": f"mlstack:deployments:browser-{secrets.token_hex(4)}"}
    proc, url = start_api(workdir / "browser-api.log", env, ready_path="/readyz", timeout=180,
                          args=("--log-level", "warning"))
    yield url
    proc.stop()
    shutil.rmtree(ray_dir, ignore_errors=True)


class Dashboard:
    """``mlstack dashboard`` on a fixed port, restartable (to cut every open SSE stream for real)."""

    def __init__(self, api_url: str, dist: Path, log_dir: Path):
        self.api_url, self.dist, self.log_dir = api_url, dist, log_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: Proc | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.proc = start(
            [str(BIN / "mlstack"), "dashboard", "--host", "127.0.0.1", "--port", str(self.port),
             "--api-url", self.api_url, "--dist", str(self.dist)],
            self.log_dir / f"browser-dashboard-{self.starts}.log",
            ready=lambda: http_ok(f"{self.url}/healthz"), timeout=60, what="mlstack dashboard",
        )

    def stop(self) -> None:
        if self.proc:
            self.proc.stop()
            self.proc = None


@pytest.fixture(scope="module")
def dashboard(api_url, dashboard_dist, workdir):
    d = Dashboard(api_url, dashboard_dist, workdir)
    d.start()
    yield d
    d.stop()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (or set MLSTACK_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Path:
    """Where screenshots go: a temporary directory, so a run leaves the tree clean; with
    MLSTACK_UPDATE_SCREENSHOTS=1, tests/artifacts/ (the committed ones the README shows)."""
    if os.environ.get("MLSTACK_UPDATE_SCREENSHOTS") == "1":
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        return ARTIFACTS
    return tmp_path_factory.mktemp("screenshots")
