"""A crowd of echo calls from one client host, in a process of its own.

The aiortc clients of fifty calls fill a core by themselves; in the test's own
process they would share its GIL with everything the test does, and their
stalls would be measured as the fleet's. So each crowd is a child process
that enters the host's network namespace, opens real WebRTC calls through
signaling and the relay, and answers the test's questions about them over a
pipe. Times are ``time.monotonic()``, one clock for every process here.

The calls talk only when probed (``PcmSource(send_silence=False)``). The
server's audio arrives every 20 ms while a call talks and every 100 ms (its
keep-alive) while it is quiet, so only gaps in a talking call say anything.
"""

from __future__ import annotations

import asyncio
import ctypes
import itertools
import multiprocessing
import os
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from talkwire.client import CallFailed, PcmSource, RealtimeCall, tone
from talkwire.echo_probe import LOUD, EchoProbe

CLONE_NEWNET = 0x40000000
SETUP_CONCURRENCY = 4
REPLY_TIMEOUT_S = 180.0


class Crowd:
    """The test's handle on a client process (every method runs there)."""

    def __init__(self, namespace: str, signaling_url: str, api_key: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_child, args=(child, namespace, signaling_url, api_key), daemon=True
        )
        self._process.start()
        child.close()
        self._lock = asyncio.Lock()

    async def ask(self, method: str, *args: Any) -> Any:
        async with self._lock:
            self._conn.send((method, args))
            loop = asyncio.get_running_loop()
            ready = await loop.run_in_executor(None, self._conn.poll, REPLY_TIMEOUT_S)
            if not ready:
                raise TimeoutError(f"client process: no answer to {method} in time")
            ok, value = self._conn.recv()
        if not ok:
            raise AssertionError(f"client process, {method}: {value}")
        return value

    async def open(self, count: int, via: tuple[str, int] | None = None) -> list[int]:
        """Open ``count`` calls; their indices. AssertionError names a failed one.
        ``via``: the relay their media goes to (``RealtimeCall.connect``)."""
        indices: list[int] = await self.ask("open", count, via)
        return indices

    def close(self) -> None:
        if self._process.is_alive():
            try:
                self._conn.send(("exit", ()))
                self._process.join(20)
            except (BrokenPipeError, OSError):
                pass
        if self._process.is_alive():
            self._process.kill()
            self._process.join(5)
        self._conn.close()


# --- in the child process ---


def _child(conn: Connection, namespace: str, signaling_url: str, api_key: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{namespace}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {namespace}")
    finally:
        os.close(fd)
    asyncio.run(_Calls(signaling_url, api_key).serve(conn))


class _Calls:
    def __init__(self, signaling_url: str, api_key: str) -> None:
        self.url = signaling_url
        self.key = api_key
        self.probes: dict[int, EchoProbe] = {}
        self._next = itertools.count()

    async def serve(self, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        handlers: dict[str, Callable[..., Any]] = {
            "open": self.open,
            "call_ids": self.call_ids,
            "candidates": self.candidates,
            "round_trips": self.round_trips,
            "heard_since": self.heard_since,
            "longest_gaps": self.longest_gaps,
            "play": self.play,
            "hang_up": self.hang_up,
        }
        try:
            while True:
                if not await loop.run_in_executor(None, conn.poll, 1.0):
                    continue
                method, args = conn.recv()
                if method == "exit":
                    return
                try:
                    result = handlers[method](*args)
                    if asyncio.iscoroutine(result):
                        result = await result
                    conn.send((True, result))
                except Exception as exc:
                    conn.send((False, f"{type(exc).__name__}: {exc}"))
        finally:
            await self.hang_up(list(self.probes))

    async def open(self, count: int, via: list[Any] | None = None) -> list[int]:
        gate = asyncio.Semaphore(SETUP_CONCURRENCY)
        relay = (via[0], via[1]) if via is not None else None

        async def one() -> EchoProbe:
            call = RealtimeCall(self.url, self.key, source=PcmSource(send_silence=False))
            probe = EchoProbe(call)
            try:
                async with gate:
                    await call.connect(timeout=20, via=relay)
            except BaseException:
                await call.close()
                raise
            return probe

        results = await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)
        opened = []
        for result in results:
            if isinstance(result, EchoProbe):
                index = next(self._next)
                self.probes[index] = result
                opened.append(index)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self.hang_up(opened)
            if isinstance(failures[0], CallFailed):
                raise AssertionError(str(failures[0]))
            raise failures[0]
        return opened

    def call_ids(self, indices: list[int]) -> list[str]:
        return [self.probes[i].call.location.rsplit("/", 1)[1] for i in indices]

    def candidates(self, indices: list[int]) -> list[list[str]]:
        """The addresses each answer's candidates name."""
        return [
            sorted(
                {
                    line.split()[4]
                    for line in self.probes[i].call.answer_sdp.splitlines()
                    if line.startswith("a=candidate:")
                }
            )
            for i in indices
        ]

    async def round_trips(self, indices: list[int]) -> list[float | None]:
        return list(await asyncio.gather(*(self.probes[i].round_trip() for i in indices)))

    def heard_since(self, indices: list[int], at: float) -> list[bool]:
        return [any(t >= at for t, _ in self.probes[i].ear[-10:]) for i in indices]

    def play(self, indices: list[int], hz: float, seconds: float) -> None:
        for i in indices:
            self.probes[i].call.source.play(tone(hz, seconds))

    def longest_gaps(
        self, indices: list[int], start: float, end: float, loud: bool = False
    ) -> list[float]:
        """Per call, the longest time (ms) between two frames arriving in [start, end];
        ``loud``: between two loud ones, so a gap in either direction shows (the
        server fills what the agent does not send with silence)."""
        gaps = []
        for i in indices:
            arrivals = [
                t
                for t, samples in self.probes[i].ear
                if start <= t <= end and (not loud or int(np.abs(samples).max()) > LOUD)
            ]
            if len(arrivals) < 2:
                gaps.append((end - start) * 1000)
            else:
                gaps.append(max(b - a for a, b in itertools.pairwise(arrivals)) * 1000)
        return gaps

    async def hang_up(self, indices: list[int]) -> None:
        probes = [self.probes.pop(i) for i in indices if i in self.probes]
        await asyncio.gather(*(p.call.hangup() for p in probes), return_exceptions=True)
