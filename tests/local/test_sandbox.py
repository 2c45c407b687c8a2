"""Uploaded model code runs without the platform's secrets (issue 13, item 2), tried as an attacker would.

A deployer uploads a seed package whose ``app.py`` runs code at import (when ``mlstack serve`` loads the
version) that hunts for the platform's keys: the tokens file, ``outputs/credentials.txt``, its own and every
other process's environment and command line, the Redis password, and then tries Redis and the API's admin
routes with whatever it found. It prints what it got to its log; the test asserts it got nothing.

Everything is real: a password-protected redis-server, the session's MLflow and S3, an ``mlstack api`` as the
test's user (root here, so the server runs as the sandbox user) with a 0600 tokens file.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.utils import zips
from tests.utils.procs import free_port, http_ok, port_open, redis_server_bin, start, wait_until

REDIS_PASSWORD = "redis-secret-7f3a9c"
ADMIN = "admin-token-sandbox-0b1e"
DEPLOYER = "deployer-token-sandbox-77c2"
CREDENTIALS = "redis password " + REDIS_PASSWORD + "\nadmin token " + ADMIN + "\n"
MARKER = "SANDBOX-FINDINGS "

ATTACK = '''
import glob, json, os, socket, urllib.request
import joblib

SECRETS = {secrets!r}
PATHS = {paths!r}
found = {{"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(), "cwd": os.getcwd(),
          "env_secrets": sorted(k for k, v in os.environ.items()
                                if any(s in v for s in SECRETS) or k.startswith(("MLSTACK_REDIS", "MLSTACK_S3",
                                                                              "MLSTACK_AUTH", "AWS_", "RAY_"))),
          "files": {{}}, "proc": [], "redis": None, "api": {{}}}}
for p in PATHS:
    try:
        with open(p, errors="replace") as fh:
            found["files"][p] = fh.read()[:200]
    except OSError as e:
        found["files"][p] = "refused: " + type(e).__name__
for p in glob.glob("/proc/[0-9]*/environ") + glob.glob("/proc/[0-9]*/cmdline"):
    try:
        data = open(p, "rb").read().decode(errors="replace")
    except OSError:
        continue
    if any(s in data for s in SECRETS):
        found["proc"].append(p)
try:  # Redis with the password it would have found, else none
    password = next((s for s in SECRETS if any(s in v for v in list(os.environ.values())
                                               + list(found["files"].values()))), None)
    with socket.create_connection(("127.0.0.1", {redis_port}), timeout=3) as s:
        s.sendall((f"AUTH {{password}}\\r\\n" if password else "") .encode() + b"PING\\r\\n")
        found["redis"] = s.recv(200).decode(errors="replace")
except OSError as e:
    found["redis"] = "refused: " + type(e).__name__
for route in ("/auth/me", "/schedules"):
    try:
        urllib.request.urlopen("{api}" + route, timeout=5)
        found["api"][route] = 200
    except Exception as e:
        found["api"][route] = getattr(e, "code", type(e).__name__)
print("{marker}" + json.dumps(found), flush=True)


def load_model(path):
    return joblib.load(path)


def predict(model, data):
    return model.predict(data.to_numpy())
'''


@pytest.fixture(scope="module")
def secret_redis(workdir):
    """redis-server with a password, given in a 0600 config file (never on a command line)."""
    exe = redis_server_bin()
    port = free_port()
    d = workdir / "sandbox-redis"
    d.mkdir()
    conf = d / "redis.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir {d}\nrequirepass {REDIS_PASSWORD}\n")
    conf.chmod(0o600)
    proc = start([exe, str(conf)], d / "redis.log", ready=lambda: port_open(port), timeout=20, what="redis (password)")
    yield port
    proc.stop()


@pytest.fixture(scope="module")
def sandbox_base():
    """Where the API puts its model servers' private directories: a path the sandbox user may traverse (the
    pytest directories are root's 0700)."""
    d = Path(tempfile.mkdtemp(prefix="mlstack-sandbox-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def platform(stack_env, workdir, secret_redis, sandbox_base):
    """An API as the platform runs it: 0600 tokens file and credentials.txt, Redis URL with its password."""
    home = workdir / "sandbox-platform"
    (home / "outputs" / "local").mkdir(parents=True)
    tokens = home / "outputs" / "local" / "auth-tokens.json"
    tokens.write_text(json.dumps([{"name": "ada", "role": "admin", "token": ADMIN},
                                  {"name": "mallory", "role": "deployer", "token": DEPLOYER}]))
    tokens.chmod(0o600)
    creds = home / "outputs" / "credentials.txt"
    creds.write_text(CREDENTIALS)
    creds.chmod(0o600)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**stack_env, "MLSTACK_REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{secret_redis}/0",
           "MLSTACK_AUTH_TOKENS_FILE": str(tokens), "MLSTACK_MLFLOW_EXPERIMENT": "sandbox-tests",
           "MLSTACK_MODEL_NAME": "sandbox_model", "MLSTACK_STATE_DIR": str(home / "outputs" / "local" / "api"),
           "MLSTACK_SERVE_PORT_RANGE": "[26500, 26599]",
           "MLSTACK_SERVE_SANDBOX_DIR": str(sandbox_base)}
    proc = start([sys.executable, "-m", "mlstack", "api", "--host", "127.0.0.1", "--port", str(port)],
                 home / "api.log", ready=lambda: http_ok(f"{base}/healthz"), timeout=120, env=env, cwd=home,
                 what="mlstack api (sandbox)")
    yield {"url": base, "home": home, "tokens": tokens, "creds": creds, "redis_port": secret_redis,
           "state": home / "outputs" / "local" / "api", "sandbox": sandbox_base, "proc": proc}
    proc.stop(timeout=30)


def test_uploaded_code_gets_none_of_the_platforms_secrets(platform):
    url, home = platform["url"], platform["home"]
    secrets = [REDIS_PASSWORD, ADMIN, DEPLOYER, "test-secret-key"]
    paths = [str(platform["tokens"]), str(platform["creds"]), "outputs/credentials.txt",
             "outputs/local/auth-tokens.json", f"/proc/{os.getpid()}/environ", "/etc/shadow"]
    app = ATTACK.format(secrets=secrets, paths=paths, redis_port=platform["redis_port"], api=url, marker=MARKER)
    data = zips.build_zip(zips.seed_files(model=zips.model_bytes(), app=app))
    auth = {"Authorization": f"Bearer {DEPLOYER}"}
    with httpx.Client(base_url=url, headers=auth, timeout=240) as c:
        r = c.post("/models/sandbox_model/versions", files={"file": ("evil.zip", data, "application/zip")})
        assert r.status_code == 201, r.text
        version = r.json()["version"]
        r = c.post("/inference", json={"input_data": [[5.1, 3.5, 1.4, 0.2]], "model_version": version,
                                       "sla_seconds": 180})
        assert r.status_code == 200, r.text  # the package still serves: only its reach is cut

    log = platform["state"] / "servers" / f"sandbox_model-v{version}.log"
    line = wait_until(lambda: next((ln for ln in log.read_text().splitlines() if ln.startswith(MARKER)), None),
                      30, what="the attacker's findings in the server log")
    found = json.loads(line[len(MARKER):])
    text = json.dumps(found)
    assert not any(s in text for s in secrets), found  # no secret anywhere in what it gathered

    assert found["env_secrets"] == [], found["env_secrets"]
    assert found["proc"] == [], found["proc"]  # no environ/cmdline of any process carries a secret it can read
    for p in paths:
        assert found["files"][p].startswith("refused"), (p, found["files"][p])
    assert "NOAUTH" in found["redis"] or "refused" in found["redis"], found["redis"]
    assert found["api"] == {"/auth/me": 401, "/schedules": 401}
    assert not found["cwd"].startswith(str(home))
    if os.geteuid() == 0:  # a separate unprivileged user, no supplementary groups
        assert found["uid"] != 0 and found["gid"] != 0 and found["groups"] in ([], [found["gid"]]), found
    # the server's private directory is closed to everyone else
    sandbox_dirs = [p for p in platform["sandbox"].iterdir() if p.is_dir()]
    assert sandbox_dirs and all(oct(p.stat().st_mode & 0o777) == "0o700" for p in sandbox_dirs)


def test_the_private_directory_goes_with_the_api(platform):
    """Last in the module: the API stops (SIGTERM), its model servers with it, and the copies of models and the
    temp files they kept under the sandbox directory are removed."""
    assert [p for p in platform["sandbox"].iterdir() if p.is_dir()], "the servers ran in a private directory"
    platform["proc"].stop(timeout=30)
    assert platform["proc"].popen.returncode is not None
    assert [p.name for p in platform["sandbox"].iterdir()] == []
