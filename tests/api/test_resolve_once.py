"""``InferenceClient.resolve`` against a real ``mlflow server``: the requests that miss the registry cache at once
share one registry call (an expired answer under load is refreshed once, not once per request)."""

from __future__ import annotations

import asyncio

import pytest
from mlflow import MlflowClient

from mlstack.errors import NotFound
from mlstack.inference import InferenceClient
from mlstack.registry import Registry
from mlstack.settings import Settings


async def test_concurrent_misses_share_one_registry_call(mlflow_uri, model):
    registry = Registry(MlflowClient(mlflow_uri), "resolve-once", cache_seconds=0)  # every call misses the cache
    calls = []
    real = registry.resolve

    def counted(*args):
        calls.append(args)
        return real(*args)

    registry.resolve = counted
    client = InferenceClient(Settings(mlflow_tracking_uri=mlflow_uri), registry, servers=None)
    try:
        got = await asyncio.gather(*(client.resolve(model.name, None, "champion") for _ in range(20)))
        assert got == [model.version] * 20 and len(calls) == 1, calls
        # a waiter that leaves does not cancel the call the others wait for
        first = asyncio.ensure_future(client.resolve(model.name, model.version))
        second = asyncio.ensure_future(client.resolve(model.name, model.version))
        await asyncio.sleep(0)
        first.cancel()
        assert await second == model.version and len(calls) == 2
        # the call is over: the next miss asks the registry again; an error reaches every waiter
        missing = await asyncio.gather(*(client.resolve(model.name, None, "no-such-alias") for _ in range(3)),
                                       return_exceptions=True)
        assert all(isinstance(e, NotFound) for e in missing) and len(calls) == 3, missing
        assert await client.resolve(model.name, None, "champion") == model.version and len(calls) == 4
        with pytest.raises(asyncio.CancelledError):
            await first
    finally:
        await client.aclose()
