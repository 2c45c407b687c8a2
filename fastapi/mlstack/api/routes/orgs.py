"""``/orgs``: organisations (cluster mode). An organisation is a namespace labelled ``mlstack.io/org`` with
a ResourceQuota (its budget) and RoleBindings of the mlstack roles; members join with a one-time code.

Authorisation: creating and deleting organisations is cluster-wide (``mlstack-platform-admin``);
everything else is checked in the organisation's namespace (its admins invite and change the budget).
``POST /orgs/join`` needs no token: the code is the credential.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from mlstack.api.deps import CallerDep, OrgsDep
from mlstack.auth import CLUSTER
from mlstack.errors import Forbidden
from mlstack.orgs.schemas import (
    ORG_NAME,
    ORG_NAME_MAX,
    SA_NAME,
    SA_NAME_MAX,
    BudgetUpdate,
    InviteCreate,
    InviteView,
    JoinRequest,
    JoinResult,
    OrgCreate,
    OrgView,
)

router = APIRouter(prefix="/orgs", tags=["organisations"])
Org = Annotated[str, Path(min_length=1, max_length=ORG_NAME_MAX, pattern=ORG_NAME)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=OrgView,
             summary="Create an organisation: namespace, budget (ResourceQuota), you as its admin")
async def create_org(body: OrgCreate, caller: CallerDep, orgs: OrgsDep) -> OrgView:
    await caller.require("create", "organizations", CLUSTER, body.name)
    return await orgs.create(body.name, body.display_name, body.budget, caller.principal.name)


@router.get("", response_model=list[OrgView],
            summary="Organisations (all for a platform admin, else the caller's own)")
async def list_orgs(caller: CallerDep, orgs: OrgsDep) -> list[OrgView]:
    try:
        await caller.require("list", "organizations", CLUSTER)
    except Forbidden:
        if caller.principal.org is None:
            raise
        await caller.require("get", "organizations", orgs.namespace_of(caller.principal.org))
        return [await orgs.get(caller.principal.org)]
    return await orgs.list()


@router.get("/{org}", response_model=OrgView, summary="An organisation: budget, usage and members")
async def get_org(org: Org, caller: CallerDep, orgs: OrgsDep) -> OrgView:
    await caller.require("get", "organizations", orgs.namespace_of(org), org)
    return await orgs.get(org)


@router.patch("/{org}", response_model=OrgView, summary="Change an organisation's budget (its admins)")
async def update_org(org: Org, body: BudgetUpdate, caller: CallerDep, orgs: OrgsDep) -> OrgView:
    await caller.require("update", "organizations", orgs.namespace_of(org), org)
    return await orgs.set_budget(org, body.budget)


@router.delete("/{org}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
               summary="Delete an organisation and everything in its namespace (platform admins)")
async def delete_org(org: Org, caller: CallerDep, orgs: OrgsDep) -> Response:
    await caller.require("delete", "organizations", CLUSTER, org)
    await orgs.delete(org)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.delete("/{org}/members/{name}", status_code=status.HTTP_204_NO_CONTENT, response_class=Response,
               summary="Remove a member who joined: their ServiceAccount and RoleBinding (the org's admins)")
async def remove_member(org: Org, name: Annotated[str, Path(min_length=1, max_length=SA_NAME_MAX, pattern=SA_NAME)],
                        caller: CallerDep, orgs: OrgsDep) -> Response:
    await caller.require("update", "organizations", orgs.namespace_of(org), org)
    await orgs.remove_member(org, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{org}/invites", status_code=status.HTTP_201_CREATED, response_model=InviteView,
             summary="A one-time, expiring invite code for a role in the organisation (its admins)")
async def create_invite(org: Org, body: InviteCreate, caller: CallerDep, orgs: OrgsDep) -> InviteView:
    await caller.require("create", "invites", orgs.namespace_of(org))
    return await orgs.invite(org, body.role, body.expires_in_seconds, caller.principal.name)


@router.post("/join", status_code=status.HTTP_201_CREATED, response_model=JoinResult,
             responses={404: {"description": "unknown code"}, 410: {"description": "code used or expired"},
                        409: {"description": "the name is taken in the organisation"}},
             summary="Redeem an invite code: a ServiceAccount with the invited role, and its token (no auth)")
async def join_org(body: JoinRequest, orgs: OrgsDep) -> JoinResult:
    return await orgs.join(body.code, body.name)
