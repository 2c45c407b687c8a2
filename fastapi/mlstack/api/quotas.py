"""Per-caller and per-organisation limits on what a caller keeps busy: training jobs (queued or running),
schedules, and deployments. Past a limit the API answers **429** with ``Retry-After``.

Each limited thing is a member of one Redis sorted set per scope (``mlstack:quota:<kind>:caller:<who>`` and,
in cluster mode, ``mlstack:quota:<kind>:org:<org>``). A Lua script adds the new member to every scope and
checks the counts in one atomic step, so a burst of concurrent requests (on any number of API replicas) can
never be admitted past a limit. A member is added as a reservation before the thing exists and renamed to its
id once it does; a failed create removes it. Things that end on their own (a job finishing, a schedule or
deployment deleted, a record expired) are pruned lazily: only when a scope looks full are its members checked
against what still exists, so the common path costs one script call.

Settings: ``MLSTACK_LIMITS_*`` (``QuotaSettings``); 0 disables a limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlstack.errors import MlstackError, Unavailable

PREFIX = "mlstack:quota"
RESERVATION = "reserving:"
RESERVATION_SECONDS = 120.0  # a reservation whose request died (API crash) is dropped after this


class QuotaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLSTACK_LIMITS_", env_file=None, extra="ignore")

    training_jobs_per_caller: int = Field(4, ge=0, description="queued + running training jobs per caller (0: off)")
    training_jobs_per_org: int = Field(8, ge=0, description="cluster mode: per organisation")
    schedules_per_caller: int = Field(10, ge=0, description="schedules (training and watchers) per caller")
    schedules_per_org: int = Field(25, ge=0, description="cluster mode: per organisation")
    deployments_per_caller: int = Field(5, ge=0, description="ModelDeployments created through the API per caller")
    deployments_per_org: int = Field(10, ge=0, description="cluster mode: per organisation")
    training_retry_after_seconds: int = Field(30, ge=1, description="Retry-After of a refused training job")
    retry_after_seconds: int = Field(60, ge=1, description="Retry-After of a refused schedule or deployment")



class TooMany(MlstackError):
    """429: the caller (or their organisation) keeps too many of something busy."""

    status_code = 429

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


# KEYS: the scope sets; ARGV: member, now, then one limit per key. Adds the member everywhere, and when any
# scope is over its limit removes it again and answers that scope's index (1-based) and count; else 0.
_ADMIT = """
for i, key in ipairs(KEYS) do redis.call('ZADD', key, ARGV[2], ARGV[1]) end
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[i + 2])
  local n = redis.call('ZCARD', key)
  if limit > 0 and n > limit then
    for j, k in ipairs(KEYS) do redis.call('ZREM', k, ARGV[1]) end
    return {i, n - 1}
  end
end
return {0, 0}
"""

Alive = Callable[[list[str]], Awaitable[set[str]]]  # of these member ids, the ones that still hold a slot


class Quotas:
    def __init__(self, redis: Any, settings: QuotaSettings):
        self.redis = redis
        self.s = settings
        self._script = redis.register_script(_ADMIT)

    def limits(self, kind: str) -> tuple[int, int]:
        return {"training": (self.s.training_jobs_per_caller, self.s.training_jobs_per_org),
                "schedules": (self.s.schedules_per_caller, self.s.schedules_per_org),
                "deployments": (self.s.deployments_per_caller, self.s.deployments_per_org)}[kind]

    def retry_after(self, kind: str) -> int:
        return self.s.training_retry_after_seconds if kind == "training" else self.s.retry_after_seconds

    @staticmethod
    def scopes(principal: Any) -> list[tuple[str, str]]:
        """(scope kind, key part): the caller always; their organisation when they have one."""
        who = f"{principal.kind}:{principal.namespace}:{principal.name}" if principal is not None else "platform"
        out = [("caller", who)]
        if principal is not None and getattr(principal, "org", None):
            out.append(("org", principal.org))
        return out

    def _keys(self, kind: str, principal: Any) -> tuple[list[str], list[int], list[str]]:
        per_caller, per_org = self.limits(kind)
        keys, limits, labels = [], [], []
        for scope, part in self.scopes(principal):
            keys.append(f"{PREFIX}:{kind}:{scope}:{part}")
            limits.append(per_caller if scope == "caller" else per_org)
            labels.append("you" if scope == "caller" else f"organisation {part}")
        return keys, limits, labels

    async def _call(self, coro: Awaitable) -> Any:
        try:
            return await asyncio.wait_for(coro, 2.0)
        except (OSError, TimeoutError, ConnectionError) as e:
            raise Unavailable(f"limits cannot be checked: Redis is unreachable ({type(e).__name__})") from None
        except Exception as e:  # redis.exceptions.ConnectionError and friends
            if type(e).__module__.startswith("redis"):
                raise Unavailable(f"limits cannot be checked: Redis is unreachable ({type(e).__name__})") from None
            raise

    async def _prune(self, key: str, alive: Alive) -> None:
        members = await self._call(self.redis.zrange(key, 0, -1, withscores=True))
        now = time.time()
        ids = [m for m, _ in members if not m.startswith(RESERVATION)]
        stale = [m for m, score in members if m.startswith(RESERVATION) and now - score > RESERVATION_SECONDS]
        keep = await alive(ids) if ids else set()
        stale += [m for m in ids if m not in keep]
        if stale:
            await self._call(self.redis.zrem(key, *stale))

    async def reserve(self, kind: str, principal: Any, alive: Alive, what: str) -> str:
        """A slot for one more ``kind`` of ``principal``'s, or ``TooMany``. Returns the reservation to
        ``confirm`` with the thing's id (or ``release`` when the create failed)."""
        keys, limits, labels = self._keys(kind, principal)
        if not any(limits):
            return ""
        member = f"{RESERVATION}{uuid.uuid4().hex}"
        for attempt in (0, 1):
            idx, count = await self._call(self._script(keys=keys, args=[member, time.time(), *limits]))
            if not idx:
                return member
            if attempt == 0:  # full: drop what ended on its own, then try once more
                await self._prune(keys[int(idx) - 1], alive)
        scope = labels[int(idx) - 1]
        limit = limits[int(idx) - 1]
        owner = "you have" if scope == "you" else f"{scope} has"
        raise TooMany(f"too many {what}: {owner} {count} (the limit is {limit}); "
                      f"retry when one has finished or been deleted", self.retry_after(kind))

    async def confirm(self, kind: str, principal: Any, reservation: str, item_id: str) -> None:
        if not reservation:
            return
        keys, _, _ = self._keys(kind, principal)
        pipe = self.redis.pipeline(transaction=True)
        for key in keys:
            pipe.zadd(key, {item_id: time.time()})
            pipe.zrem(key, reservation)
        await self._call(pipe.execute())

    async def release(self, kind: str, principal: Any, member: str) -> None:
        if not member:
            return
        keys, _, _ = self._keys(kind, principal)
        pipe = self.redis.pipeline(transaction=True)
        for key in keys:
            pipe.zrem(key, member)
        with contextlib.suppress(Unavailable):  # else pruned later
            await self._call(pipe.execute())

    async def admit(self, kind: str, principal: Any, alive: Alive, what: str,
                    create: Callable[[], Awaitable[Any]], item_id: Callable[[Any], str]) -> Any:
        """Reserve, create, confirm: the one call routes make."""
        reservation = await self.reserve(kind, principal, alive, what)
        try:
            out = await create()
        except BaseException:
            await self.release(kind, principal, reservation)
            raise
        await self.confirm(kind, principal, reservation, item_id(out))
        return out
