"""``Annotated`` dependencies: routes take what they use, nothing reaches into globals."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from mlstack.api.services import Services
from mlstack.settings import Settings


# async on purpose: FastAPI runs sync dependencies in a worker thread, a hop per request
async def get_services(request: Request) -> Services:
    return request.app.state.services


async def _settings(svc: Annotated[Services, Depends(get_services)]) -> Settings:
    return svc.settings


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(_settings)]
