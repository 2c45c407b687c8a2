"""Factories for good and malicious zip archives (all built in memory or under a test's tmp dir)."""

from __future__ import annotations

import io
import json
import os
import stat
import zipfile
from pathlib import Path

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]

APP_FUNCTION = '''\
"""A seed-000 app: load_model + predict."""
import joblib


def load_model(path):
    return joblib.load(path)


def predict(model, data):
    return model.predict(data.to_numpy())
'''

APP_CLASS = '''\
import joblib


class Model:
    def __init__(self, model_path):
        self.model = joblib.load(model_path)

    def predict(self, data):
        return self.model.predict(data.to_numpy())
'''


def meta(**over) -> dict:
    m = {"name": "iris-classifier", "version": "1.0.0", "framework": "sklearn", "model_file": "model.joblib",
         "input_schema": {"features": FEATURES}, "task": "classification",
         "description": "iris classifier from a seed-000 package", "tags": {"team": "ml"}}
    m.update(over)
    return m


def iris_classifier():
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=1000).fit(x, y)


def model_bytes(model=None) -> bytes:
    import joblib

    buf = io.BytesIO()
    joblib.dump(model if model is not None else iris_classifier(), buf)
    return buf.getvalue()


def seed_files(model: bytes | None = None, app: str = APP_FUNCTION, **meta_over) -> dict[str, bytes]:
    return {
        "meta.json": json.dumps(meta(**meta_over)).encode(),
        "app.py": app.encode(),
        "requirements.txt": b"# serving needs\nscikit-learn>=1.0\njoblib\n",
        "model.joblib": model if model is not None else b"not really a model, fine for static checks",
    }


def build_zip(files: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def write(tmp: Path, data: bytes, name: str = "upload.zip") -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


def with_entry(base: dict[str, bytes], info: zipfile.ZipInfo, data: bytes) -> bytes:
    """``base`` files plus one hand-made entry (raw name, attributes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in base.items():
            zf.writestr(name, content)
        zf.writestr(info, data)
    return buf.getvalue()


def raw_entry(name: str, mode: int | None = None) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    if mode is not None:
        info.create_system = 3
        info.external_attr = mode << 16
    return info


def zip_slip() -> bytes:
    return with_entry(seed_files(), raw_entry("../../evil.py"), b"print('pwned')")


def absolute_path() -> bytes:
    return with_entry(seed_files(), raw_entry("/etc/cron.d/evil"), b"* * * * * root true")


def symlink() -> bytes:
    return with_entry(seed_files(), raw_entry("link", stat.S_IFLNK | 0o777), b"/etc/passwd")


def ratio_bomb(mib: int = 20) -> bytes:
    return build_zip({**seed_files(), "zeros.bin": b"\0" * (mib * 1024 * 1024)})


def total_bomb(n: int, each: int) -> bytes:
    """``n`` incompressible stored files of ``each`` bytes: fine one by one, too much together."""
    return build_zip({**seed_files(), **{f"blob{i}.bin": os.urandom(each) for i in range(n)}}, zipfile.ZIP_STORED)


def many_entries(n: int) -> bytes:
    return build_zip({**seed_files(), **{f"f/{i}.txt": b"x" for i in range(n)}})


def sklearn_model_zip(tmp: Path, folder: str | None = "iris_sklearn") -> bytes:
    """An MLflow sklearn model directory (with a signature) zipped, in a top-level folder or at the root."""
    import mlflow.sklearn
    import numpy as np
    from mlflow.models import infer_signature

    model = iris_classifier()
    x = np.array([[5.1, 3.5, 1.4, 0.2], [6.9, 3.1, 5.4, 2.1]], dtype=np.float32)
    out = tmp / "sk-model"
    mlflow.sklearn.save_model(model, str(out), signature=infer_signature(x, model.predict(x)),
                              pip_requirements=["scikit-learn", "joblib"])  # no slow requirement inference
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(out.rglob("*")):
            if p.is_file():
                rel = p.relative_to(out).as_posix()
                zf.write(p, f"{folder}/{rel}" if folder else rel)
    return buf.getvalue()
