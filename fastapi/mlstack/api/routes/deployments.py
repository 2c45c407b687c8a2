"""``/deployments``: create, list, read and delete ModelDeployments (the operator's contract); promote or abort
a canary (``POST /deployments/{name}/canary/promote|abort``, the roles that may update a deployment).

Local mode serves them on this machine; cluster mode goes through the Kubernetes API (see
``mlstack.deployments``). Invalid specs are 422 with every reason, duplicates 409, unknown ones 404.
"""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from mlstack.api.deps import CallerDep, DeploymentsDep, QuotasDep
from mlstack.api.params import DeploymentPath, NamespaceQuery
from mlstack.deployments.schemas import DeploymentCreate, DeploymentView
from mlstack.errors import NotFound

router = APIRouter(prefix="/deployments", tags=["deployments"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=DeploymentView,
             summary="Create a ModelDeployment (local mode: served on this machine)")
async def create_deployment(body: DeploymentCreate, caller: CallerDep, backend: DeploymentsDep,
                            quotas: QuotasDep) -> DeploymentView:
    namespace = body.namespace or caller.principal.namespace
    await caller.require("create", "modeldeployments", namespace, body.name)

    async def alive(ids: list[str]) -> set[str]:  # a deleted deployment holds no slot
        out = set()
        for key in ids:
            ns, _, name = key.partition("/")
            try:
                await backend.get(ns, name)
                out.add(key)
            except NotFound:
                pass
        return out

    # within the caller's (and their organisation's) limit of deployments, else 429
    return await quotas.admit("deployments", caller.principal, alive, "deployments",
                              lambda: backend.create(namespace, body.name, body.spec),
                              lambda _: f"{namespace}/{body.name}")


@router.get("", response_model=list[DeploymentView], summary="ModelDeployments of a namespace, by name")
async def list_deployments(caller: CallerDep, backend: DeploymentsDep,
                           namespace: NamespaceQuery = None) -> list[DeploymentView]:
    namespace = namespace or caller.principal.namespace
    await caller.require("list", "modeldeployments", namespace)
    return await backend.list(namespace)


@router.get("/{name}", response_model=DeploymentView, summary="A ModelDeployment with its status")
async def get_deployment(name: DeploymentPath, caller: CallerDep, backend: DeploymentsDep,
                         namespace: NamespaceQuery = None) -> DeploymentView:
    namespace = namespace or caller.principal.namespace
    await caller.require("get", "modeldeployments", namespace, name)
    return await backend.get(namespace, name)


@router.post("/{name}/canary/promote", response_model=DeploymentView,
             responses={404: {"description": "no such ModelDeployment"},
                        409: {"description": "it has no canary (or it changed meanwhile)"}},
             summary="Promote the canary: it becomes the stable version (model.version = the canary's), no canary")
async def promote_canary(name: DeploymentPath, caller: CallerDep, backend: DeploymentsDep,
                         namespace: NamespaceQuery = None) -> DeploymentView:
    namespace = namespace or caller.principal.namespace
    await caller.require("update", "modeldeployments", namespace, name)
    return await backend.promote_canary(namespace, name)


@router.post("/{name}/canary/abort", response_model=DeploymentView,
             responses={404: {"description": "no such ModelDeployment"},
                        409: {"description": "it has no canary (or it changed meanwhile)"}},
             summary="Abort the canary: it is removed, the stable version takes all traffic")
async def abort_canary(name: DeploymentPath, caller: CallerDep, backend: DeploymentsDep,
                       namespace: NamespaceQuery = None) -> DeploymentView:
    namespace = namespace or caller.principal.namespace
    await caller.require("update", "modeldeployments", namespace, name)
    return await backend.abort_canary(namespace, name)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
               summary="Delete a ModelDeployment (local mode: its server stops before this returns)")
async def delete_deployment(name: DeploymentPath, caller: CallerDep, backend: DeploymentsDep,
                            namespace: NamespaceQuery = None) -> Response:
    namespace = namespace or caller.principal.namespace
    await caller.require("delete", "modeldeployments", namespace, name)
    await backend.delete(namespace, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
