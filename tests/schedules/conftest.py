from __future__ import annotations

from tests.alerts.conftest import own_redis  # noqa: F401 - the same function-scoped redis-server fixture

MINIAPP = "tests.schedules.miniapp:create_app"
