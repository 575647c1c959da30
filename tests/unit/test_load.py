"""Admission from measured load: the gauge is sans-IO, fed CPU clock and timer lateness."""

from __future__ import annotations

import asyncio
import time

from talkwire.transceiver.load import LoadGauge, LoadLimits, measure


def feed(gauge: LoadGauge, share: float, lag_s: float = 0.0, samples: int = 20) -> None:
    now, cpu = 100.0, 5.0
    for _ in range(samples):
        gauge.sample(now, cpu, lag_s)
        now += 0.25
        cpu += 0.25 * share


def test_an_idle_process_admits_and_a_saturated_one_says_why_not() -> None:
    idle = LoadGauge()
    feed(idle, 0.1)
    assert idle.overload is None and abs(idle.cpu - 0.1) < 0.01
    busy = LoadGauge()
    feed(busy, 0.95)
    assert busy.overload is not None and "CPU at 95%" in busy.overload


def test_late_timers_alone_mean_overload() -> None:
    gauge = LoadGauge(LoadLimits(max_lag_s=0.02))
    feed(gauge, 0.3, lag_s=0.05)
    assert gauge.overload is not None and "50 ms late" in gauge.overload


def test_one_busy_sample_does_not_refuse_calls_but_a_sustained_load_does() -> None:
    gauge = LoadGauge()
    feed(gauge, 0.2)
    now, cpu = 200.0, 50.0
    gauge.sample(now, cpu, 0.0)
    gauge.sample(now + 0.25, cpu + 0.25, 0.0)  # one quarter-second at 100 %
    assert gauge.overload is None
    for i in range(2, 12):
        gauge.sample(now + 0.25 * i, cpu + 0.25 * i, 0.0)
    assert gauge.overload is not None


def test_clock_steps_backwards_or_repeated_samples_are_harmless() -> None:
    gauge = LoadGauge()
    gauge.sample(10.0, 1.0, 0.0)
    gauge.sample(10.0, 2.0, 0.0)  # no wall time passed
    gauge.sample(10.5, 1.5, -0.01)  # CPU clock went back, timer early
    assert gauge.cpu == 0.0 and gauge.lag_s == 0.0


async def test_measuring_a_loop_that_blocks_shows_cpu_and_lag() -> None:
    gauge = LoadGauge()
    task = asyncio.create_task(measure(gauge, interval_s=0.05))
    try:
        for _ in range(20):
            end = time.monotonic() + 0.04
            while time.monotonic() < end:  # a call's work hogging the loop
                pass
            await asyncio.sleep(0)
    finally:
        task.cancel()
    assert gauge.cpu > 0.5
    assert gauge.lag_s > 0.01
