"""Request and response bodies of ``/orgs``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlstack.auth.roles import RoleName
from mlstack_operator.contract import DNS_LABEL_MAX, DNS_LABEL_PATTERN, CpuQuantity, MemoryQuantity

# DNS labels: an organisation's name is shorter, so that the namespace prefix (at most 20) + it is still one
ORG_NAME, ORG_NAME_MAX = DNS_LABEL_PATTERN, 40
SA_NAME, SA_NAME_MAX = DNS_LABEL_PATTERN, DNS_LABEL_MAX


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Budget(_Body):
    """The organisation's ResourceQuota (seed 001's "clusters"): what its ModelDeployments may request in all."""

    cpu: CpuQuantity = Field("4", description="requests.cpu")
    memory: MemoryQuantity = Field("8Gi", description="requests.memory")
    gpu: int = Field(0, ge=0, le=1024, description="requests.nvidia.com/gpu")


class OrgCreate(_Body):
    name: str = Field(..., min_length=1, max_length=ORG_NAME_MAX, pattern=ORG_NAME,
                      description="a DNS label; the namespace is MLSTACK_ORG_NAMESPACE_PREFIX + name")
    display_name: str | None = Field(None, alias="displayName", max_length=200)
    budget: Budget = Field(default_factory=Budget)


class BudgetUpdate(_Body):
    budget: Budget


class Member(BaseModel):
    kind: str  # User, Group or ServiceAccount
    name: str
    role: str
    namespace: str | None = Field(None, description="a ServiceAccount's namespace (the creator's may be elsewhere)")
    joined: bool = Field(False, description="joined with an invite: DELETE /orgs/{org}/members/{name} removes it")


class OrgView(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str
    namespace: str
    display_name: str | None = Field(None, alias="displayName")
    created_by: str | None = Field(None, alias="createdBy")
    created_at: str | None = Field(None, alias="createdAt")
    budget: dict[str, str] = Field(default_factory=dict, description="the ResourceQuota's hard limits")
    used: dict[str, str] = Field(default_factory=dict, description="what is in use (the quota's status)")
    members: list[Member] = Field(default_factory=list)


class InviteCreate(_Body):
    role: RoleName = "viewer"
    expires_in_seconds: int = Field(24 * 3600, alias="expiresInSeconds", ge=60,
                                    description="at most MLSTACK_ORG_INVITE_MAX_SECONDS (7 days by default)")


class InviteView(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    code: str = Field(description="shown once; redeem with POST /orgs/join")
    org: str
    role: str
    expires_at: str = Field(alias="expiresAt")


class JoinRequest(_Body):
    code: str = Field(..., min_length=8, max_length=200)
    name: str = Field(..., min_length=1, max_length=SA_NAME_MAX, pattern=SA_NAME,
                      description="your ServiceAccount's name in the organisation (a DNS label; not 'default')")

    @field_validator("name")
    @classmethod
    def _not_default(cls, v: str) -> str:
        # the namespace's pods (model servers) run as ServiceAccount `default`: a member of that name would lend
        # them its role (and win the race with the controller that creates it right after the namespace)
        if v == "default":
            raise ValueError("'default' is the ServiceAccount the organisation's pods run as: choose another name")
        return v


class JoinResult(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    org: str
    namespace: str
    service_account: str = Field(alias="serviceAccount")
    role: str
    token: str = Field(description="a bearer token for the API (and kubectl), shown once")
    expires_at: str | None = Field(None, alias="expiresAt")
