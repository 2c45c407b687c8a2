"""The payload log's first stage, inside a model server: sampled request records in a bounded in-memory ring.

Off the hot path by construction: deciding to sample is one ``random()`` call, recording is one ``deque.append``
(no I/O, no lock: one event loop). Nothing the server does waits for the monitor. The monitor drains the ring
over HTTP with a cursor (``read(after=...)``); when it is away for long the ring overwrites its oldest records
and says how many were lost (``dropped``), so nothing blocks and nothing fails a request. Pulling (rather than the
server writing to Redis or S3) keeps model servers, which run uploaded package code, free of the platform's
credentials.

Request ids: a response carries ``X-Request-ID`` (the caller's, when it sent one, else ``RequestIds.next()``:
a random per-process prefix and a counter, so ids are unique across replicas and cost no ``uuid4`` per request).
"""

from __future__ import annotations

import itertools
import os
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

DEFAULT_SAMPLE_RATE = 0.05
DEFAULT_CAPACITY = 10_000
MAX_READ = 5_000
MAX_REQUEST_ID = 128  # a caller's X-Request-ID longer than this (or not printable ASCII) is replaced


def page_args(method: str, query: str) -> tuple[int, int]:
    """``after`` and ``limit`` of a ``GET /v2/monitoring/payloads?after=N&limit=M``; ``PageError`` (status, message)
    for a bad request (pure)."""
    from urllib.parse import parse_qs

    if method != "GET":
        raise PageError(405, f"method {method} not allowed here (use GET)")
    q = parse_qs(query)
    try:
        after, limit = int(q.get("after", ["0"])[0]), int(q.get("limit", ["1000"])[0])
    except ValueError:
        raise PageError(400, "after and limit must be integers") from None
    if after < 0 or limit < 1:
        raise PageError(400, "after must be >= 0 and limit >= 1")
    return after, limit


class PageError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class RequestIds:
    __slots__ = ("_n", "_prefix")

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._n = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}-{next(self._n)}"

    def accept(self, given: str | None) -> str:
        """The caller's id when it is a sane one, else a new one."""
        if given and len(given) <= MAX_REQUEST_ID and given.isascii() and given.isprintable():
            return given
        return self.next()


@dataclass
class PayloadLog:
    sample_rate: float = DEFAULT_SAMPLE_RATE
    capacity: int = DEFAULT_CAPACITY
    _ring: deque = field(init=False, repr=False)
    _seq: int = field(default=0, init=False)  # the sequence number of the newest record (0: none yet)
    dropped: int = field(default=0, init=False)  # records overwritten before anyone read them
    _read_upto: int = field(default=0, init=False)
    _random: Any = field(default=random.random, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample_rate <= 1.0:
            raise ValueError(f"sample rate must be within [0, 1], got {self.sample_rate}")
        if self.capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {self.capacity}")
        self._ring = deque(maxlen=self.capacity)

    @property
    def enabled(self) -> bool:
        return self.sample_rate > 0.0

    def sampled(self) -> bool:
        """Whether to record this request (call once per request, then ``record`` only when True)."""
        return self.sample_rate > 0.0 and (self.sample_rate >= 1.0 or self._random() < self.sample_rate)

    def record(self, request_id: str, model: str, version: str, track: str, inputs: Any, outputs: Any,
               latency_ms: float) -> None:
        self._append({"id": request_id, "ts": time.time(), "model": model, "version": version, "track": track,
                      "inputs": inputs, "outputs": outputs, "latency_ms": round(latency_ms, 3)})

    def _append(self, rec: dict[str, Any]) -> None:
        if len(self._ring) == self.capacity and self._ring[0][0] > self._read_upto:
            self.dropped += 1  # the oldest unread record goes
        self._seq += 1
        self._ring.append((self._seq, rec))

    def extend(self, records: list[dict[str, Any]], lost: int = 0) -> None:
        """Append records another ring sampled (Ray Serve replicas send theirs to one collector); ``lost``: records
        the sender could not deliver, counted as dropped."""
        self.dropped += max(0, int(lost))
        for rec in records:
            self._append(rec)

    def read(self, after: int = 0, limit: int = MAX_READ) -> dict[str, Any]:
        """Records with a sequence number above ``after`` (oldest first, at most ``limit``), the cursor to pass
        next, and how many records after ``after`` are gone (overwritten: ``missed``)."""
        limit = max(1, min(int(limit), MAX_READ))
        after = max(0, min(int(after), self._seq))
        first = self._ring[0][0] if self._ring else self._seq + 1
        missed = max(0, first - after - 1)
        start = max(0, after + 1 - first)
        items = list(itertools.islice(self._ring, start, start + limit))
        cursor = items[-1][0] if items else max(after, first - 1)
        self._read_upto = max(self._read_upto, cursor)
        return {"records": [r for _, r in items], "next": cursor, "missed": missed, "dropped": self.dropped,
                "sample_rate": self.sample_rate}
