"""Helpers for the schedules tests: the mini app (tests/schedules/miniapp.py) and what a run leaves in Redis."""

from __future__ import annotations

import json

MINIAPP = "tests.schedules.miniapp:create_app"


def runs(r, job_id: str) -> list[dict]:
    return [json.loads(x) for x in r.lrange(f"mlstack:schedules:runs:{job_id}", 0, -1)][::-1]


def alerts_of(r, type_: str) -> list[dict]:
    return [json.loads(f["event"]) for _, f in r.xrange("mlstack:alerts") if f.get("type") == type_]
