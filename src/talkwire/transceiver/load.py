"""Admission from measured load: is this process too busy to take another call?

One event loop carries every call, so saturation shows as two things at once:
the process's CPU share nears one core, and the loop runs its timers late.
Past that point every live call's audio is late (the agent's frames queue,
and the call ends as "agent stopped reading"), so a new call is refused with
a 503 *before* it gets there. Sans-IO: the caller samples the CPU clock and
how late a timer fired; this keeps a smoothed view and decides.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Final

SAMPLE_INTERVAL_S: Final = 0.25


@dataclass(frozen=True, slots=True)
class LoadLimits:
    # Fraction of one core. 72 echo calls took 96 % of a core with +12 ms p95;
    # 0.85 leaves room for the calls already being set up.
    max_cpu: float = 0.85
    # How late a 250 ms timer may fire (smoothed): a frame is 20 ms.
    max_lag_s: float = 0.02
    # Smoothing: the weight of the newest sample (about a 1 s memory at 4 Hz).
    weight: float = 0.25


class LoadGauge:
    def __init__(self, limits: LoadLimits | None = None) -> None:
        self.limits = limits or LoadLimits()
        self.cpu = 0.0  # smoothed share of one core
        self.lag_s = 0.0  # smoothed timer lateness
        self._last: tuple[float, float] | None = None  # (wall, cpu) of the previous sample

    def sample(self, now: float, cpu_seconds: float, lag_s: float) -> None:
        """``now`` monotonic seconds, ``cpu_seconds`` the process's CPU clock."""
        if self._last is not None:
            wall = now - self._last[0]
            if wall > 0:
                share = max(0.0, (cpu_seconds - self._last[1]) / wall)
                w = self.limits.weight
                self.cpu += w * (share - self.cpu)
                self.lag_s += w * (max(0.0, lag_s) - self.lag_s)
        self._last = (now, cpu_seconds)

    @property
    def overload(self) -> str | None:
        """Why no new call should come here now, or None."""
        if self.cpu >= self.limits.max_cpu:
            return f"CPU at {self.cpu:.0%} of a core (limit {self.limits.max_cpu:.0%})"
        if self.lag_s >= self.limits.max_lag_s:
            return (
                f"event loop {self.lag_s * 1000:.0f} ms late"
                f" (limit {self.limits.max_lag_s * 1000:.0f} ms)"
            )
        return None


async def measure(gauge: LoadGauge, interval_s: float = SAMPLE_INTERVAL_S) -> None:
    """Feed ``gauge`` until cancelled: CPU clock and timer lateness every interval."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        now = loop.time()
        gauge.sample(now, time.process_time(), now - due)
