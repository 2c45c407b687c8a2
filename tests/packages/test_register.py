"""Registration against a real MLflow server: a failure midway removes everything it created."""

from __future__ import annotations

import pytest
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlstack.packages import PackageLimits
from mlstack.packages.register import UploadOptions, model_dir_for, register_upload
from mlstack.packages.validate import prepare
from tests.utils import zips


@pytest.fixture
def prepared(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    p = prepare(zips.write(tmp_path, zips.build_zip(zips.seed_files())), work, PackageLimits())
    return p, model_dir_for(p, work)


class Boom(Exception):
    pass


def _failing_alias(*_a, **_k):
    raise Boom("alias service down")


@pytest.mark.parametrize("model_exists", [False, True])
def test_failure_midway_is_undone(mlflow_uri, workdir, prepared, monkeypatch, model_exists):
    client = MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    name = f"undo_model_{model_exists}".lower()
    pkg, model_dir = prepared
    if model_exists:
        register_upload(client, "undo-tests", name, pkg, model_dir, UploadOptions())
    exp = client.get_experiment_by_name("undo-tests") or client.get_experiment(client.create_experiment("undo-tests"))
    active_before = {r.info.run_id for r in client.search_runs([exp.experiment_id])}
    versions_before = [v.version for v in client.search_model_versions(f"name = '{name}'")]
    artifacts = workdir / "mlflow" / "artifacts"
    files_before = sorted(p for p in artifacts.rglob("*") if p.is_file())

    monkeypatch.setattr(client, "set_registered_model_alias", _failing_alias)
    with pytest.raises(Boom):
        register_upload(client, "undo-tests", name, pkg, model_dir, UploadOptions(aliases=["champion"]))

    assert [v.version for v in client.search_model_versions(f"name = '{name}'")] == versions_before
    assert {r.info.run_id for r in client.search_runs([exp.experiment_id])} == active_before
    deleted = client.search_runs([exp.experiment_id], run_view_type=ViewType.DELETED_ONLY)
    assert any(r.info.run_name == f"upload-{name}" for r in deleted)  # MLflow only soft-deletes runs
    assert sorted(p for p in artifacts.rglob("*") if p.is_file()) == files_before  # its artifacts are gone
    if not model_exists:
        with pytest.raises(MlflowException, match=r"not found|RESOURCE_DOES_NOT_EXIST"):
            client.get_registered_model(name)
