"""``POST /predict`` (batch scoring) and ``mlstack predict`` on a real API process and real model servers.

This module runs its own API (its PID is needed for RSS, and its upload limit is set small) on the session's
Redis/MLflow/S3; the champion comes from the session API's training (``trained``).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.utils.procs import start_api

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
SETOSA = "5.1,3.5,1.4,0.2"
VIRGINICA = "6.9,3.1,5.4,2.1"
LIMIT = 80 * 1024 * 1024  # MLSTACK_PREDICT_MAX_UPLOAD_BYTES of this module's API


@pytest.fixture(scope="module")
def batch_api(stack_env, workdir, trained):
    env = {**stack_env, "MLSTACK_SERVE_PORT_RANGE": "[27800, 27899]",
           "MLSTACK_PREDICT_MAX_UPLOAD_BYTES": str(LIMIT)}
    proc, url = start_api(workdir / "api-batch.log", env)
    yield proc, url
    proc.stop(timeout=30)


@pytest.fixture(scope="module")
def bclient(batch_api):
    with httpx.Client(base_url=batch_api[1], timeout=300) as c:
        yield c


def iris_csv(n: int, header: str = ",".join(FEATURES)) -> bytes:
    rows = [SETOSA if i % 2 == 0 else VIRGINICA for i in range(n)]
    return (header + "\n" + "\n".join(rows) + "\n").encode()


def post(client: httpx.Client, content: bytes, accept: str = "text/csv", **fields) -> httpx.Response:
    return client.post("/predict", files={"file": ("in.csv", content, "text/csv")},
                       data={"model": "iris_model", **fields}, headers={"Accept": accept})


def test_csv_in_csv_out(bclient, client):
    n = 5001  # more than two batches of 2000, the last one short
    r = post(bclient, iris_csv(n))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    champion = client.get("/models/iris_model").json()["aliases"]["champion"]
    assert r.headers["x-model-name"] == "iris_model" and r.headers["x-model-version"] == champion
    lines = r.text.splitlines()
    assert lines[0] == "prediction" and len(lines) == n + 1
    assert lines[1:] == ["0" if i % 2 == 0 else "2" for i in range(n)]


def test_json_out_with_version_and_columns_reordered(bclient, trained):
    # columns in another order than the model's: they are matched by name
    body = b"petal_width,petal_length,sepal_width,sepal_length\n0.2,1.4,3.5,5.1\n2.1,5.4,3.1,6.9\n"
    r = post(bclient, body, accept="application/json", version=trained["version"])
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {"model_name": "iris_model", "model_version": trained["version"], "predictions": [0, 2],
                        "rows": 2}


def test_alias_and_accept_q_values(bclient):
    r = post(bclient, iris_csv(3), accept="text/csv;q=0.5, application/json", alias="champion")
    assert r.status_code == 200 and r.json()["predictions"] == [0, 2, 0]
    assert post(bclient, iris_csv(3), accept="image/png").status_code == 406


@pytest.mark.parametrize("content, status, needle", [
    (iris_csv(3, "sepal_length,sepal_width,petal_length,colour"), 422,
     "line 1 (header) does not match the features of model iris_model v"),
    (iris_csv(3, "sepal_length,sepal_width,petal_length,colour"), 422,
     "missing column(s) petal_width; unknown column(s) colour"),
    (iris_csv(2) + b"5.1,abc,1.4,0.2\n", 422, "line 4, column 'sepal_width': 'abc' is not a number"),
    (iris_csv(2) + b"5.1,3.5,1.4\n", 422, "line 4: 3 columns, the header has 4"),
    (iris_csv(2) + b"5.1,3.5,nan,0.2\n", 422, "line 4, column 'petal_length': nan is not a finite number"),
    (iris_csv(1) + b'"1' + b"9" * 200_000 + b'",2,3,4\n', 422, "line 3: not a CSV row (field larger than"),
    (b"", 422, "the file is empty"),
    (b"sepal_length,sepal_width,petal_length,petal_width\n", 422, "no rows"),
    (b"\xff\xfe" + iris_csv(2), 422, "not UTF-8"),
])
def test_bad_csv_is_422_naming_line_and_column(bclient, content, status, needle):
    r = post(bclient, content)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"], r.text


def test_bad_value_is_echoed_only_as_an_excerpt(bclient):
    huge = "9" * 5000 + "x"
    r = post(bclient, iris_csv(1) + f"5.1,{huge},1.4,0.2\n".encode())
    assert r.status_code == 422
    assert len(r.text) < 400 and huge not in r.text and "'99999" in r.text


@pytest.mark.parametrize("fields, status, needle", [
    ({"version": "9999"}, 404, "no version 9999"),
    ({"alias": "nope"}, 404, "has no alias @nope"),
    ({"version": "1", "alias": "champion"}, 422, "version or alias, not both"),
])
def test_unknown_version_or_alias(bclient, fields, status, needle):
    r = post(bclient, iris_csv(2), **fields)
    assert r.status_code == status and needle in r.text, r.text


def _raw(url: str, head: bytes, body_chunks) -> bytes:
    """Send a request over a plain socket (the client keeps sending until the server answers or closes);
    return what the server answered."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall(head)
        try:
            for chunk in body_chunks:
                s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused and closed: its answer is in the socket
        s.settimeout(30)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except ConnectionResetError:
            pass
        return out


def test_over_the_limit_is_413(batch_api):
    url = batch_api[1]
    boundary = "b0und"
    pre = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\niris_model\r\n--{boundary}\r\n"
           'Content-Disposition: form-data; name="file"; filename="big.csv"\r\nContent-Type: text/csv\r\n\r\n'
           ).encode() + iris_csv(1)
    ctype = f"multipart/form-data; boundary={boundary}"
    # declared too large: refused before a byte of the body is read
    head = (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {LIMIT + 10 * 1024 * 1024}\r\n\r\n").encode()
    out = _raw(url, head, [pre])
    assert out.startswith(b"HTTP/1.1 413"), out[:300]
    assert b"larger than the limit" in out and b"POST /predict" in out
    # chunked (no length given): counted while read, stopped past the limit
    head = (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nTransfer-Encoding: chunked\r\n\r\n"
            ).encode()
    row = (VIRGINICA + "\n").encode() * 65536  # ~1 MiB

    def chunks():
        yield b"%x\r\n%s\r\n" % (len(pre), pre)
        for _ in range(LIMIT // len(row) + 20):
            yield b"%x\r\n%s\r\n" % (len(row), row)

    out = _raw(url, head, chunks())
    assert out.startswith(b"HTTP/1.1 413"), out[:300]
    assert b"larger than the limit" in out


def test_memory_stays_flat_for_a_50mb_csv(batch_api, bclient, tmp_path):
    proc, _ = batch_api
    path = tmp_path / "big.csv"
    block = ((SETOSA + "\n" + VIRGINICA + "\n") * 5000).encode()
    with open(path, "wb") as f:
        f.write((",".join(FEATURES) + "\n").encode())
        while f.tell() < 50 * 1024 * 1024:
            f.write(block)
    size = path.stat().st_size
    n = (size - len(",".join(FEATURES)) - 1) // (len(SETOSA) + 1)
    assert post(bclient, iris_csv(4000)).status_code == 200  # warm: model server up, allocator settled
    ps = psutil.Process(proc.pid)
    base = ps.memory_info().rss
    peak, stop = [base], threading.Event()

    def sample():
        while not stop.wait(0.02):
            peak.append(ps.memory_info().rss)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    lines, last, t0 = 0, b"", time.monotonic()
    try:
        with open(path, "rb") as fh, bclient.stream(
                "POST", "/predict", files={"file": ("big.csv", fh, "text/csv")}, data={"model": "iris_model"},
                headers={"Accept": "text/csv"}) as r:
            assert r.status_code == 200, r.read()
            for chunk in r.iter_bytes():
                lines += chunk.count(b"\n")
                last = (last + chunk)[-64:]
    finally:
        stop.set()
        t.join()
    assert lines == n + 1 and last.endswith(b"2\n")
    growth, took = max(peak) - base, time.monotonic() - t0
    print(f"\n50 MB CSV ({n} rows) in {took:.1f} s ({n / took:,.0f} rows/s): "
          f"API RSS {base / 2**20:.0f} MiB -> peak {max(peak) / 2**20:.0f} MiB "
          f"(+{growth / 2**20:.1f} MiB)")
    assert growth < size * 0.5, f"RSS grew by {growth / 2**20:.1f} MiB for a {size / 2**20:.0f} MiB file"


def test_cli_predict(batch_api, tmp_path, trained):
    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    src.write_bytes(iris_csv(10))
    cmd = [sys.executable, "-m", "mlstack", "predict", "--model", "models:/iris_model@champion", "--input", str(src),
           "--output", str(out), "--api-url", batch_api[1]]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert out.read_text().splitlines() == ["prediction"] + ["0" if i % 2 == 0 else "2" for i in range(10)]
    out_json = tmp_path / "out.json"
    cmd = [*cmd[:-4], "--output", str(out_json), "--api-url", batch_api[1], "--format", "json"]
    cmd[cmd.index("models:/iris_model@champion")] = f"models:/iris_model/{trained['version']}"
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(out_json.read_text())["model_version"] == trained["version"]
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"a,b\n1,2\n")
    cmd = [*cmd[:cmd.index("--input") + 1], str(bad), "--output", str(tmp_path / "x.csv"), "--api-url", batch_api[1]]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert p.returncode == 1 and "422" in p.stderr and "missing column(s)" in p.stderr
    assert not Path(tmp_path / "x.csv").exists()


def test_model_server_killed_mid_stream_is_restarted(bclient, stack_env, trained, client):
    """SIGKILL the model server while the answer streams: the batches in flight retry on the restarted server and
    the answer is complete and right."""
    from tests.utils.api import model_server_pid

    champion = client.get("/models/iris_model").json()["aliases"]["champion"]
    assert post(bclient, iris_csv(10)).status_code == 200  # a server for the champion is up
    pid = model_server_pid(stack_env["MLSTACK_STATE_DIR"], "iris_model", champion)
    n = 400_000
    lines, killed, tail = 0, False, b""
    with bclient.stream("POST", "/predict", files={"file": ("in.csv", iris_csv(n), "text/csv")},
                        data={"model": "iris_model"}, headers={"Accept": "text/csv"}) as r:
        assert r.status_code == 200
        for chunk in r.iter_bytes():
            if not killed:
                psutil.Process(pid).kill()
                killed = True
            lines += chunk.count(b"\n")
            tail = (tail + chunk)[-200:]
    assert killed and b"# error" not in tail, tail
    assert lines == n + 1
    new_pid = model_server_pid(stack_env["MLSTACK_STATE_DIR"], "iris_model", champion)
    assert new_pid != pid
