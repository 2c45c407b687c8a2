"""Model URIs to local MLflow model directories.

``models:/NAME@ALIAS`` and ``models:/NAME/VERSION`` are resolved through the registry to a version
and downloaded once into ``model_cache_dir/NAME/VERSION`` (the MLflow server proxies artifacts, so
no object-store credentials are needed). ``runs:/…`` and other artifact URIs are downloaded into the
cache too; a local directory is used in place.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_MODELS_RE = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>[^/]+))/?$")
_COMPLETE = ".mlstack-complete"


@dataclass(frozen=True)
class ModelRef:
    uri: str
    name: str  # default v2 model name
    registered_name: str | None = None
    alias: str | None = None
    version: str | None = None


def parse_model_uri(uri: str) -> ModelRef:
    """Parse without any I/O; the name is known at once (the version of an alias only after resolving)."""
    if uri.startswith("models:/"):
        m = _MODELS_RE.match(uri)
        if not m:
            raise ValueError(f"bad model URI {uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
        return ModelRef(uri, m["name"], m["name"], m["alias"], m["version"])
    if uri.startswith("runs:/"):
        parts = [p for p in uri[len("runs:/"):].split("/") if p]
        if len(parts) < 2:
            raise ValueError(f"bad model URI {uri!r}: expected runs:/RUN_ID/ARTIFACT_PATH")
        return ModelRef(uri, parts[-1])
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    if "://" not in uri:
        path = Path(uri).expanduser().resolve()
        return ModelRef(str(path), path.name or "model")
    return ModelRef(uri, uri.rstrip("/").rsplit("/", 1)[-1] or "model")


def _download(artifact_uri: str, dest: Path, tracking_uri: str) -> Path:
    """Download into ``dest`` atomically (temp dir + rename); reuse a complete earlier download."""
    if (dest / _COMPLETE).exists():
        log.info("using cached model %s", dest)
        return dest
    import mlflow.artifacts

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        log.info("downloading %s into %s", artifact_uri, dest)
        local = Path(mlflow.artifacts.download_artifacts(
            artifact_uri=artifact_uri, dst_path=str(tmp), tracking_uri=tracking_uri, registry_uri=tracking_uri,
        ))
        (local / _COMPLETE).touch()
        if dest.exists():
            shutil.rmtree(dest)
        local.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def fetch_model(ref: ModelRef, tracking_uri: str, cache_dir: Path) -> tuple[Path, ModelRef]:
    """Return the local model directory for ``ref`` and ``ref`` with its version filled in."""
    import mlflow

    # some artifact repositories (models:/ -> logged model) resolve through the global URIs, not the
    # arguments passed down: this is a server process serving one model, so set them for the process
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    if ref.registered_name is not None:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        if ref.alias is not None:
            mv = client.get_model_version_by_alias(ref.registered_name, ref.alias)
        else:
            mv = client.get_model_version(ref.registered_name, str(ref.version))
        version = str(mv.version)
        resolved = ModelRef(ref.uri, ref.name, ref.registered_name, ref.alias, version)
        dest = cache_dir / ref.registered_name / version
        return _download(f"models:/{ref.registered_name}/{version}", dest, tracking_uri), resolved
    if "://" not in ref.uri and ":/" not in ref.uri:
        path = Path(ref.uri)
        if not path.is_dir():
            raise FileNotFoundError(f"model directory {path} does not exist")
        return path, ref
    digest = hashlib.sha256(ref.uri.encode()).hexdigest()[:16]
    return _download(ref.uri, cache_dir / "uris" / digest, tracking_uri), ref
