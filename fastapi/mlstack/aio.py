"""Asyncio helpers every layer uses."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


async def cancel_all(tasks: Iterable[asyncio.Future | None]) -> None:
    """Cancel ``tasks`` (None ones skipped) and wait until each has ended; their errors and cancellations are
    swallowed (a background task's failure is its own to log)."""
    live = [t for t in tasks if t is not None]
    for t in live:
        t.cancel()
    await asyncio.gather(*live, return_exceptions=True)
