"""Write a validated package to MLflow as a new registry version; copy a version as a new version.

Nothing here runs before validation has passed. ``register_upload`` creates a run, logs the model
directory as the run's ``model`` artifact and registers it; if any step fails it deletes what it
created (version, registered model it created, artifacts, run) before re-raising, so a failed upload
leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mlstack.errors import NotFound, Unavailable
from mlstack.packages.validate import Prepared

log = logging.getLogger(__name__)
ARTIFACT_PATH = "model"
SOURCE_TAG = "mlstack.source"
COPIED_FROM_TAG = "mlstack.copied_from"


@dataclass
class UploadOptions:
    description: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)
    filename: str | None = None


def _missing(e: MlflowException) -> bool:
    return e.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(e).lower()


def experiment_id(client: MlflowClient, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return client.create_experiment(name)
    except MlflowException as e:  # created concurrently
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise Unavailable(f"cannot create MLflow experiment {name!r}: {e.message}") from None
        return exp.experiment_id


def version_tags(prepared: Prepared, opts: UploadOptions) -> dict[str, str]:
    tags = {SOURCE_TAG: "upload", "mlstack.package.kind": prepared.kind,
            "mlstack.package.sha256": prepared.sha256}
    if opts.filename:
        tags["mlstack.package.filename"] = opts.filename[:250]
    if prepared.kind == "mlflow":
        tags["mlstack.package.flavors"] = ",".join(prepared.flavors)
    if prepared.meta is not None:
        m = prepared.meta
        found = {"mlstack.package.name": m.name, "mlstack.package.version": m.version,
                 "mlstack.package.framework": m.framework, "mlstack.task": m.task,
                 "mlstack.package.model_file": m.model_file,
                 "mlstack.features": ",".join(m.features) if m.features else None,
                 # seed 000's hints, recorded only: the model server serves the package, nothing runs them
                 "mlstack.package.setup_commands": json.dumps(m.setup_commands)[:5000] if m.setup_commands else None,
                 "mlstack.package.start_commands": json.dumps(m.start_commands)[:5000] if m.start_commands else None,
                 "mlstack.package.ports": ",".join(map(str, m.ports)) if m.ports else None}
        tags.update({k: str(v) for k, v in found.items() if v is not None})
        from mlstack.packages.seed import unsatisfied

        if missing := unsatisfied(prepared.requirements):  # the model server may fail to load it
            tags["mlstack.package.unsatisfied_requirements"] = "; ".join(missing)[:5000]
        tags.update(m.tags)
    tags.update(opts.tags)  # the caller's tags win
    return tags


def model_dir_for(prepared: Prepared, work: Path) -> Path:
    """The MLflow model directory to log: the upload itself, or the package wrapped as a pyfunc."""
    if prepared.kind == "mlflow":
        return prepared.root
    assert prepared.meta is not None
    with warnings.catch_warnings():  # type-hint and input-example advice aimed at notebook users
        warnings.simplefilter("ignore")
        from mlstack.packages.pyfunc import save_pyfunc

        return save_pyfunc(prepared.root, work / "pyfunc", prepared.meta, prepared.requirements)


def register_upload(client: MlflowClient, experiment: str, name: str, prepared: Prepared, model_dir: Path,
                    opts: UploadOptions):
    """Log ``model_dir`` in a new run and register it as a new version of ``name``."""
    exp_id = experiment_id(client, experiment)
    run = client.create_run(exp_id, run_name=f"upload-{name}",
                            tags={SOURCE_TAG: "upload", "mlstack.package.kind": prepared.kind,
                                  "mlstack.package.sha256": prepared.sha256})
    run_id = run.info.run_id
    created_model = False
    mv = None
    try:
        if prepared.meta is not None:
            m = prepared.meta
            client.log_batch(run_id, params=[_param(k, v) for k, v in {
                "package_name": m.name, "package_version": m.version, "framework": m.framework,
                "model_file": m.model_file, "features": ",".join(m.features or [])}.items() if v])
        client.log_artifacts(run_id, str(model_dir), ARTIFACT_PATH)
        try:
            client.get_registered_model(name)
        except MlflowException as e:
            if not _missing(e):
                raise
            try:
                client.create_registered_model(name)
                created_model = True
            except MlflowException as e2:  # created concurrently by another upload
                if e2.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
        mv = client.create_model_version(
            name, source=f"{run.info.artifact_uri.rstrip('/')}/{ARTIFACT_PATH}", run_id=run_id,
            tags=version_tags(prepared, opts),
            description=opts.description if opts.description is not None else
            (prepared.meta.description if prepared.meta is not None else None),
        )
        for alias in opts.aliases:
            client.set_registered_model_alias(name, alias, mv.version)
        client.set_terminated(run_id, "FINISHED")
        return client.get_model_version(name, mv.version)
    except BaseException:
        _undo(client, name, run_id, run.info.artifact_uri, mv.version if mv else None, created_model)
        raise


def _param(key: str, value: str):
    from mlflow.entities import Param

    return Param(key, str(value)[:6000])


def _undo(client: MlflowClient, name: str, run_id: str, artifact_uri: str, version: str | None,
          created_model: bool) -> None:
    """Best-effort removal of everything a failed upload created."""
    log.warning("upload to %s failed: removing run %s%s", name, run_id, f" and version {version}" if version else "")
    if version is not None:
        with contextlib.suppress(Exception):
            client.delete_model_version(name, version)
    if created_model:
        with contextlib.suppress(Exception):
            if not client.search_model_versions(f"name = '{name}'", max_results=1):
                client.delete_registered_model(name)
    with contextlib.suppress(Exception):
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        get_artifact_repository(artifact_uri, tracking_uri=client.tracking_uri).delete_artifacts()
    with contextlib.suppress(Exception):
        client.delete_run(run_id)


def copy_version(client: MlflowClient, name: str, version: str, description: str | None,
                 tags: dict[str, str] | None, aliases: list[str]):
    """Register the model of ``name``/``version`` again as a new version, with edits applied.

    The new version points at the same source artifacts (no bytes are copied), keeps the source's
    run, tags and description unless edited, and records ``mlstack.copied_from``.
    """
    try:
        src = client.get_model_version(name, version)
    except MlflowException as e:
        if _missing(e):
            raise NotFound(f"model {name!r} has no version {version}") from None
        raise
    new_tags = {**dict(src.tags or {}), **(tags or {}), COPIED_FROM_TAG: f"{name}/{src.version}"}
    mv = client.create_model_version(
        name, source=src.source, run_id=src.run_id, tags=new_tags, run_link=src.run_link,
        description=src.description if description is None else description,
        model_id=getattr(src, "model_id", None),
    )
    try:
        for alias in aliases:
            client.set_registered_model_alias(name, alias, mv.version)
    except BaseException:
        with contextlib.suppress(Exception):
            client.delete_model_version(name, mv.version)
        raise
    return client.get_model_version(name, mv.version)
