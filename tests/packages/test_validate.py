"""The zip validator without a server: each unsafe or broken archive is refused with a clear reason."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import zipfile
from pathlib import Path

import pytest

from mlstack.packages import PackageInvalid, PackageLimits
from mlstack.packages.archive import check_name, inspect_zip
from mlstack.packages.seed import check_app, check_meta, check_requirements, unsatisfied
from mlstack.packages.validate import detect_layout, prepare
from tests.utils import zips

MiB = 1024 * 1024


def limits(**over) -> PackageLimits:
    base = {"max_upload_bytes": 8 * MiB, "max_entries": 100, "max_entry_bytes": 4 * MiB,
            "max_total_bytes": 6 * MiB, "max_ratio": 100.0, "ratio_min_bytes": 256 * 1024}
    return PackageLimits(**{**base, **over})


def refused(tmp_path: Path, data: bytes, lim: PackageLimits | None = None) -> list[str]:
    work = tmp_path / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    path = zips.write(tmp_path, data)
    with pytest.raises(PackageInvalid) as exc:
        prepare(path, work, lim or limits())
    assert all(p in exc.value.message for p in exc.value.problems)
    return exc.value.problems


def nothing_extracted(tmp_path: Path) -> bool:
    return not (tmp_path / "work" / "extracted").exists()


def test_valid_seed_package(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    p = prepare(zips.write(tmp_path, zips.build_zip(zips.seed_files())), work, limits())
    assert p.kind == "seed" and p.meta is not None and p.meta.name == "iris-classifier"
    assert p.requirements == ["scikit-learn>=1.0", "joblib"]
    assert (p.root / "app.py").is_file() and p.root == work / "extracted"
    assert len(p.sha256) == 64


def test_valid_seed_package_class_style_in_a_folder(tmp_path):
    files = {f"pkg/{k}": v for k, v in zips.seed_files(app=zips.APP_CLASS).items()}
    work = tmp_path / "work"
    work.mkdir()
    p = prepare(zips.write(tmp_path, zips.build_zip(files)), work, limits())
    assert p.kind == "seed" and p.root == work / "extracted" / "pkg"


def test_valid_mlflow_model(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    p = prepare(zips.write(tmp_path, zips.sklearn_model_zip(tmp_path)), work, limits())
    assert p.kind == "mlflow" and "python_function" in p.flavors and "sklearn" in p.flavors
    assert (p.root / "MLmodel").is_file() and p.root.name == "iris_sklearn"


def test_zip_slip(tmp_path):
    problems = refused(tmp_path, zips.zip_slip())
    assert problems == ["entry '../../evil.py': path traversal ('..') outside the archive"]
    assert nothing_extracted(tmp_path) and not (tmp_path / "evil.py").exists()


def test_absolute_path(tmp_path):
    assert refused(tmp_path, zips.absolute_path()) == ["entry '/etc/cron.d/evil': absolute path"]
    assert nothing_extracted(tmp_path)


@pytest.mark.parametrize("name, reason", [
    ("C:/Windows/evil.dll", "absolute path"),
    ("..\\..\\evil.py", "path traversal"),
    ("a/../../b", "path traversal"),
    ("ok/./fine.txt", None),
])
def test_names(name, reason):
    normalised, why = check_name(name)
    if reason is None:
        assert why is None and normalised == "ok/fine.txt"
    else:
        assert normalised is None and reason in why


def test_symlink(tmp_path):
    assert refused(tmp_path, zips.symlink()) == ["entry 'link': symbolic link (links are not allowed)"]
    assert nothing_extracted(tmp_path)


def test_special_file(tmp_path):
    data = zips.with_entry(zips.seed_files(), zips.raw_entry("fifo", stat.S_IFIFO | 0o644), b"")
    assert "special file" in refused(tmp_path, data)[0]


def test_bomb_by_ratio(tmp_path):
    problems = refused(tmp_path, zips.ratio_bomb(mib=3))
    assert len(problems) == 1 and problems[0].startswith("entry 'zeros.bin': compression ratio")
    assert "exceeds 100:1 (zip bomb?)" in problems[0]
    assert nothing_extracted(tmp_path)


def test_bomb_by_total_size(tmp_path):
    problems = refused(tmp_path, zips.total_bomb(n=4, each=2 * MiB))
    assert problems == ["total uncompressed size 8.0 MiB exceeds the limit of 6.0 MiB (zip bomb?)"]
    assert nothing_extracted(tmp_path)


def test_entry_too_large(tmp_path):
    data = zips.build_zip({**zips.seed_files(), "big.bin": os.urandom(5 * MiB)}, zipfile.ZIP_STORED)
    problems = refused(tmp_path, data, limits(max_total_bytes=100 * MiB))
    assert problems == ["entry 'big.bin': 5.0 MiB uncompressed exceeds the per-file limit of 4.0 MiB"]


def test_too_many_entries(tmp_path):
    assert refused(tmp_path, zips.many_entries(200)) == ["too many entries: 204 (at most 100)"]


def test_every_unsafe_entry_is_listed(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, content in zips.seed_files().items():
            zf.writestr(name, content)
        zf.writestr(zips.raw_entry("../up"), b"x")
        zf.writestr(zips.raw_entry("/abs"), b"x")
        zf.writestr(zips.raw_entry("ln", stat.S_IFLNK | 0o777), b"/etc")
    problems = refused(tmp_path, buf.getvalue())
    assert len(problems) == 3
    assert [p.split(":")[1].strip().split(" (")[0] for p in problems] == [
        "path traversal", "absolute path", "symbolic link"]


def test_not_a_zip(tmp_path):
    assert refused(tmp_path, b"PK\x03\x04 definitely not a zip")[0].startswith("not a valid zip archive")


def test_many_small_bombs_by_overall_ratio(tmp_path):
    data = zips.build_zip({**zips.seed_files(), **{f"z{i}.bin": b"\0" * 200_000 for i in range(10)}})
    problems = refused(tmp_path, data)
    assert len(problems) == 1 and problems[0].startswith("overall compression ratio")


def test_inspect_reads_no_member(tmp_path):
    """The central directory alone decides: a bomb is refused without decompressing it."""
    path = zips.write(tmp_path, zips.ratio_bomb(mib=50))
    with pytest.raises(PackageInvalid, match="zip bomb"):
        inspect_zip(path, limits())


def test_neither_layout(tmp_path):
    problems = refused(tmp_path, zips.build_zip({"readme.md": b"hi", "weights.bin": b"\1\2"}))
    assert problems[0].startswith("neither an MLflow model (no MLmodel file")


def test_missing_files(tmp_path):
    files = zips.seed_files()
    del files["app.py"], files["requirements.txt"]
    files["model.joblib"] = b""
    problems = refused(tmp_path, zips.build_zip(files))
    assert problems == ["missing app.py at the package root", "missing requirements.txt at the package root",
                        "model file 'model.joblib' is empty"]


def test_missing_model_file(tmp_path):
    files = zips.seed_files(model_file="weights/model.pkl")
    assert refused(tmp_path, zips.build_zip(files)) == [
        "model file 'weights/model.pkl' named in meta.json is not in the package"]


def test_bad_meta_json_lists_every_field(tmp_path):
    files = zips.seed_files()
    files["meta.json"] = json.dumps({"name": "bad name!", "framework": "cobol", "model_file": "../x",
                                     "input_schema": {"features": ["a", "a"]}, "colour": "blue"}).encode()
    problems = refused(tmp_path, zips.build_zip(files))
    assert "meta.json: name: String should match pattern" in problems[0]
    joined = "\n".join(problems)
    for needle in ["meta.json: framework: Input should be 'sklearn'",
                   "meta.json: model_file: Value error, must be a relative path inside the package",
                   "meta.json: input_schema.features: Value error, feature names must be unique, repeated: a",
                   "meta.json: colour: unknown field"]:
        assert needle in joined
    assert len(problems) == 5  # name, framework, model_file, features, colour (version is optional: seed 000)


def test_meta_json_not_json():
    meta, problems = check_meta("{'name': 1}")
    assert meta is None and problems[0].startswith("meta.json: not valid JSON (Expecting property name")
    assert check_meta("[1, 2]")[1] == ["meta.json: must be a JSON object, got list"]


def test_app_without_predict(tmp_path):
    files = zips.seed_files(app="import joblib\n\ndef infer(model, data):\n    return data\n")
    problems = refused(tmp_path, zips.build_zip(files))
    assert problems == ["app.py: defines no entry point: expected a top-level function predict(model, data) "
                        "or a class Model with __init__(self, model_path) and predict(self, data)"]


def test_app_syntax_error(tmp_path):
    files = zips.seed_files(app="def predict(model, data)\n    return 1\n")
    problems = refused(tmp_path, zips.build_zip(files))
    assert problems == ["app.py: syntax error at line 1: expected ':'"]


@pytest.mark.parametrize("source, problem", [
    ("def predict(data):\n    pass\n", "predict takes 1 positional argument(s), expected predict(model, data)"),
    ("async def predict(model, data):\n    pass\n", "predict must be a plain function, not async"),
    ("def predict(model, data, *, scale):\n    pass\n", "required keyword-only argument(s) scale"),
    ("def predict(m, d):\n    pass\ndef load_model():\n    pass\n", "load_model takes 0 positional"),
    ("class Model:\n    def run(self, data):\n        pass\n", "class Model has no predict(self, data) method"),
    ("class Model:\n    def __init__(self):\n        pass\n    def predict(self, data):\n        pass\n",
     "Model.__init__ takes 1 positional argument(s)"),
    ("def predict(*args):\n    pass\n", None),
    ("class Model:\n    def predict(self, data):\n        pass\n", None),
    ("raise SystemExit('never executed')\ndef predict(model, data):\n    pass\n", None),
])
def test_app_signatures(source, problem):
    _, problems = check_app(source.encode())
    if problem is None:
        assert problems == []
    else:
        assert len(problems) == 1 and problem in problems[0]


def test_app_not_utf8():
    assert check_app(b"\xff\xfe def predict")[1][0].startswith("app.py: not UTF-8 text")


def test_requirements():
    reqs, problems = check_requirements(
        "numpy>=1.26  # arrays\n\n-r other.txt\n--index-url https://evil.example/simple\n"
        "scikit-learn==1.*x\nevil @ https://evil.example/evil.whl\npandas[parquet]>=2; python_version>'3.8'\n")
    assert reqs == ["numpy>=1.26", "pandas[parquet]>=2; python_version > \"3.8\""]
    assert [p.split(": ", 2)[1] for p in problems] == ["line 3", "line 4", "line 5", "line 6"]
    assert "pip options are not allowed (-r)" in problems[0]
    assert "not a valid requirement" in problems[2]
    assert "direct URL requirements are not allowed" in problems[3]


def test_every_content_problem_at_once(tmp_path):
    files = zips.seed_files(app="def predict(:\n")
    files["requirements.txt"] = b"-e .\n"
    files["meta.json"] = b'{"name": "bad name!", "ports": [0]}'
    problems = refused(tmp_path, zips.build_zip(files))
    assert any(p.startswith("meta.json: name") for p in problems)
    assert any(p.startswith("meta.json: ports.0: Input should be greater than or equal to 1") for p in problems)
    assert any(p.startswith("app.py: syntax error") for p in problems)
    assert any(p.startswith("requirements.txt: line 1: pip options") for p in problems)


def test_mlmodel_without_loadable_flavour(tmp_path):
    data = zips.build_zip({"MLmodel": b"flavors:\n  spark:\n    model_data: sparkml\n"})
    assert refused(tmp_path, data) == [
        "MLmodel: no python_function or onnx flavour, so the model server cannot load it (flavours: spark)"]
    data = zips.build_zip({"MLmodel": b"flavors:\n  python_function:\n    model_path: model.pkl\n"})
    assert refused(tmp_path, data) == ["MLmodel: python_function model_path 'model.pkl' is not in the archive"]
    assert refused(tmp_path, zips.build_zip({"MLmodel": b"a: [b"}))[0].startswith("MLmodel: not valid YAML")


def test_layout_detection():
    assert detect_layout(["MLmodel", "model.pkl"]) == ("mlflow", "")
    assert detect_layout(["m/MLmodel", "m/model.pkl"]) == ("mlflow", "m/")
    assert detect_layout(["meta.json", "app.py"]) == ("seed", "")
    assert detect_layout(["p/meta.json", "p/app.py"]) == ("seed", "p/")


def test_macos_junk_is_ignored(tmp_path):
    files = {**zips.seed_files(), "__MACOSX/._app.py": b"junk", ".DS_Store": b"junk"}
    work = tmp_path / "work"
    work.mkdir()
    p = prepare(zips.write(tmp_path, zips.build_zip(files)), work, limits())
    assert not (p.root / "__MACOSX").exists() and not (p.root / ".DS_Store").exists()


def test_unsatisfied_requirements():
    assert unsatisfied(["numpy>=1", "scikit-learn", "numpy<1; python_version < '3'"]) == []
    missing = unsatisfied(["surely-not-installed-pkg==1.0", "numpy<1"])
    assert missing[0] == "surely-not-installed-pkg==1.0" and missing[1].startswith("numpy<1 (installed: ")


def test_symlink_bits_without_unix_create_system(tmp_path):
    info = zips.raw_entry("link", stat.S_IFLNK | 0o777)
    info.create_system = 0
    assert "symbolic link" in refused(tmp_path, zips.with_entry(zips.seed_files(), info, b"/etc"))[0]


SEED_META = {"description": "iris classifier, as seed 000 ships it",
             "setup_commands": ["pip install -r requirements.txt"], "start_commands": ["python app.py"],
             "ports": [8000]}


def test_seed_000_meta_json_as_it_is(tmp_path):
    files = zips.seed_files()
    files["meta.json"] = json.dumps(SEED_META).encode()
    (tmp_path / "work").mkdir()
    p = prepare(zips.write(tmp_path, zips.build_zip(files)), tmp_path / "work", limits())
    assert p.kind == "seed" and p.meta is not None
    assert p.meta.model_file == "model.joblib" and p.meta.framework == "sklearn"  # the one weights file
    assert p.meta.start_commands == ["python app.py"] and p.meta.ports == [8000]
    assert p.meta.name is None and p.meta.features is None


def test_seed_000_meta_json_with_two_weights_files_asks_for_model_file(tmp_path):
    files = zips.seed_files()
    files["meta.json"] = json.dumps(SEED_META).encode()
    files["extra.onnx"] = b"\1\2"
    assert refused(tmp_path, zips.build_zip(files)) == [
        "meta.json: no model_file, and the package does not hold exactly one weights file besides meta.json, "
        "app.py, requirements.txt (found: extra.onnx, model.joblib); name it in meta.json as \"model_file\""]
