from __future__ import annotations

import pytest

from tests.alerts.helpers import RedisServer

MINIAPP = "tests.schedules.miniapp:create_app"


@pytest.fixture
def own_redis(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()
