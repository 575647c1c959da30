"""The inference pool: urgent work first, best-effort work refused when the workers are behind."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future

import pytest

from talkwire.agents.voice.pool import BACKGROUND, URGENT, InferencePool, PoolBusy, _Job


def blocker(started: threading.Event, release: threading.Event) -> bool:
    started.set()
    return release.wait(10)


async def test_background_work_is_refused_while_every_worker_is_taken() -> None:
    pool = InferencePool(workers=1)
    started, release = threading.Event(), threading.Event()
    try:
        blocked = asyncio.ensure_future(pool.run(lambda: blocker(started, release)))
        await asyncio.to_thread(started.wait, 10)
        with pytest.raises(PoolBusy):
            await pool.run(lambda: 1, BACKGROUND)
        release.set()
        assert await blocked is True
        assert await pool.run(lambda: 2, BACKGROUND) == 2
        assert pool.stats.refused == 1
    finally:
        release.set()
        pool.close()


async def test_urgent_work_overtakes_queued_work_and_errors_reach_the_caller() -> None:
    pool = InferencePool(workers=1)
    started, release = threading.Event(), threading.Event()
    order: list[str] = []
    try:
        first = asyncio.ensure_future(pool.run(lambda: blocker(started, release)))
        await asyncio.to_thread(started.wait, 10)
        # Queued behind the running job (put directly: run() would refuse it as busy).
        waiting: Future[None] = Future()
        pool._queue.put(_Job(BACKGROUND, -1, lambda: order.append("background"), waiting))
        urgent = asyncio.ensure_future(pool.run(lambda: order.append("urgent"), URGENT))
        await asyncio.sleep(0)  # run() queues its job before its first await
        assert pool._queue.qsize() == 2
        release.set()
        await first
        await urgent
        await asyncio.wrap_future(waiting)
        assert order == ["urgent", "background"]

        def fail() -> None:
            raise RuntimeError("model exploded")

        with pytest.raises(RuntimeError, match="model exploded"):
            await pool.run(fail)
    finally:
        release.set()
        pool.close()
    assert all(not t.is_alive() for t in pool._threads)
