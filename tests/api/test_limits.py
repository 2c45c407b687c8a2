"""Unauthenticated resource exhaustion, tried as an attacker would: huge bodies without (or with) a token, huge
headers, a 422 that would echo its input, and data URIs naming files outside the data directory.

A real API process with local tokens. Raw sockets where httpx would hide what the server does (when it
answers, whether it read the body first); the API's RSS read from /proc.
"""

from __future__ import annotations

import json
import secrets
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.utils.procs import start_api, wait_until

TOKENS = {role: secrets.token_urlsafe(24) for role in ("viewer", "deployer", "admin")}
MiB = 1024 * 1024
BIG = 300 * MiB


@pytest.fixture(scope="module")
def secure_api(stack_env, workdir, data_dir):
    tokens = [{"name": f"{role}-user", "role": role, "token": tok} for role, tok in TOKENS.items()]
    env = {**stack_env, "MLSTACK_AUTH_TOKENS": json.dumps(tokens), "MLSTACK_SERVE_PORT_RANGE": "[27700, 27799]",
           "MLSTACK_DATA_DIR": str(data_dir), "MLSTACK_MLFLOW_EXPERIMENT": "limits-tests"}
    proc, url = start_api(workdir / "api-limits.log", env)
    yield proc, url
    proc.stop(timeout=30)


def bearer(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _host_port(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def send_body(url: str, path: str, headers: dict[str, str], total: int, chunked: bool,
              deadline: float = 20.0) -> tuple[int, bytes, int, float]:
    """POST ``total`` bytes of JSON-ish filler to ``path`` while reading the answer; stop sending as soon as the
    server answers or closes. Returns (status, response bytes, bytes sent, seconds to the answer)."""
    sock = socket.create_connection(_host_port(url), timeout=deadline)
    head = [f"POST {path} HTTP/1.1", f"Host: {url.removeprefix('http://')}", "Content-Type: application/json"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}")
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    answer = bytearray()
    done = threading.Event()

    def complete() -> bool:
        head, sep, body = bytes(answer).partition(b"\r\n\r\n")
        if not sep:
            return False
        length = next((int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                       if line.startswith(b"content-length:")), 0)
        return len(body) >= length

    def reader():
        try:
            while chunk := sock.recv(65536):
                answer.extend(chunk)
                if complete():
                    break
        except OSError:
            pass
        done.set()

    t0 = time.monotonic()
    threading.Thread(target=reader, daemon=True).start()
    block = b'{"input_data": [' + b"1.0," * (MiB // 4 - 8)
    block = block[:MiB]
    sent = 0
    try:
        while sent < total and not done.is_set() and time.monotonic() - t0 < deadline:
            piece = block[: min(len(block), total - sent)]
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece)
            sent += len(piece)
        if chunked and sent >= total:
            sock.sendall(b"0\r\n\r\n")
    except OSError:  # the server answered and closed: exactly what we want
        pass
    assert done.wait(max(0.1, deadline - (time.monotonic() - t0))), f"no answer within {deadline}s ({sent} sent)"
    elapsed = time.monotonic() - t0
    sock.close()
    status = int(bytes(answer).split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return status, bytes(answer), sent, elapsed


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("path", ["/inference", "/trigger_training", "/alerts", "/models/x/versions",
                                  "/train", "/no/such/route"])
def test_a_300_mb_body_without_a_token_is_401_before_it_is_read(secure_api, path, chunked):
    proc, url = secure_api
    before = rss_mib(proc.pid)
    status, answer, sent, elapsed = send_body(url, path, {}, BIG, chunked)
    assert status in (401, 404), answer[:300]
    if path != "/no/such/route":
        assert status == 401 and b"www-authenticate: bearer" in answer.lower(), answer
        assert b"bearer token is required" in answer
    assert sent < 64 * MiB, f"the server let {sent} bytes in before answering"
    assert elapsed < 10
    assert rss_mib(proc.pid) - before < 50
    assert httpx.get(url + "/healthz", timeout=5).status_code == 200


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_300_mb_body_with_a_viewer_token_is_413_without_growing_the_api(secure_api, chunked):
    proc, url = secure_api
    before = rss_mib(proc.pid)
    status, answer, sent, elapsed = send_body(url, "/inference", bearer("viewer"), BIG, chunked)
    after = rss_mib(proc.pid)
    print(f"RSS {before:.0f} -> {after:.0f} MiB; {sent / MiB:.0f} MiB sent; answered in {elapsed:.2f}s")
    assert status == 413, answer[:300]
    assert b"larger than the limit" in answer and b"POST /inference" in answer, answer
    assert sent < 64 * MiB
    assert after - before < 50, f"RSS {before:.0f} -> {after:.0f} MiB"
    assert httpx.get(url + "/healthz", timeout=5).status_code == 200


def test_the_limit_is_per_route_from_settings(secure_api):
    _, url = secure_api
    # 2 MiB: over the default 1 MiB, under /inference's 16 MiB
    body = {"input_data": [1.0] * (2 * MiB // 5)}
    r = httpx.post(url + "/alerts", json={"title": "x" * (2 * MiB)}, headers=bearer("deployer"), timeout=30)
    assert r.status_code == 413 and "1048576" in r.json()["detail"], r.text[:300]
    r = httpx.post(url + "/inference", json=body, headers=bearer("viewer"), timeout=60)
    assert r.status_code != 413, r.text[:300]


def test_a_16_mb_header_is_refused(secure_api):
    proc, url = secure_api
    before = rss_mib(proc.pid)
    sock = socket.create_connection(_host_port(url), timeout=20)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
    sent = 0
    try:
        while sent < 16 * MiB:
            sock.sendall(b"a" * 65536)
            sent += 65536
    except OSError:
        pass
    try:
        answer = sock.recv(4096)
    except OSError:
        answer = b""
    sock.close()
    assert answer == b"" or answer.split(b" ", 2)[1] in (b"400", b"431"), answer[:200]
    assert sent < 16 * MiB or answer, "the server read a 16 MB header without a word"
    assert rss_mib(proc.pid) - before < 30
    # a header over the limit (32 KiB by default), sent in full: the answer is a 400/431, never a 200
    r = httpx.get(url + "/healthz", headers={"X-Big": "a" * (64 * 1024)}, timeout=10)
    assert r.status_code in (400, 431), r.status_code
    assert httpx.get(url + "/healthz", headers={"X-Fine": "a" * 8192}, timeout=5).status_code == 200


def test_a_422_never_echoes_the_input(secure_api):
    _, url = secure_api
    secret = "S3CR3T-" + "x" * 500_000
    for body in ({"input_data": secret}, {"hyperparameters": {"n_estimators": secret}}, [secret], secret):
        path = "/inference" if isinstance(body, dict) and "input_data" in body else "/trigger_training"
        role = "viewer" if path == "/inference" else "deployer"
        r = httpx.post(url + path, json=body, headers=bearer(role), timeout=30)
        assert r.status_code == 422, r.text[:300]
        assert len(r.content) < 4000, f"{len(r.content)} bytes of 422"
        assert "x" * 200 not in r.text
    r = httpx.post(url + "/trigger_training", content=b'{"data_uri": "' + b"y" * 300_000 + b'"',
                   headers={**bearer("deployer"), "content-type": "application/json"}, timeout=30)
    assert r.status_code == 422 and len(r.content) < 4000 and "y" * 200 not in r.text


# -- data URIs -------------------------------------------------------------------------------------------------

ATTACKS = ["/etc/shadow", "/etc/passwd", "/proc/self/environ", "file:///etc/passwd", "file:///proc/self/environ",
           "outputs/credentials.txt", "../../../../../../etc/passwd", "../api-limits.log", "/dev/zero",
           "http://169.254.169.254/latest/meta-data/", "s3://mlops/../../etc/passwd", "x" * 300 + ".csv",
           "s3://mlops/data/" + "n" * 300 + ".csv"]


@pytest.mark.parametrize("uri", ATTACKS)
def test_data_uris_outside_the_data_dir_are_422_and_start_nothing(secure_api, workdir, uri):
    _, url = secure_api
    before = httpx.get(url + "/training", headers=bearer("viewer"), timeout=30).json()
    r = httpx.post(url + "/trigger_training", json={"data_uri": uri}, headers=bearer("deployer"), timeout=30)
    assert r.status_code == 422, r.text[:300]
    detail = r.json()["detail"]
    assert "root:" not in r.text and "PATH=" not in r.text and "MLSTACK_" not in detail.replace("MLSTACK_DATA_DIR", "")
    after = httpx.get(url + "/training", headers=bearer("viewer"), timeout=30).json()
    assert [j["job_id"] for j in after] == [j["job_id"] for j in before], "a job was created"


def test_no_existence_oracle_outside_the_data_dir(secure_api, workdir):
    _, url = secure_api
    present = workdir / "present.csv"
    present.write_text("a,target\n" + "1,0\n" * 20)
    answers = []
    for p in (present, workdir / "missing.csv"):
        r = httpx.post(url + "/trigger_training", json={"data_uri": str(p)}, headers=bearer("deployer"), timeout=30)
        answers.append((r.status_code, r.json()["detail"].replace(p.name, "NAME")))
    assert answers[0] == answers[1] and answers[0][0] == 422


def test_a_symlink_in_the_data_dir_to_a_secret_is_refused(secure_api, workdir, data_dir):
    _, url = secure_api
    secret = workdir / "secret.csv"
    secret.write_text("REDIS_PASSWORD,target\n" + "1,0\n" * 20)
    link = data_dir / "innocent.csv"
    if not link.exists():
        link.symlink_to(secret)
    r = httpx.post(url + "/trigger_training", json={"data_uri": "innocent.csv"}, headers=bearer("deployer"),
                   timeout=30)
    assert r.status_code == 422 and "REDIS_PASSWORD" not in r.text, r.text


def test_a_file_in_the_data_dir_trains(secure_api):
    _, url = secure_api
    r = httpx.post(url + "/trigger_training", json={"data_uri": "iris.csv", "hyperparameters": {"n_estimators": 5}},
                   headers=bearer("deployer"), timeout=30)
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]

    def done():
        job = httpx.get(f"{url}/training/{job_id}", headers=bearer("viewer"), timeout=30).json()
        return job if job["status"] in ("succeeded", "failed") else None

    job = wait_until(done, 300, interval=0.5, what="training on the data dir's iris.csv")
    assert job["status"] == "succeeded", job
    r = httpx.post(url + "/trigger_training", json={"data_uri": "missing.csv"}, headers=bearer("deployer"),
                   timeout=30)
    assert r.status_code == 422 and "does not exist" in r.text
