"""Alert producers call ``AlertSink.emit``; the Redis Streams implementation lives in this package.

``NullSink`` is what runs until a real sink is wired in the API lifespan.
"""

from __future__ import annotations

from typing import Any, Protocol


class AlertSink(Protocol):
    async def emit(self, type: str, severity: str, title: str, message: str = "", **fields: Any) -> None: ...


class NullSink:
    """Accepts and drops every alert (used by tools and tests that do not need Redis)."""

    async def emit(self, type: str, severity: str, title: str, message: str = "", **fields: Any) -> None:
        return None
