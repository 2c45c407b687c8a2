"""Shadow traffic: the stable model server mirrors a share of its inference requests to another version.

``mlstack serve --shadow-url URL --shadow-percent P`` (``spec.shadow`` of a ModelDeployment): exactly P of every
100 inference requests (``shadow_turn``, the canary's counter rule with thousandths of a percent) are also sent,
fire-and-forget, to the shadow version's server under the same ``X-Request-ID``. The shadow's answer is read and
thrown away: the client only ever gets the live version's answer, and the mirror never delays or fails it (at
most ``max_in_flight`` mirrors at once; a turn beyond that is dropped and counted, as are mirrors the shadow did
not answer). Counted in ``mlstack_serve_shadow_requests{result="mirrored|failed|dropped"}``.

Both sides are logged for the monitor: the stable server logs every request it mirrors (whatever its sample
rate) and the shadow server logs every request it gets (sample rate 1, track ``shadow``), so the monitor joins the
two answers by request id (agreement rate, or mean absolute difference for numbers). Nothing a client sends turns
this logging on: the stable server decides it itself, and only the mirror reaches the shadow server.

Mirrored: what the canary split takes part in (``POST /predict`` and ``/v2/models/{name}/infer`` over HTTP, not
a request pinned to a version), and gRPC ``ModelInfer`` requests this server answers itself (not pinned to a
version; sent to the shadow's HTTP port as the v2 JSON infer request of the same input, under the same id).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

from mlstack.aio import cancel_all
from mlstack.serving.canary import _FORWARDED_REQUEST_HEADERS

log = logging.getLogger(__name__)

SHADOW = b"shadow"
MILLI = 1000  # the share is counted in thousandths of a percent


def shadow_turn(n: int, milli_percent: int) -> bool:
    """Whether request number ``n`` (0-based) is mirrored: exactly ``milli_percent`` of every 100,000, spread
    evenly (``canary_turn`` at a finer grain)."""
    return (n + 1) * milli_percent // (100 * MILLI) > n * milli_percent // (100 * MILLI)


class ShadowMirror:
    """Mirrors the shadow's share of HTTP inference requests to ``url`` through one pooled keep-alive session.

    ``start`` (at the server's startup) creates the session; ``take`` says whether this request's turn is the
    shadow's; ``mirror`` schedules the copy and returns at once.
    """

    def __init__(self, url: str, percent: float, timeout_s: float = 2.0, max_in_flight: int = 64,
                 connect_timeout_s: float = 0.5):
        if not 0 < percent <= 100:
            raise ValueError(f"shadow percent must be within (0, 100], got {percent}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        self.url = url.rstrip("/")
        self.percent = percent
        self.milli = max(1, round(percent * MILLI))
        self.n = 0
        self.max_in_flight = max_in_flight
        self.timeout = aiohttp.ClientTimeout(total=timeout_s, connect=connect_timeout_s)
        self.session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task] = set()
        self.mirrored = 0  # the shadow answered (any status below 500)
        self.failed = 0  # it did not (connection refused, timeout, 5xx)
        self.dropped = 0  # not sent: max_in_flight mirrors were still waiting for the shadow
        self.last_error = ""

    async def start(self) -> None:
        if self.session is None:
            self.session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_in_flight, keepalive_timeout=30, ttl_dns_cache=30),
                timeout=self.timeout, auto_decompress=False, skip_auto_headers=("User-Agent",))

    async def close(self) -> None:
        await cancel_all(list(self._tasks))
        if self.session is not None:
            await self.session.close()
            self.session = None

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def take(self) -> bool:
        turn = shadow_turn(self.n, self.milli)
        self.n += 1
        return turn

    def mirror(self, method: str, path: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
        """Send a copy in the background; False (counted as dropped) when ``max_in_flight`` copies are pending."""
        if self.session is None or len(self._tasks) >= self.max_in_flight:
            self.dropped += 1
            return False
        send = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers
                if k.decode("latin-1") in _FORWARDED_REQUEST_HEADERS}
        task = asyncio.get_running_loop().create_task(self._send(method, path, body, send))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _send(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> None:
        assert self.session is not None
        try:
            async with self.session.request(method, self.url + path, data=body, headers=headers) as resp:
                await resp.read()  # (and thrown away) so that the connection goes back to the pool
                if resp.status >= 500:
                    self._failed(f"HTTP {resp.status}")
                else:
                    self.mirrored += 1
        except (aiohttp.ClientError, TimeoutError) as e:
            self._failed(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # never let a mirror's bug surface anywhere but here
            self._failed(f"{type(e).__name__}: {e}")

    def _failed(self, why: str) -> None:
        self.failed += 1
        if why != self.last_error or self.failed % 100 == 1:  # say it once, not once per request
            log.warning("shadow %s did not answer a mirrored request (%s; %d so far)", self.url, why, self.failed)
        self.last_error = why

    def metrics(self) -> dict[str, Any]:
        return {"mirrored": self.mirrored, "failed": self.failed, "dropped": self.dropped}
