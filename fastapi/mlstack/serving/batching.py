"""Dynamic batching: concurrent requests become one predictor call, split back per request.

Requests that arrive in the same event-loop turn (or within ``window_s`` when it is > 0) are
concatenated, at most ``max_batch`` rows per call. A lone request runs in the next loop turn, so
batching adds no latency when there is no concurrency. Cheap predictors (``inline``) run on the
event loop itself: while one batch runs, the next requests queue up in the sockets and form the
next batch. Others run in a worker thread, one batch at a time, and requests arriving meanwhile
form the next batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import numpy as np

Outputs = dict[str, np.ndarray]
RunFn = Callable[[np.ndarray], Outputs]


def plan_batches(sizes: Sequence[int], max_batch: int) -> list[list[int]]:
    """Group request indices in arrival order so that each group holds at most ``max_batch`` rows.

    A request larger than ``max_batch`` forms a group on its own (requests are never split).
    """
    groups: list[list[int]] = []
    current: list[int] = []
    rows = 0
    for i, n in enumerate(sizes):
        if current and rows + n > max_batch:
            groups.append(current)
            current, rows = [], 0
        current.append(i)
        rows += n
    if current:
        groups.append(current)
    return groups


def split_outputs(outputs: Outputs, sizes: Sequence[int]) -> list[Outputs]:
    """Split every output along its first axis into consecutive slices of ``sizes`` rows."""
    total = sum(sizes)
    for name, a in outputs.items():
        if a.ndim == 0 or a.shape[0] != total:
            raise ValueError(f"output {name!r} has shape {a.shape}, expected {total} rows to split")
    parts: list[Outputs] = []
    start = 0
    for n in sizes:
        parts.append({name: a[start:start + n] for name, a in outputs.items()})
        start += n
    return parts


class Batcher:
    """Collects ``submit``-ted arrays and runs them through ``run`` in batches."""

    def __init__(
        self,
        run: RunFn,
        max_batch: int = 64,
        window_s: float = 0.0,
        inline: bool = True,
        on_batch: Callable[[int, int], None] | None = None,
    ):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._run = run
        self.max_batch = max_batch
        self.window_s = window_s
        self.inline = inline
        self._on_batch = on_batch  # (rows, requests) per predictor call
        self._pending: list[tuple[np.ndarray, asyncio.Future[Outputs]]] = []
        self._rows = 0
        self._handle: asyncio.Handle | asyncio.TimerHandle | None = None
        self._busy = False  # a worker-thread batch is running (non-inline mode)
        self._taken_rows = 0

    async def submit(self, x: np.ndarray) -> Outputs:
        return await self.enqueue(x)

    def enqueue(self, x: np.ndarray) -> asyncio.Future[Outputs]:
        """``submit`` without the coroutine: the future of ``x``'s outputs (cancel it to drop the request)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Outputs] = loop.create_future()
        self._pending.append((x, fut))
        self._rows += len(x)
        if self._busy:
            pass  # the running batch flushes when it finishes
        elif self._rows >= self.max_batch:
            self._cancel_timer()
            self._flush()
        elif self._handle is None:
            if self.window_s > 0:
                self._handle = loop.call_later(self.window_s, self._flush)
            else:
                self._handle = loop.call_soon(self._flush)
        return fut

    def _cancel_timer(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _take(self) -> list[tuple[np.ndarray, asyncio.Future[Outputs]]]:
        self._handle = None
        pending, rows = self._pending, self._rows
        self._pending = []
        self._rows = 0
        self._taken_rows = rows
        return pending

    def _groups(self, pending: list[tuple[np.ndarray, asyncio.Future[Outputs]]]) -> list[list[int]]:
        if self._taken_rows <= self.max_batch:  # the common case: everything fits in one call
            return [list(range(len(pending)))]
        return plan_batches([len(x) for x, _ in pending], self.max_batch)

    def _flush(self) -> None:
        pending = self._take()
        if not pending:
            return
        if self.inline:
            if len(pending) == 1:
                self._run_group(pending)
            else:
                for group in self._groups(pending):
                    self._run_group([pending[i] for i in group])
        else:
            self._busy = True
            asyncio.get_running_loop().create_task(self._run_in_thread(pending, self._groups(pending)))

    async def _run_in_thread(self, pending: list[tuple[np.ndarray, asyncio.Future[Outputs]]],
                             groups: list[list[int]]) -> None:
        try:
            for group in groups:
                items = [pending[i] for i in group]
                results = await asyncio.to_thread(self._compute, [x for x, _ in items])
                self._deliver(items, results)
        finally:
            self._busy = False
            if self._pending:
                self._flush()

    def _run_group(self, items: list[tuple[np.ndarray, asyncio.Future[Outputs]]]) -> None:
        live = [item for item in items if not item[1].done()]  # drop cancelled requests (client gone)
        if live:
            self._deliver(live, self._compute([x for x, _ in live]))

    def _compute(self, xs: list[np.ndarray]) -> list[Outputs | BaseException]:
        """One predictor call for the group; on failure, each request alone (so errors stay per request)."""
        sizes = [len(x) for x in xs]
        try:
            x = xs[0] if len(xs) == 1 else np.concatenate(xs)
            out = self._run(x)
            if self._on_batch is not None:
                self._on_batch(len(x), len(xs))
            return split_outputs(out, sizes) if len(xs) > 1 else [out]
        except Exception as e:
            if len(xs) == 1:
                return [e]
        results: list[Outputs | BaseException] = []
        for x in xs:
            try:
                results.append(self._run(x))
                if self._on_batch is not None:
                    self._on_batch(len(x), 1)
            except Exception as e:
                results.append(e)
        return results

    @staticmethod
    def _deliver(items: list[tuple[np.ndarray, asyncio.Future[Outputs]]],
                 results: list[Outputs | BaseException]) -> None:
        for (_, fut), res in zip(items, results, strict=True):
            if fut.done():
                continue
            if isinstance(res, BaseException):
                fut.set_exception(res)
            else:
                fut.set_result(res)
