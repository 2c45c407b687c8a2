"""``Annotated`` dependencies: routes take what they use, nothing reaches into globals."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mlstack.alerts.setup import Alerting
from mlstack.api.limits import PRINCIPAL_KEY
from mlstack.api.quotas import Quotas
from mlstack.api.services import Services
from mlstack.auth import HOME, Caller
from mlstack.errors import MlstackError, NotFound, Unauthorized, Unavailable
from mlstack.settings import Settings

if TYPE_CHECKING:
    from mlstack.deployments.kube import KubeDeployments
    from mlstack.deployments.local import LocalDeployments
    from mlstack.monitoring.setup import Monitoring
    from mlstack.orgs.kube import KubeOrgs
    from mlstack.schedules.service import ScheduleService

T = TypeVar("T")


# async on purpose: FastAPI runs sync dependencies in a worker thread, a hop per request
async def get_services(request: Request) -> Services:
    return request.app.state.services


async def _settings(svc: Annotated[Services, Depends(get_services)]) -> Settings:
    return svc.settings


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(_settings)]


def running(pick: Callable[[Services], T | None], missing: Callable[[], MlstackError]) -> Any:
    """A dependency on a subsystem of ``Services``; ``missing()`` is raised when this process did not start it."""

    async def get(svc: ServicesDep) -> T:
        obj = pick(svc)
        if obj is None:
            raise missing()
        return obj

    return Depends(get)


def _unavailable(message: str) -> Callable[[], MlstackError]:
    return lambda: Unavailable(message)


AlertingDep = Annotated[Alerting, running(lambda s: s.alerting, _unavailable("alerts are not running in this process"))]
SchedulesDep = Annotated["ScheduleService", running(lambda s: s.schedules,
                                                    _unavailable("schedules are not running in this process"))]
MonitoringDep = Annotated["Monitoring", running(lambda s: s.monitoring,
                                                _unavailable("monitoring is not available in this API process"))]
DeploymentsDep = Annotated["LocalDeployments | KubeDeployments", running(
    lambda s: s.deployments, _unavailable("deployments are not available in this API process"))]
QuotasDep = Annotated[Quotas, running(lambda s: s.quotas, _unavailable("limits are not running in this process"))]
# 404, not a 5xx: in local mode there are no organisations to find (nothing is broken)
OrgsDep = Annotated["KubeOrgs", running(lambda s: s.orgs, lambda: NotFound(
    "no organisations in local mode: they are Kubernetes namespaces and need cluster mode (MLSTACK_MODE=cluster)"))]

# auto_error=False: a missing token is the authority's call (auth off lets it through; else 401, not 403)
_bearer = HTTPBearer(auto_error=False, description="local mode: a token from MLSTACK_AUTH_TOKENS (init.sh writes "
                     "them to outputs/credentials.txt); cluster mode: a Kubernetes token (kubectl create token, "
                     "or the token POST /orgs/join returns)")


def _token(request: Request, creds: HTTPAuthorizationCredentials | None) -> str | None:
    if creds is not None:
        return creds.credentials
    if request.headers.get("authorization"):
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return None


async def _authenticate(request: Request, svc: Services, token: str | None):
    """The caller of ``token``; reuses the answer ``BodyGuard`` got before it let the body be read."""
    known = request.scope.get(PRINCIPAL_KEY)
    if known is not None and known[0] == token:
        return known[1]
    return await svc.auth.authenticate(token)


async def get_caller(request: Request, svc: ServicesDep,
                     creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Caller:
    return Caller(await _authenticate(request, svc, _token(request, creds)), svc.auth)


async def get_stream_caller(
    request: Request, svc: ServicesDep, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ticket: Annotated[str | None, Query(max_length=200, description=(
        "a single-use stream ticket from POST /alerts/ticket, for EventSource clients that cannot send headers "
        "(an Authorization header wins)"))] = None,
) -> Caller:
    """For server-sent-event routes: the bearer header, or ``?ticket=`` (never the token itself in the URL)."""
    token = _token(request, creds)
    if token is None and ticket is not None:
        if svc.alerting is None:
            raise Unavailable("alerts are not running in this process")
        return Caller(await svc.alerting.tickets.redeem(ticket), svc.auth)
    return Caller(await _authenticate(request, svc, token), svc.auth)


CallerDep = Annotated[Caller, Depends(get_caller)]


def allow(verb: str, resource: str, stream: bool = False) -> Any:
    """A route dependency: the caller may ``verb`` ``resource`` in their home namespace (else 401/403)."""

    get = get_stream_caller if stream else get_caller

    async def check(caller: Caller = Depends(get)) -> Caller:
        await caller.require(verb, resource, HOME)
        return caller

    return Depends(check)
