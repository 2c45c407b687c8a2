"""Model packages: upload a zip as a new version; copy a version as a new version ("save as new version").

The upload body is read here with a byte cap (the multipart body is parsed from a size-limited
stream, so an oversize upload is refused with 413 while it arrives); everything else happens in
:mod:`mlstack.packages`.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

from fastapi import APIRouter, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.datastructures import UploadFile as StarletteUploadFile

from mlstack.api.deps import ServicesDep, allow
from mlstack.api.params import ModelNamePath, VersionPath
from mlstack.api.routes.models import ModelVersionView
from mlstack.errors import InvalidInput
from mlstack.packages import PackageInvalid, PackageLimits, PayloadTooLarge
from mlstack.packages.seed import CONTRACT as SEED_CONTRACT
from mlstack.packages.service import alias_problems, copy_as_new_version, parse_options, upload_package
from mlstack.tags import TagKey, TagValue
from mlstack_operator.contract import ModelAlias

router = APIRouter(prefix="/models", tags=["models"])
_CHUNK = 1024 * 1024

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": {
            "type": "object",
            "required": ["file"],
            "properties": {
                "file": {"type": "string", "format": "binary",
                         "description": "a .zip: an MLflow model directory, or a seed-000 package"},
                "description": {"type": "string", "maxLength": 5000},
                "tags": {"type": "string", "description": 'a JSON object of strings, e.g. {"team": "fraud"}'},
                "aliases": {"type": "string", "description": "comma-separated aliases to point at the new version"},
            },
        }}},
    },
}

_UPLOAD_DOC = f"""Upload a zip as a **new version** of model `name` (created if needed).

The zip holds either an MLflow model directory (`MLmodel` at the root or in one top-level folder;
it needs a `python_function` or `onnx` flavour) or seed 000's package, wrapped as an MLflow pyfunc:

```
{SEED_CONTRACT.strip()}
```

Refused with **422** and every problem listed (`problems`): zip-slip, absolute paths, symlinks and
special files, zip bombs (per-file and total size, compression ratio), too many entries, and any
content problem. An upload larger than the limit is refused with **413**. Nothing is written to MLflow
before the package has passed every check; limits come from `MLSTACK_PACKAGE_*` settings.
"""


class CopyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str | None = Field(None, max_length=5000, description="default: the source version's")
    tags: dict[TagKey, TagValue] | None = Field(
        None, description="set on the new version, over the source version's tags")
    aliases: list[ModelAlias] = Field(
        default_factory=list, max_length=20, description="aliases to point at the new version")

    @field_validator("aliases")
    @classmethod
    def _not_reserved(cls, v: list[str]) -> list[str]:
        if problems := alias_problems(v):
            raise ValueError("; ".join(problems))
        return v


def _invalid(e: PackageInvalid) -> JSONResponse:
    return JSONResponse({"detail": e.message, "problems": e.problems}, status_code=422)


async def _save_capped(upload: UploadFile | StarletteUploadFile, dest: Path, limit: int) -> int:
    size = 0
    with open(dest, "wb") as out:
        while chunk := await upload.read(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"upload larger than the limit of {limit} bytes")
            await asyncio.to_thread(out.write, chunk)
    return size


def _capped_request(request: Request, limits: PackageLimits) -> Request:
    """``request`` whose body stream raises :class:`PayloadTooLarge` past the limit."""
    cap = limits.max_upload_bytes + limits.form_overhead_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > cap:
        raise PayloadTooLarge(f"upload of {declared} bytes is larger than the limit of {limits.max_upload_bytes} "
                              "bytes (MLSTACK_PACKAGE_MAX_UPLOAD_BYTES)")
    received = 0

    async def receive():
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > cap:
                raise PayloadTooLarge(f"upload larger than the limit of {limits.max_upload_bytes} bytes "
                                      "(MLSTACK_PACKAGE_MAX_UPLOAD_BYTES)")
        return message

    return Request(request.scope, receive)


@router.post(
    "/{name}/versions", dependencies=[allow("create", "models")],
    status_code=201, openapi_extra=_UPLOAD_BODY, description=_UPLOAD_DOC,
    summary="Upload a model package (zip) as a new version",
    responses={201: {"description": "the new version"}, 413: {"description": "upload too large"},
               422: {"description": "refused: `detail` and the list of `problems`"}},
)
async def upload_version(name: ModelNamePath, request: Request, svc: ServicesDep) -> JSONResponse:
    limits = svc.config.packages
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidInput("expected a multipart/form-data body with a 'file' field holding a .zip")
    capped = _capped_request(request, limits)
    work = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="mlstack-upload-"))
    try:
        async with capped.form(max_files=1, max_fields=10) as form:
            upload = form.get("file")
            if not isinstance(upload, StarletteUploadFile):
                raise PackageInvalid(["missing the 'file' field (a .zip archive)"])
            zip_path = work / "upload.zip"
            await _save_capped(upload, zip_path, limits.max_upload_bytes)
            fields = {k: v if isinstance(v, str) else None for k in ("description", "tags", "aliases")
                      if (v := form.get(k)) is not None}
        opts, option_problems = parse_options(fields.get("description"), fields.get("tags"), fields.get("aliases"),
                                              upload.filename)
        version = await asyncio.to_thread(upload_package, svc.registry, svc.settings.mlflow_experiment, name,
                                          zip_path, work, opts, option_problems, limits)
    except PackageInvalid as e:
        return _invalid(e)
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)
    return JSONResponse(version, status_code=201)


@router.post(
    "/{name}/versions/{version}/copy", dependencies=[allow("create", "models")], status_code=201,
    response_model=ModelVersionView,
    summary="Save a version as a new version (optionally with an edited description, tags, aliases)",
    description="Seed 000's \"save as new version\": registers the same model artifacts again as a new "
                "version of the same model, with the source's description and tags unless edited, and "
                "tag `mlstack.copied_from`. 404 for an unknown model or version.",
    responses={404: {"description": "unknown model or version"}},
)
async def copy_version(name: ModelNamePath, version: VersionPath, svc: ServicesDep,
                       body: CopyBody | None = None) -> dict:
    body = body or CopyBody()
    return await asyncio.to_thread(copy_as_new_version, svc.registry, name, version, body.description, body.tags,
                                   body.aliases)
