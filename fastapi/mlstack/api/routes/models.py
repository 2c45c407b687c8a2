from __future__ import annotations

import asyncio

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from mlstack.api.deps import ServicesDep, allow
from mlstack.api.params import AliasPath, ModelNamePath, VersionPath
from mlstack.tags import TagKey, TagValue
from mlstack_operator.contract import ModelVersion

router = APIRouter(prefix="/models", tags=["models"])


class AliasBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: ModelVersion


class EditBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str | None = Field(None, max_length=5000)
    tags: dict[TagKey, TagValue] | None = Field(None, max_length=100)


class ModelVersionView(BaseModel):
    """One registered version (``Registry.version_dict``)."""
    version: str
    created_at: str | None = Field(description="ISO 8601")
    run_id: str | None = Field(description="the MLflow run that logged it")
    status: str | None = Field(description="MLflow's status, e.g. READY")
    description: str
    tags: dict[str, str]
    aliases: list[str] = Field(description="aliases pointing at this version")
    metrics: dict[str, float] = Field(description="the run's metrics (empty when the run is gone)")


class RegisteredModelView(BaseModel):
    """A registered model with its versions, newest first (``Registry.get_model``)."""
    name: str
    description: str
    tags: dict[str, str]
    aliases: dict[str, str] = Field(description="alias -> version")
    created_at: str | None = Field(description="ISO 8601")
    versions: list[ModelVersionView]


@router.get("", dependencies=[allow("list", "models")], summary="Registered models with versions, aliases and metrics")
async def list_models(svc: ServicesDep) -> list[RegisteredModelView]:
    return await asyncio.to_thread(svc.registry.list_models)


@router.get("/{name}", dependencies=[allow("get", "models")], summary="One registered model")
async def get_model(name: ModelNamePath, svc: ServicesDep) -> RegisteredModelView:
    return await asyncio.to_thread(svc.registry.get_model, name)


@router.patch("/{name}", dependencies=[allow("update", "models")], summary="Edit a model's description and tags")
async def edit_model(name: ModelNamePath, body: EditBody, svc: ServicesDep) -> RegisteredModelView:
    return await asyncio.to_thread(svc.registry.update_model, name, body.description, body.tags)


@router.patch("/{name}/versions/{version}", dependencies=[allow("update", "models")],
              summary="Edit a version's description and tags")
async def edit_version(name: ModelNamePath, version: VersionPath, body: EditBody, svc: ServicesDep) -> ModelVersionView:
    return await asyncio.to_thread(svc.registry.update_version, name, version, body.description, body.tags)


@router.put("/{name}/aliases/{alias}", dependencies=[allow("update", "models")],
            summary="Point an alias (e.g. champion) at a version")
async def set_alias(name: ModelNamePath, alias: AliasPath, body: AliasBody, svc: ServicesDep) -> RegisteredModelView:
    model = await asyncio.to_thread(svc.registry.set_alias, name, alias, body.version)
    _alias_moved(svc, name)
    return model


def _alias_moved(svc, name: str) -> None:
    """Local deployments following an alias of ``name`` roll now (cluster mode: the operator re-resolves)."""
    if callable(notify := getattr(svc.deployments, "alias_moved", None)):
        notify(name)


@router.delete("/{name}/aliases/{alias}", dependencies=[allow("update", "models")],
               status_code=status.HTTP_204_NO_CONTENT, summary="Delete an alias")
async def delete_alias(name: ModelNamePath, alias: AliasPath, svc: ServicesDep) -> None:
    await asyncio.to_thread(svc.registry.delete_alias, name, alias)
    _alias_moved(svc, name)
