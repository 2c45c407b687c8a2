"""``POST /models/{name}/versions`` and ``.../copy`` against a real API process and a real MLflow server.

Accepted uploads become new versions and serve through ``/inference``; every refused upload is a
422 (413 for size) that leaves no version, run, artifact or temp file behind.
"""

from __future__ import annotations

import json
import os
import socket
import zipfile
from urllib.parse import urlsplit

import pytest

from tests.utils import zips
from tests.utils.packages import LIMITS, MODEL, MiB

SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.9, 3.1, 5.4, 2.1]


def upload(api, data: bytes, name: str = MODEL, filename: str = "package.zip", **fields):
    return api.post(f"/models/{name}/versions", files={"file": (filename, data, "application/zip")},
                    data={k: v for k, v in fields.items() if v is not None})


def predict(api, version: str) -> list:
    r = api.post("/inference", json={"input_data": [SETOSA, VIRGINICA], "model_version": version,
                                     "sla_seconds": 120})
    assert r.status_code == 200, r.text
    assert r.json()["model_version"] == version
    return r.json()["predictions"]


@pytest.fixture(scope="module")
def seed_version(api) -> dict:
    data = zips.build_zip(zips.seed_files(model=zips.model_bytes()))
    r = upload(api, data, description="from a seed-000 zip", tags=json.dumps({"stage": "test"}),
               aliases="seeded, candidate")
    assert r.status_code == 201, r.text
    return r.json()


def test_mlflow_sklearn_zip_becomes_a_version_and_serves(api, tmp_path, snapshot, mlflow_client):
    before = snapshot()
    r = upload(api, zips.sklearn_model_zip(tmp_path), filename="iris_sklearn.zip")
    assert r.status_code == 201, r.text
    v = r.json()
    assert set(v) >= {"version", "created_at", "run_id", "description", "tags", "aliases"}
    assert v["tags"]["mlstack.package.kind"] == "mlflow"
    assert v["tags"]["mlstack.package.filename"] == "iris_sklearn.zip"
    assert "python_function" in v["tags"]["mlstack.package.flavors"]
    after = snapshot()
    assert len(after["versions"]) == len(before["versions"]) + 1
    assert (MODEL, v["version"]) in after["versions"]
    assert len(after["runs"]) == len(before["runs"]) + 1 and v["run_id"] in after["runs"]
    assert mlflow_client.get_run(v["run_id"]).info.status == "FINISHED"
    assert after["tmp"] == before["tmp"]  # the upload's private temp dir is gone
    assert predict(api, v["version"]) == [0, 2]
    # its signature (a [-1, 4] tensor, no tag) is checked before any model server is asked
    r = api.post("/inference", json={"model": MODEL, "version": v["version"], "input_data": [5.1, 3.5, 1.4]})
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == f"model {MODEL} v{v['version']} expects 4 features (its signature), rows have 3"


def test_seed_package_becomes_a_pyfunc_version_and_serves(api, seed_version, mlflow_client):
    v = seed_version
    assert v["description"] == "from a seed-000 zip"
    assert sorted(v["aliases"]) == ["candidate", "seeded"]
    tags = v["tags"]
    assert tags["mlstack.package.kind"] == "seed" and tags["stage"] == "test" and tags["team"] == "ml"
    assert tags["mlstack.features"] == ",".join(zips.FEATURES) and tags["mlstack.package.framework"] == "sklearn"
    assert "mlstack.package.unsatisfied_requirements" not in tags
    model = api.get(f"/models/{MODEL}").json()
    assert model["aliases"]["seeded"] == v["version"]
    run = mlflow_client.get_run(v["run_id"])
    assert run.data.params["package_name"] == "iris-classifier"
    assert predict(api, v["version"]) == [0, 2]


def test_each_accepted_upload_is_a_new_version(api, snapshot):
    before = snapshot()
    data = zips.build_zip(zips.seed_files(model=zips.model_bytes(), app=zips.APP_CLASS))
    first, second = upload(api, data), upload(api, data)
    assert first.status_code == second.status_code == 201, (first.text, second.text)
    assert int(second.json()["version"]) == int(first.json()["version"]) + 1
    assert first.json()["tags"]["mlstack.package.sha256"] == second.json()["tags"]["mlstack.package.sha256"]
    assert len(snapshot()["versions"]) == len(before["versions"]) + 2


def test_upload_creates_the_model(api):
    name = "packages_new_model"
    assert api.get(f"/models/{name}").status_code == 404
    r = upload(api, zips.build_zip(zips.seed_files(model=zips.model_bytes())), name=name)
    assert r.status_code == 201, r.text
    assert r.json()["version"] == "1"
    assert [x["version"] for x in api.get(f"/models/{name}").json()["versions"]] == ["1"]


MALICIOUS = {
    "zip-slip": (zips.zip_slip, "path traversal"),
    "absolute path": (zips.absolute_path, "absolute path"),
    "symlink": (zips.symlink, "symbolic link"),
    "bomb by ratio": (lambda: zips.ratio_bomb(mib=2), "compression ratio"),
    "bomb by total size": (lambda: zips.total_bomb(n=5, each=900 * 1024), "total uncompressed size"),
    "entry too large": (lambda: zips.total_bomb(n=1, each=3 * MiB + 1), "per-file limit"),
    "too many entries": (lambda: zips.many_entries(120), "too many entries"),
    "not a zip": (lambda: os.urandom(2048), "not a valid zip archive"),
    "missing files": (lambda: zips.build_zip({"meta.json": zips.seed_files()["meta.json"]}), "missing app.py"),
    "bad meta.json": (lambda: zips.build_zip(zips.seed_files(framework="cobol")), "meta.json: framework"),
    "app.py without predict": (lambda: zips.build_zip(zips.seed_files(app="x = 1\n")), "defines no entry point"),
    "app.py syntax error": (lambda: zips.build_zip(zips.seed_files(app="def predict(:\n")), "syntax error"),
    "requirements": (lambda: zips.build_zip({**zips.seed_files(), "requirements.txt": b"-r x.txt\n"}),
                     "pip options"),
}


@pytest.mark.parametrize("case", list(MALICIOUS))
def test_refused_upload_leaves_nothing_behind(api, case, snapshot):
    make, needle = MALICIOUS[case]
    before = snapshot()
    r = upload(api, make())
    assert r.status_code == 422, r.text
    body = r.json()
    assert needle in body["detail"] and any(needle in p for p in body["problems"]), body
    assert snapshot() == before


def test_every_problem_is_listed(api, snapshot):
    files = zips.seed_files(app="def predict(:\n", framework="cobol")
    files["requirements.txt"] = b"--index-url https://evil.example\n"
    before = snapshot()
    r = upload(api, zips.build_zip(files), tags="[1]", aliases="latest,ok")
    assert r.status_code == 422, r.text
    problems = r.json()["problems"]
    assert [p.split(":")[0] for p in problems] == ["tags", "aliases", "meta.json", "app.py", "requirements.txt"]
    assert snapshot() == before


def test_valid_package_with_bad_options_is_refused(api, snapshot):
    before = snapshot()
    r = upload(api, zips.build_zip(zips.seed_files(model=zips.model_bytes())), tags='{"k": 1}', aliases="9bad")
    assert r.status_code == 422, r.text
    assert r.json()["problems"] == ["tags: value of 'k' must be a string, got int",
                                    "aliases: '9bad' is not a valid alias (a letter, then letters, digits, '_' or "
                                    "'-', at most 63)"]
    assert snapshot() == before


def test_request_shape_errors(api):
    r = api.post(f"/models/{MODEL}/versions", json={"file": "x"})
    assert r.status_code == 422 and "multipart/form-data" in r.json()["detail"]
    r = api.post(f"/models/{MODEL}/versions", data={"description": "no file"}, files={"other": ("a", b"b")})
    assert r.status_code == 422 and r.json()["problems"] == ["missing the 'file' field (a .zip archive)"]
    r = upload(api, zips.build_zip(zips.seed_files()), name="bad name!")
    assert r.status_code == 422


def _stored(n_bytes: int) -> bytes:
    return zips.build_zip({**zips.seed_files(), "blob.bin": os.urandom(n_bytes)}, zipfile.ZIP_STORED)


def test_oversize_upload_is_413(api, snapshot):
    before = snapshot()
    r = upload(api, _stored(LIMITS["MAX_UPLOAD_BYTES"] + 64 * 1024))  # the multipart body fits, the zip not
    assert r.status_code == 413, r.text
    assert "larger than the limit" in r.json()["detail"]
    assert snapshot() == before


def test_oversize_declared_length_is_refused_before_the_body(pkg_api, snapshot):
    """A Content-Length above the limit is answered at once, without reading the body."""
    before = snapshot()
    url = urlsplit(pkg_api)
    with socket.create_connection((url.hostname, url.port), timeout=30) as s:
        s.sendall(f"POST /models/{MODEL}/versions HTTP/1.1\r\nHost: x\r\n"
                  "Content-Type: multipart/form-data; boundary=b\r\n"
                  f"Content-Length: {100 * LIMITS['MAX_UPLOAD_BYTES']}\r\n\r\n".encode())
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413"), reply[:300]
    assert b"larger than the limit" in reply
    assert snapshot() == before


def test_oversize_chunked_upload_is_413(api, snapshot):
    """Without a Content-Length the body is counted as it arrives."""
    data = _stored(LIMITS["MAX_UPLOAD_BYTES"] + MiB)
    boundary = "pkgboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.zip\"\r\n"
            "Content-Type: application/zip\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body():
        yield head
        for i in range(0, len(data), 256 * 1024):
            yield data[i:i + 256 * 1024]
        yield tail

    before = snapshot()
    try:
        r = api.post(f"/models/{MODEL}/versions", content=body(),
                     headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    except Exception as e:  # the server may close the connection before the client has sent everything
        pytest.skip(f"connection closed while sending: {e!r}")
    assert r.status_code == 413, r.text
    assert snapshot() == before


def test_copy_as_new_version(api, seed_version, snapshot):
    src = seed_version["version"]
    before = snapshot()
    r = api.post(f"/models/{MODEL}/versions/{src}/copy",
                 json={"description": "edited in the browser", "tags": {"stage": "edited"}, "aliases": ["edited"]})
    assert r.status_code == 201, r.text
    v = r.json()
    assert int(v["version"]) > int(src)
    assert v["description"] == "edited in the browser"
    assert v["tags"]["stage"] == "edited" and v["tags"]["team"] == "ml"  # edits over the source's tags
    assert v["tags"]["mlstack.copied_from"] == f"{MODEL}/{src}"
    assert v["aliases"] == ["edited"] and v["run_id"] == seed_version["run_id"]
    after = snapshot()
    assert len(after["versions"]) == len(before["versions"]) + 1 and after["runs"] == before["runs"]
    source = next(x for x in api.get(f"/models/{MODEL}").json()["versions"] if x["version"] == src)
    assert source["description"] == "from a seed-000 zip" and source["tags"]["stage"] == "test"  # untouched
    assert predict(api, v["version"]) == [0, 2]

    plain = api.post(f"/models/{MODEL}/versions/{src}/copy")  # no body: an identical new version
    assert plain.status_code == 201, plain.text
    assert plain.json()["description"] == "from a seed-000 zip"


@pytest.mark.parametrize("path, body, status", [
    (f"/models/{MODEL}/versions/9999/copy", None, 404),
    ("/models/no_such_model/versions/1/copy", None, 404),
    (f"/models/{MODEL}/versions/1/copy", {"aliases": ["latest"]}, 422),
    (f"/models/{MODEL}/versions/1/copy", {"owner": "x"}, 422),
])
def test_copy_errors(api, path, body, status, snapshot):
    before = snapshot()
    r = api.post(path, json=body) if body is not None else api.post(path)
    assert r.status_code == status, r.text
    assert snapshot()["versions"] == before["versions"]


def test_seed_000_zip_as_it_is_becomes_a_version_and_serves(api):
    """seed 000's meta.json (description, setup/start commands, ports; no name, schema or model_file)."""
    files = zips.seed_files(model=zips.model_bytes())
    files["meta.json"] = json.dumps({"description": "iris classifier, as seed 000 ships it",
                                     "setup_commands": ["pip install -r requirements.txt"],
                                     "start_commands": ["python app.py"], "ports": [8000]}).encode()
    r = upload(api, zips.build_zip(files), filename="seed000.zip")
    assert r.status_code == 201, r.text
    v = r.json()
    assert v["description"] == "iris classifier, as seed 000 ships it"
    tags = v["tags"]
    assert tags["mlstack.package.kind"] == "seed" and tags["mlstack.package.model_file"] == "model.joblib"
    assert tags["mlstack.package.framework"] == "sklearn"
    assert json.loads(tags["mlstack.package.start_commands"]) == ["python app.py"]
    assert tags["mlstack.package.ports"] == "8000"
    assert predict(api, v["version"]) == [0, 2]
    r = api.post("/inference", json={"model": MODEL, "version": v["version"], "sla_seconds": 120,
                                     "input_data": [{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4,
                                                     "petal_width": 0.2}]})
    assert r.status_code == 422 and "records no feature names" in r.json()["detail"], r.text
