"""``GET /auth/me``: who the bearer token is, and how this API authenticates."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from mlstack.api.deps import CallerDep

router = APIRouter(prefix="/auth", tags=["auth"])


class Me(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str
    kind: str = Field(description="anonymous (auth off), token (local mode) or kubernetes")
    role: str | None = Field(None, description="local mode: viewer, deployer or admin")
    groups: list[str] = Field(default_factory=list)
    namespace: str = Field(description="home namespace: deployments go here unless a request names another")
    org: str | None = Field(None, description="the organisation whose namespace is home")
    auth_mode: str = Field(alias="authMode", description="off, tokens or kubernetes")


@router.get("/me", response_model=Me, summary="Who the bearer token is (401 without a valid one)")
async def me(caller: CallerDep) -> Me:
    p = caller.principal
    return Me(name=p.name, kind=p.kind, role=p.role, groups=list(p.groups), namespace=p.namespace, org=p.org,
              authMode=caller.authority.mode)
