"""Single-use, short-lived tickets for the alert stream (browsers' EventSource cannot send headers).

``POST /alerts/ticket`` (bearer token in the header) answers a random ticket; ``GET /webhook?ticket=...``
redeems it once (Redis ``GETDEL``, so any API replica can, and no two can) within ``alerts_ticket_seconds``.
The ticket in a URL is worth at most one stream opened within seconds, never the bearer token. Redis keeps
only the ticket's SHA-256, so a dump of Redis holds no usable ticket.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets

from mlstack.auth import Principal
from mlstack.errors import Unauthorized, Unavailable

PREFIX = "mlstack:alerts:ticket:"
INVALID = "invalid stream ticket: unknown, used or expired (get a new one from POST /alerts/ticket)"


def _key(ticket: str) -> str:
    return PREFIX + hashlib.sha256(ticket.encode()).hexdigest()


class TicketBook:
    def __init__(self, redis, ttl_seconds: int):
        self.redis, self.ttl = redis, ttl_seconds

    async def issue(self, who: Principal) -> str:
        ticket = secrets.token_urlsafe(32)
        record = json.dumps(dataclasses.asdict(who))
        try:
            await self.redis.set(_key(ticket), record, ex=self.ttl)
        except Exception as e:  # redis.RedisError, OSError: say so, do not 500
            raise Unavailable(f"cannot issue a stream ticket while Redis is unreachable ({type(e).__name__})") from None
        return ticket

    async def redeem(self, ticket: str) -> Principal:
        if not ticket or len(ticket) > 200:
            raise Unauthorized(INVALID)
        try:
            raw = await self.redis.getdel(_key(ticket))
        except Exception as e:
            raise Unavailable(f"cannot check a stream ticket while Redis is unreachable ({type(e).__name__})") from None
        if raw is None:
            raise Unauthorized(INVALID)
        d = json.loads(raw)
        d["groups"] = tuple(d.get("groups") or ())
        return Principal(**d)

