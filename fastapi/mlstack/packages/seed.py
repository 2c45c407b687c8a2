"""Seed 000's model package: ``meta.json`` + ``app.py`` + ``requirements.txt`` + a model file.

Everything here is static: ``meta.json`` is parsed as JSON against :class:`Meta`, ``app.py`` is parsed
with :mod:`ast` (never imported or executed), ``requirements.txt`` with :mod:`packaging`. Each check
returns a list of problems so that a refused package lists all of them at once.

The contract is :data:`CONTRACT` (also shown in the API docs).
"""

from __future__ import annotations

import ast
import json
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mlstack_operator.contract import ModelName

META, APP, REQUIREMENTS = "meta.json", "app.py", "requirements.txt"
REQUIRED_FILES = (META, APP, REQUIREMENTS)
FRAMEWORKS = ("sklearn", "xgboost", "lightgbm", "pytorch", "tensorflow", "onnx", "custom")
MAX_FEATURES = 1000
MAX_REQUIREMENTS = 200

CONTRACT = """\
meta.json         {"name": "iris-classifier", "version": "1.0.0", "framework": "sklearn",
                   "model_file": "model.joblib",
                   "input_schema": {"features": ["sepal_length", ...], "dtype": "double"},
                   "task": "classification",                    # optional
                   "description": "...", "author": "...",       # optional
                   "tags": {"team": "fraud"}}                   # optional, str -> str
                  seed 000's own meta.json is accepted as it is: {"description": "...",
                   "setup_commands": ["pip install -r requirements.txt"], "start_commands": ["python app.py"],
                   "ports": [8000]}; the commands and ports are recorded as tags, never run (the model
                   server serves the package); name, version, framework, model_file and input_schema are
                   then optional: the model file is the one weights file beside app.py, the framework
                   follows its extension, and without input_schema the version has no signature
app.py            either   def predict(model, data)  (+ optional  def load_model(path))
                  or       class Model:  def __init__(self, model_path)  +  def predict(self, data)
requirements.txt  PEP 508 requirement lines; no pip options (-r, -e, --index-url...), no URLs
<model_file>      the file meta.json names, loaded by load_model(path) or Model(path); without
                  load_model a .pkl/.pickle/.joblib file is loaded with joblib, a .onnx file with
                  onnxruntime, anything else is passed as its path

``data`` is a pandas DataFrame whose columns are ``input_schema.features``; ``predict`` returns one
prediction per row (list, numpy array, pandas Series or DataFrame).
"""

Feature = Annotated[str, Field(min_length=1, max_length=200)]
Command = Annotated[str, Field(min_length=1, max_length=2000)]
MAX_COMMANDS = 50
FRAMEWORK_BY_SUFFIX = {".joblib": "sklearn", ".pkl": "sklearn", ".pickle": "sklearn", ".onnx": "onnx",
                       ".pt": "pytorch", ".pth": "pytorch", ".h5": "tensorflow", ".keras": "tensorflow",
                       ".ubj": "xgboost", ".bst": "xgboost", ".txt": "lightgbm"}
NOT_WEIGHTS = {".py", ".md", ".rst", ".cfg", ".toml", ".ini", ".yaml", ".yml", ".sh"}


class InputSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")

    features: list[Feature] = Field(..., min_length=1, max_length=MAX_FEATURES,
                                    description="column names, in the order rows are sent")
    dtype: Literal["double", "float", "long", "integer"] = "double"

    @field_validator("features")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        dupes = sorted({f for f in v if v.count(f) > 1})
        if dupes:
            raise ValueError(f"feature names must be unique, repeated: {', '.join(dupes)}")
        return v


class Meta(BaseModel):
    """``meta.json``: unknown keys are refused so that a typo is reported, not ignored."""

    model_config = ConfigDict(extra="forbid")

    name: ModelName | None = None
    version: str | None = Field(None, min_length=1, max_length=64)
    framework: Literal[FRAMEWORKS] | None = Field(  # type: ignore[valid-type]
        None, description=f"one of {', '.join(FRAMEWORKS)}; default: from the model file's extension")
    model_file: str | None = Field(None, min_length=1, max_length=255,
                                   description="path of the model file in the package; default: the only "
                                               "file beside meta.json, app.py and requirements.txt")
    input_schema: InputSchema | None = None
    task: Literal["classification", "regression", "other"] = "classification"
    description: str | None = Field(None, max_length=5000)
    author: str | None = Field(None, max_length=200)
    tags: dict[Annotated[str, Field(min_length=1, max_length=250)],
               Annotated[str, Field(max_length=5000)]] = Field(default_factory=dict)
    # seed 000's deployment hints: recorded (tags), never executed
    setup_commands: list[Command] = Field(default_factory=list, max_length=MAX_COMMANDS)
    start_commands: list[Command] = Field(default_factory=list, max_length=MAX_COMMANDS)
    ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(default_factory=list, max_length=MAX_COMMANDS)

    @property
    def features(self) -> list[str] | None:
        return list(self.input_schema.features) if self.input_schema is not None else None

    @field_validator("model_file")
    @classmethod
    def _relative(cls, v: str | None) -> str | None:
        if v is None:
            return v
        p = PurePosixPath(v.replace("\\", "/"))
        if p.is_absolute() or ".." in p.parts:
            raise ValueError("must be a relative path inside the package")
        if str(p) in REQUIRED_FILES:
            raise ValueError(f"must name the model file, not {p}")
        return str(p)


def _loc(err: dict) -> str:
    return ".".join(str(x) for x in err["loc"]) or "(root)"


def check_meta(text: str) -> tuple[Meta | None, list[str]]:
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as e:
        return None, [f"{META}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})"]
    if not isinstance(raw, dict):
        return None, [f"{META}: must be a JSON object, got {type(raw).__name__}"]
    try:
        return Meta.model_validate(raw), []
    except ValidationError as e:
        problems = []
        for err in e.errors():
            msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
            problems.append(f"{META}: {_loc(err)}: {msg}")
        return None, problems


def _positional(fn: ast.FunctionDef) -> int:
    """How many positional arguments ``fn`` accepts (a large number if it has ``*args``)."""
    a = fn.args
    return 10**6 if a.vararg else len(a.posonlyargs) + len(a.args)


def _required_kwonly(fn: ast.FunctionDef) -> list[str]:
    return [k.arg for k, d in zip(fn.args.kwonlyargs, fn.args.kw_defaults, strict=True) if d is None]


def _signature_problem(fn: ast.AST, label: str, needed: int, usage: str) -> str | None:
    if isinstance(fn, ast.AsyncFunctionDef):
        return f"{APP}: {label} must be a plain function, not async (expected {usage})"
    assert isinstance(fn, ast.FunctionDef)
    if _positional(fn) < needed:
        return f"{APP}: {label} takes {_positional(fn)} positional argument(s), expected {usage}"
    if kw := _required_kwonly(fn):
        return f"{APP}: {label} has required keyword-only argument(s) {', '.join(kw)}; expected {usage}"
    return None


def check_app(source: bytes) -> tuple[str | None, list[str]]:
    """The entry-point style (``"function"`` or ``"class"``) of app.py, and its problems."""
    try:
        text = source.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, [f"{APP}: not UTF-8 text ({e.reason} at byte {e.start})"]
    try:
        tree = ast.parse(text, filename=APP)
    except SyntaxError as e:
        return None, [f"{APP}: syntax error at line {e.lineno}: {e.msg}"]
    except ValueError as e:  # e.g. NUL bytes
        return None, [f"{APP}: cannot be parsed ({e})"]
    defs: dict[str, ast.AST] = {}
    for node in tree.body:  # only top-level definitions count; the last one wins, as at runtime
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            defs[node.name] = node
    problems: list[str] = []
    fn, cls = defs.get("predict"), defs.get("Model")
    if fn is not None and not isinstance(fn, ast.ClassDef):
        if p := _signature_problem(fn, "predict", 2, "predict(model, data)"):
            problems.append(p)
        loader = defs.get("load_model")
        if loader is not None:
            if isinstance(loader, ast.ClassDef):
                problems.append(f"{APP}: load_model must be a function load_model(path), found a class")
            elif p := _signature_problem(loader, "load_model", 1, "load_model(path)"):
                problems.append(p)
        return "function", problems
    if isinstance(cls, ast.ClassDef):
        methods = {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
        if "predict" not in methods:
            problems.append(f"{APP}: class Model has no predict(self, data) method")
        elif p := _signature_problem(methods["predict"], "Model.predict", 2, "predict(self, data)"):
            problems.append(p)
        if "__init__" in methods and (p := _signature_problem(methods["__init__"], "Model.__init__", 2,
                                                              "__init__(self, model_path)")):
            problems.append(p)
        return "class", problems
    return None, [f"{APP}: defines no entry point: expected a top-level function predict(model, data) "
                  "or a class Model with __init__(self, model_path) and predict(self, data)"]


def check_requirements(text: str) -> tuple[list[str], list[str]]:
    """The requirement lines (normalised) and the problems found."""
    from packaging.requirements import InvalidRequirement, Requirement

    reqs: list[str] = []
    problems: list[str] = []
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            problems.append(f"{REQUIREMENTS}: line {n}: pip options are not allowed ({line.split()[0]})")
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement as e:
            problems.append(f"{REQUIREMENTS}: line {n}: not a valid requirement ({str(e).splitlines()[0]})")
            continue
        if req.url:
            problems.append(f"{REQUIREMENTS}: line {n}: direct URL requirements are not allowed ({req.name} @ ...)")
            continue
        reqs.append(str(req))
    if len(reqs) > MAX_REQUIREMENTS:
        problems.append(f"{REQUIREMENTS}: {len(reqs)} requirements (at most {MAX_REQUIREMENTS})")
    return reqs, problems


def unsatisfied(requirements: list[str]) -> list[str]:
    """Requirements this Python environment (the API's, like the model server's) does not satisfy."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    missing = []
    for line in requirements:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            installed = version(req.name)
        except PackageNotFoundError:
            missing.append(line)
            continue
        if req.specifier and not req.specifier.contains(installed, prereleases=True):
            missing.append(f"{line} (installed: {installed})")
    return missing


def _read_text(path: Path, max_bytes: int, problems: list[str]) -> bytes | None:
    name = path.name
    if not path.is_file():
        problems.append(f"missing {name} at the package root")
        return None
    size = path.stat().st_size
    if size > max_bytes:
        problems.append(f"{name}: {size} bytes (at most {max_bytes})")
        return None
    return path.read_bytes()


def check_package(root: Path, max_text_bytes: int) -> tuple[Meta | None, list[str], list[str]]:
    """Validate an extracted seed-000 package: ``(meta, requirements, problems)``."""
    problems: list[str] = []
    meta = None
    reqs: list[str] = []
    raw = _read_text(root / META, max_text_bytes, problems)
    if raw is not None:
        try:
            meta, found = check_meta(raw.decode("utf-8"))
        except UnicodeDecodeError:
            found = [f"{META}: not UTF-8 text"]
        problems += found
    raw = _read_text(root / APP, max_text_bytes, problems)
    if raw is not None:
        problems += check_app(raw)[1]
    raw = _read_text(root / REQUIREMENTS, max_text_bytes, problems)
    if raw is not None:
        try:
            reqs, found = check_requirements(raw.decode("utf-8"))
        except UnicodeDecodeError:
            found = [f"{REQUIREMENTS}: not UTF-8 text"]
        problems += found
    if meta is not None:
        meta, found = complete_meta(root, meta)
        problems += found
    if meta is not None:
        model = root / meta.model_file  # type: ignore[operator]
        if not model.is_file():
            problems.append(f"model file {meta.model_file!r} named in {META} is not in the package")
        elif model.stat().st_size == 0:
            problems.append(f"model file {meta.model_file!r} is empty")
    return meta, reqs, problems


def _weights_candidates(root: Path) -> list[str]:
    names = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if (not p.is_file() or rel in REQUIRED_FILES or p.suffix.lower() in NOT_WEIGHTS
                or any(part.startswith((".", "__")) for part in p.relative_to(root).parts)):
            continue
        names.append(rel)
    return names


def complete_meta(root: Path, meta: Meta) -> tuple[Meta | None, list[str]]:
    """Fill in what seed 000's meta.json leaves out: the model file (the one weights file in the package) and
    the framework (from its extension). Returns the completed meta, or None with the problems."""
    update: dict = {}
    model_file = meta.model_file
    if model_file is None:
        found = _weights_candidates(root)
        if len(found) != 1:
            listed = ", ".join(found[:10]) if found else "none"
            return None, [f"{META}: no model_file, and the package does not hold exactly one weights file "
                          f"besides {', '.join(REQUIRED_FILES)} (found: {listed}); name it in {META} as "
                          '"model_file"']
        model_file = update["model_file"] = found[0]
    if meta.framework is None:
        update["framework"] = FRAMEWORK_BY_SUFFIX.get(PurePosixPath(model_file).suffix.lower(), "custom")
    return (meta.model_copy(update=update) if update else meta), []
