from __future__ import annotations

import pytest

from tests.utils.alerts import STANDALONE, RedisServer, alert_env, start_app


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("alerts-redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def alerts_api(module_redis, tmp_path_factory):
    """One alerts-only API process (the alert router + lifespan) on the module's Redis."""
    log = tmp_path_factory.mktemp("alerts-api") / "api.log"
    proc, base = start_app(STANDALONE, log, alert_env(module_redis.url))
    yield base
    proc.stop()
