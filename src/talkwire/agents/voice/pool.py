"""Worker threads for model inference, shared by every call of the process.

Whisper (CTranslate2), piper (onnxruntime) and silero release the GIL while
they compute, so a few threads keep the event loop free for every call's
audio. Work has a priority: what a user is waiting for (the final
transcript, the first words of a reply) runs before best-effort work (partial
transcripts while someone speaks), and best-effort work is refused rather
than queued when the workers are behind, so it can never delay a reply.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

T = TypeVar("T")

URGENT: Final = 0
BACKGROUND: Final = 1
_STOP: Final = -1


class PoolBusy(Exception):
    """Best-effort work refused: the workers are behind."""


@dataclass(order=True)
class _Job:
    priority: int
    seq: int
    fn: Callable[[], Any] = field(compare=False)
    future: Future[Any] = field(compare=False)


@dataclass
class PoolStats:
    jobs: dict[int, int] = field(default_factory=lambda: {URGENT: 0, BACKGROUND: 0})
    refused: int = 0
    busy_s: float = 0.0  # summed worker wall time spent in jobs


class InferencePool:
    def __init__(self, workers: int = 2, name: str = "inference") -> None:
        if workers < 1:
            raise ValueError("an inference pool needs at least one worker")
        self._queue: queue.PriorityQueue[_Job] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._running = 0
        self._lock = threading.Lock()
        self.workers = workers
        self.stats = PoolStats()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def backlog(self) -> int:
        """Jobs waiting or running."""
        with self._lock:
            return self._queue.qsize() + self._running

    async def run(self, fn: Callable[[], T], priority: int = URGENT) -> T:
        """Run ``fn`` on a worker; BACKGROUND work raises PoolBusy if every worker is taken.

        Cancelling the caller drops a job that has not started; a running one
        finishes on its thread and its result is discarded.
        """
        future: Future[T] = Future()
        with self._lock:
            if priority != URGENT and self._queue.qsize() + self._running >= self.workers:
                self.stats.refused += 1
                raise PoolBusy
            self._queue.put(_Job(priority, next(self._seq), fn, future))
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        for _ in self._threads:
            # Sorts before any work, and every worker takes one.
            self._queue.put(_Job(_STOP, next(self._seq), lambda: None, Future()))
        for thread in self._threads:
            thread.join(timeout=10)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job.priority == _STOP:
                return
            if not job.future.set_running_or_notify_cancel():
                continue
            with self._lock:
                self._running += 1
            started = time.perf_counter()
            try:
                job.future.set_result(job.fn())
            except BaseException as exc:
                job.future.set_exception(exc)
            finally:
                with self._lock:
                    self._running -= 1
                    self.stats.jobs[job.priority] += 1
                    self.stats.busy_s += time.perf_counter() - started
