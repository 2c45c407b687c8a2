"""Lifespan wiring: start this process's scheduler on the shared Redis job store."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any

from mlstack.schedules.service import ScheduleService
from mlstack.schedules.settings import ScheduleSettings


async def start(svc: Any, stack: AsyncExitStack, settings: ScheduleSettings) -> ScheduleService:
    """``svc``: the API's ``Services`` (read, never changed): needs ``redis``, ``settings.redis_url``, ``alerts``;
    ``training`` and ``registry`` are used when a firing runs. Never fails because Redis is down."""
    service = ScheduleService(svc, settings)
    service.start(asyncio.get_running_loop())
    stack.push_async_callback(service.stop)
    return service
