"""What the routes call: form options, the upload pipeline (validate -> wrap -> register), copies."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow.exceptions import MlflowException

from mlstack.errors import Conflict, InvalidInput, MlstackError, NotFound, Unavailable
from mlstack.packages.limits import PackageLimits
from mlstack.packages.problems import PackageInvalid
from mlstack.packages.register import UploadOptions, copy_version, model_dir_for, register_upload
from mlstack.packages.validate import prepare
from mlstack.tags import tag_key_problem
from mlstack_operator.contract import ALIAS_MAX, ALIAS_PATTERN

ALIAS_RE = re.compile(ALIAS_PATTERN)
_RESERVED_ALIAS = re.compile(r"^(latest|v\d+|version\d+)$", re.IGNORECASE)  # MLflow refuses these
MAX_TAGS = 100
MAX_DESCRIPTION = 5000


def alias_problems(aliases: list[str]) -> list[str]:
    problems = []
    for a in aliases:
        if len(a) > ALIAS_MAX or not ALIAS_RE.match(a):
            problems.append(f"aliases: {a[:ALIAS_MAX + 1]!r} is not a valid alias (a letter, then letters, digits, "
                            f"'_' or '-', at most {ALIAS_MAX})")
        elif _RESERVED_ALIAS.match(a):
            problems.append(f"aliases: {a!r} is reserved by MLflow")
    return problems


def tag_problems(tags: dict[str, Any]) -> list[str]:
    problems = []
    if len(tags) > MAX_TAGS:
        problems.append(f"tags: {len(tags)} tags (at most {MAX_TAGS})")
    for k, v in tags.items():
        if (why := tag_key_problem(k)) is not None:
            problems.append(f"tags: key {k[:40]!r}: {why}")
        if not isinstance(v, str):
            problems.append(f"tags: value of {k[:40]!r} must be a string, got {type(v).__name__}")
        elif len(v) > 5000:
            problems.append(f"tags: value of {k[:40]!r} is longer than 5000 characters")
    return problems


def parse_options(description: str | None, tags: str | None, aliases: str | None,
                  filename: str | None = None) -> tuple[UploadOptions, list[str]]:
    """The upload's form fields: ``description``, ``tags`` (a JSON object) and ``aliases`` (comma list)."""
    problems: list[str] = []
    opts = UploadOptions(filename=filename)
    if description is not None:
        if len(description) > MAX_DESCRIPTION:
            problems.append(f"description: longer than {MAX_DESCRIPTION} characters")
        opts.description = description
    if tags is not None and tags.strip():
        try:
            parsed = json.loads(tags)
        except json.JSONDecodeError as e:
            parsed = None
            problems.append(f"tags: not valid JSON ({e.msg}); expected an object such as {{\"team\": \"fraud\"}}")
        if parsed is not None and not isinstance(parsed, dict):
            problems.append(f"tags: expected a JSON object of strings, got {type(parsed).__name__}")
        elif isinstance(parsed, dict):
            found = tag_problems(parsed)
            problems += found
            if not found:
                opts.tags = dict(parsed)
    if aliases is not None:
        names = [a.strip() for a in aliases.split(",") if a.strip()]
        found = alias_problems(names)
        problems += found
        if not found:
            opts.aliases = list(dict.fromkeys(names))
    return opts, problems


def _mlflow_error(e: MlflowException) -> MlstackError:
    """Bad input MLflow refuses is a 4xx; anything else means the registry is not usable (503)."""
    code = {"RESOURCE_DOES_NOT_EXIST": NotFound, "NOT_FOUND": NotFound, "INVALID_PARAMETER_VALUE": InvalidInput,
            "RESOURCE_ALREADY_EXISTS": Conflict}.get(e.error_code, Unavailable)
    return code(f"MLflow registry: {e.message}")


def upload_package(registry, experiment: str, name: str, zip_path: Path, work: Path, opts: UploadOptions,
                   option_problems: list[str], limits: PackageLimits) -> dict[str, Any]:
    """Validate the zip at ``zip_path`` (inside the private ``work`` dir) and register it as a new version.

    Raises :class:`PackageInvalid` listing every problem before anything leaves ``work``.
    """
    try:
        prepared = prepare(zip_path, work, limits)
    except PackageInvalid as e:
        raise PackageInvalid(option_problems + e.problems) from None
    if option_problems:
        raise PackageInvalid(option_problems)
    model_dir = model_dir_for(prepared, work)
    with _mlflow_errors():
        mv = register_upload(registry.client, experiment, name, prepared, model_dir, opts)
    registry.forget(name)
    return registry.version_dict(mv)


@contextmanager
def _mlflow_errors() -> Iterator[None]:
    """MLflow's exceptions as the API's domain errors."""
    try:
        yield
    except MlflowException as e:
        raise _mlflow_error(e) from None
    except OSError as e:
        raise Unavailable(f"MLflow unreachable: {e}") from None


def copy_as_new_version(registry, name: str, version: str, description: str | None,
                        tags: dict[str, str] | None, aliases: list[str]) -> dict[str, Any]:
    with _mlflow_errors():
        mv = copy_version(registry.client, name, version, description, tags, aliases)
    registry.forget(name)
    return registry.version_dict(mv)
