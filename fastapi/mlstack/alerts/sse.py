"""``FanoutEventSourceResponse``: sse-starlette's response tuned for one-alert-to-many-clients.

sse-starlette wraps every send in its own anyio cancel scope (``send_timeout``); with 1,000 clients
that scope costs about as much as the send itself. Here a send is a plain ``await send(...)``, and
the timeout is enforced once per connection instead: when the hub drops a client for being too
slow, it calls ``expire()``, and if the client has not drained its last frames ``send_timeout``
seconds later the whole response is cancelled (its socket closed, its task freed).
"""

from __future__ import annotations

import anyio
from sse_starlette import EventSourceResponse
from starlette.types import Message, Receive, Scope, Send


class FanoutEventSourceResponse(EventSourceResponse):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._scope: anyio.CancelScope | None = None
        self._expire_pending = False

    async def _send_with_timeout(self, send: Send, message: Message) -> None:
        await send(message)

    def expire(self) -> None:
        """Cancel this response unless it finishes within ``send_timeout`` seconds (called on overflow)."""
        if self._scope is None:
            self._expire_pending = True
        elif self.send_timeout is not None:
            self._scope.deadline = min(self._scope.deadline, anyio.current_time() + self.send_timeout)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        with anyio.CancelScope() as cancel_scope:
            self._scope = cancel_scope
            if self._expire_pending:
                self.expire()
            await super().__call__(scope, receive, send)
