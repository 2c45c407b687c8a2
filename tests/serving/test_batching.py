"""Dynamic batching on its own: planning, splitting, and the Batcher on a real event loop."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from mlstack.serving.batching import Batcher, plan_batches, split_outputs


@pytest.mark.parametrize(("sizes", "max_batch", "groups"), [
    ([1, 1, 1], 64, [[0, 1, 2]]),
    ([3, 3, 3], 6, [[0, 1], [2]]),
    ([10, 1, 1], 4, [[0], [1, 2]]),  # an oversized request runs alone, never split
    ([2, 5, 2], 4, [[0], [1], [2]]),
    ([], 4, []),
])
def test_plan_batches(sizes, max_batch, groups):
    assert plan_batches(sizes, max_batch) == groups


def test_split_outputs():
    out = {"label": np.arange(5), "probabilities": np.arange(10).reshape(5, 2)}
    parts = split_outputs(out, [2, 1, 2])
    assert [p["label"].tolist() for p in parts] == [[0, 1], [2], [3, 4]]
    assert parts[2]["probabilities"].tolist() == [[6, 7], [8, 9]]
    with pytest.raises(ValueError, match="expected 4 rows"):
        split_outputs(out, [2, 2])


class Model:
    """A real (tiny) model: row sums; rejects negative values like a picky predictor would."""

    def __init__(self):
        self.calls: list[int] = []
        self.threads: set[str] = set()

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        self.threads.add(threading.current_thread().name)
        if (x < 0).any():
            raise ValueError("negative input")
        self.calls.append(len(x))
        return {"sum": x.sum(axis=1), "first": x[:, :1].copy()}


def _rows(i: int, n: int = 1) -> np.ndarray:
    return np.full((n, 3), float(i), dtype=np.float32)


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "thread"])
def test_concurrent_submits_share_one_call(inline):
    model = Model()
    seen: list[tuple[int, int]] = []

    async def main():
        b = Batcher(model, max_batch=64, inline=inline, on_batch=lambda r, n: seen.append((r, n)))
        return await asyncio.gather(*(b.submit(_rows(i, 1 + i % 3)) for i in range(10)))

    results = asyncio.run(main())
    assert model.calls == [sum(1 + i % 3 for i in range(10))]
    assert seen == [(model.calls[0], 10)]
    for i, r in enumerate(results):
        assert r["sum"].tolist() == [3.0 * i] * (1 + i % 3)
        assert r["first"].shape == (1 + i % 3, 1)
    assert (threading.main_thread().name in model.threads) is inline


def test_max_batch_bounds_each_call():
    model = Model()

    async def main():
        b = Batcher(model, max_batch=4)
        return await asyncio.gather(*(b.submit(_rows(i, 2)) for i in range(5)))

    results = asyncio.run(main())
    assert all(n <= 4 for n in model.calls) and sum(model.calls) == 10
    assert [r["sum"][0] for r in results] == [0.0, 3.0, 6.0, 9.0, 12.0]


def test_lone_request_runs_without_waiting_for_a_window():
    model = Model()

    async def main():
        b = Batcher(model, max_batch=8, window_s=0.0)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        r = await b.submit(_rows(1))
        return r, loop.time() - t0

    r, elapsed = asyncio.run(main())
    assert r["sum"].tolist() == [3.0] and elapsed < 0.05


def test_window_collects_requests_across_loop_turns():
    model = Model()

    async def main():
        b = Batcher(model, max_batch=64, window_s=0.05)
        first = asyncio.ensure_future(b.submit(_rows(1)))
        await asyncio.sleep(0)  # a later loop turn, still inside the window
        second = asyncio.ensure_future(b.submit(_rows(2)))
        return await asyncio.gather(first, second)

    results = asyncio.run(main())
    assert model.calls == [2]
    assert [r["sum"].tolist() for r in results] == [[3.0], [6.0]]


@pytest.mark.parametrize("inline", [True, False], ids=["inline", "thread"])
def test_a_bad_request_fails_alone(inline):
    model = Model()

    async def main():
        b = Batcher(model, max_batch=64, inline=inline)
        return await asyncio.gather(b.submit(_rows(1)), b.submit(_rows(-1)), b.submit(_rows(2)),
                                    return_exceptions=True)

    good1, bad, good2 = asyncio.run(main())
    assert isinstance(bad, ValueError) and "negative" in str(bad)
    assert good1["sum"].tolist() == [3.0] and good2["sum"].tolist() == [6.0]


def test_thread_mode_batches_what_arrives_while_busy():
    gate = threading.Event()
    model = Model()

    def slow(x: np.ndarray) -> dict[str, np.ndarray]:
        gate.wait(10)
        return model(x)

    async def main():
        b = Batcher(slow, max_batch=64, inline=False)
        first = asyncio.ensure_future(b.submit(_rows(0)))
        while not model.threads and not b._busy:  # the first batch is now running in its thread
            await asyncio.sleep(0.001)
        later = [asyncio.ensure_future(b.submit(_rows(i))) for i in range(1, 6)]
        await asyncio.sleep(0)
        gate.set()
        return await asyncio.gather(first, *later)

    results = asyncio.run(main())
    assert model.calls == [1, 5]
    assert [r["sum"][0] for r in results] == [0.0, 3.0, 6.0, 9.0, 12.0, 15.0]
