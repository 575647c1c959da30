"""Timing the echo round trip of a live call, the way the demo page does.

Wait for quiet, play a short tone burst, and time it from the frame that
carried its start to the first loud frame back. ``RealtimeCall``'s receiver
has no adaptive jitter buffer, so the figure is the path (network, relay,
transceiver, agent), not a playout policy. Used by ``talkwire loadtest`` and
the benchmarks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from functools import partial

import numpy as np

from talkwire.client import RealtimeCall, tone

BURST_HZ = 1000.0
BURST_S = 0.04
BURST_LEVEL = 0.5
BURST_TIMEOUT_S = 1.5
QUIET_S = 0.12  # the demo page's QUIET_MS
LOUD = 3000  # int16 peak: far above decoded Opus silence, far below the bursts


class Ear(list[tuple[float, np.ndarray]]):
    """Stands in for ``RealtimeCall.received`` and notes where loud audio starts,
    waking whoever waits on it: the probe reacts to audio, never to a timer."""

    def __init__(self) -> None:
        super().__init__()
        self.onsets: list[float] = []
        self.last_loud = 0.0
        self.arrived = asyncio.Event()
        self._loud = False

    def append(self, item: tuple[float, np.ndarray]) -> None:
        super().append(item)
        at, samples = item
        loud = bool(len(samples)) and int(np.abs(samples).max()) > LOUD
        if loud:
            self.last_loud = at
            if not self._loud:
                self.onsets.append(at)
        self._loud = loud
        self.arrived.set()

    def heard_since(self, at: float) -> bool:
        return bool(self.onsets) and self.onsets[-1] > at

    async def until(self, condition: Callable[[], bool], timeout: float) -> bool:
        """Waits (bounded) until ``condition`` holds after some frame's arrival."""
        try:
            async with asyncio.timeout(timeout):
                while not condition():
                    self.arrived.clear()
                    await self.arrived.wait()
        except TimeoutError:
            return False
        return True


class EchoProbe:
    """Times tone bursts on ``call`` (install it before the call connects)."""

    def __init__(self, call: RealtimeCall) -> None:
        self.call = call
        self.ear = Ear()
        call.received = self.ear
        self._burst = tone(BURST_HZ, BURST_S, BURST_LEVEL)

    async def round_trip(self) -> float | None:
        """One burst's round trip in ms, or None if it did not come back in time."""
        ear = self.ear
        quiet = await ear.until(
            lambda: time.monotonic() - ear.last_loud >= QUIET_S, BURST_TIMEOUT_S
        )
        if not quiet:
            return None
        started: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.call.source.play(self._burst, on_start=started.set_result)
        try:
            start = await asyncio.wait_for(started, BURST_TIMEOUT_S)
        except TimeoutError:  # the call stopped pulling audio: it is dead
            return None
        if not await ear.until(partial(ear.heard_since, start), BURST_TIMEOUT_S):
            return None
        return round((ear.onsets[-1] - start) * 1000, 1)
