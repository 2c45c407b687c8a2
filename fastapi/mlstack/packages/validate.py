"""From an uploaded zip to a validated, extracted package ready to be logged (pure: files only).

Two layouts are accepted:

* an **MLflow model directory** zipped: ``MLmodel`` at the zip root, or inside one top-level folder;
  it must have a ``python_function`` flavour (the model server's pyfunc fallback) or an ``onnx`` one;
* **seed 000's package**: ``meta.json``, ``app.py``, ``requirements.txt`` and the model file at the
  zip root (or inside one top-level folder), checked by :mod:`mlstack.packages.seed`.

:func:`prepare` runs the safety checks on the central directory first, extracts only a safe archive
into the caller's private directory, then validates the content, listing every problem.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from mlstack.packages.archive import ZipReport, extract_zip, inspect_zip
from mlstack.packages.limits import PackageLimits
from mlstack.packages.problems import PackageInvalid
from mlstack.packages.seed import META, REQUIRED_FILES, Meta, check_package

MLMODEL = "MLmodel"
Kind = Literal["mlflow", "seed"]


@dataclass
class Prepared:
    kind: Kind
    root: Path  # the package or model directory, inside the caller's work directory
    sha256: str
    size: int
    meta: Meta | None = None
    requirements: list[str] = field(default_factory=list)
    flavors: list[str] = field(default_factory=list)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def detect_layout(files: list[str]) -> tuple[Kind, str]:
    """``(kind, prefix)`` from the archive's file names; ``prefix`` is "" or ``"folder/"``."""
    names = set(files)
    tops = {f.split("/", 1)[0] for f in files}
    prefix = ""
    if len(tops) == 1 and all("/" in f for f in files):
        prefix = next(iter(tops)) + "/"
    if MLMODEL in names or prefix + MLMODEL in names:
        return "mlflow", "" if MLMODEL in names else prefix
    if META in names or any(f in names for f in REQUIRED_FILES):
        return "seed", ""
    if prefix and any(prefix + f in names for f in REQUIRED_FILES):
        return "seed", prefix
    raise PackageInvalid([
        "neither an MLflow model (no MLmodel file at the root or in a single top-level folder) nor a model "
        "package (meta.json, app.py, requirements.txt and a model file at the root)"])


def check_mlmodel(root: Path, max_text_bytes: int) -> tuple[list[str], list[str]]:
    """Flavours of an MLflow model directory and its problems (YAML only: nothing is loaded)."""
    path = root / MLMODEL
    if path.stat().st_size > max_text_bytes:
        return [], [f"{MLMODEL}: {path.stat().st_size} bytes (at most {max_text_bytes})"]
    try:
        doc = yaml.safe_load(path.read_text("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        return [], [f"{MLMODEL}: not valid YAML ({str(e).splitlines()[0]})"]
    if not isinstance(doc, dict):
        return [], [f"{MLMODEL}: must be a YAML mapping"]
    flavors = doc.get("flavors")
    if not isinstance(flavors, dict) or not flavors:
        return [], [f"{MLMODEL}: no 'flavors' mapping"]
    problems: list[str] = []
    names = sorted(str(k) for k in flavors)
    if "python_function" not in flavors and "onnx" not in flavors:
        problems.append(f"{MLMODEL}: no python_function or onnx flavour, so the model server cannot load it "
                        f"(flavours: {', '.join(names)})")
    pyfunc = flavors.get("python_function")
    if isinstance(pyfunc, dict):
        for key in ("model_path", "data"):
            ref = pyfunc.get(key)
            if isinstance(ref, str) and not _exists_inside(root, ref):
                problems.append(f"{MLMODEL}: python_function {key} {ref!r} is not in the archive")
    onnx = flavors.get("onnx")
    if isinstance(onnx, dict):
        ref = onnx.get("data") or "model.onnx"
        if isinstance(ref, str) and not _exists_inside(root, ref):
            problems.append(f"{MLMODEL}: onnx data {ref!r} is not in the archive")
    return names, problems


def _exists_inside(root: Path, ref: str) -> bool:
    target = (root / ref).resolve()
    return target.is_relative_to(root.resolve()) and target.exists()


def prepare(zip_path: Path, work: Path, limits: PackageLimits) -> Prepared:
    """Validate ``zip_path`` and extract it under ``work`` (a private, empty-ish directory)."""
    report: ZipReport = inspect_zip(zip_path, limits)
    kind, prefix = detect_layout(report.files)
    dest = work / "extracted"
    dest.mkdir()
    extract_zip(zip_path, dest, report, limits)
    root = dest / prefix.rstrip("/") if prefix else dest
    prepared = Prepared(kind, root, sha256_file(zip_path), report.archive_size)
    if kind == "mlflow":
        prepared.flavors, problems = check_mlmodel(root, limits.max_text_bytes)
    else:
        prepared.meta, prepared.requirements, problems = check_package(root, limits.max_text_bytes)
    if problems:
        raise PackageInvalid(problems)
    return prepared
