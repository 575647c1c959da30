"""The concurrency ramp: load calls from one Chromium page, step by step, while
two probe calls time the echo and /proc times the transceiver."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

import aiohttp
import call_aiortc
import call_browser
from call_browser import BenchError
from call_procs import CpuMeter
from call_profile import Profiler
from call_report import ADDED_P95_LIMIT_MS, print_step
from call_stats import latency_figures
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import Page

from talkwire.client import CallFailed
from talkwire.stack import Stack

# Past these the next step can only be worse: stop the ramp.
STOP_ADDED_P95_MS = 100.0
STOP_CPU = 0.95  # cores: saturated
PROBE_CALLS = 2  # one aiortc, one Chromium
LOAD_CORE = 1
LOAD_SATURATED = 0.95
BASELINE_TRIES = 2
TRANSCEIVER_SATURATED = STOP_CPU
REFINE_MAX = 3  # extra steps bisecting between the last good and the first bad step
REFINE_RESOLUTION = 2  # calls
IDLE_WAIT_S = call_browser.IDLE_POLL_S * call_browser.IDLE_POLL_MAX
REFUSED_STATUS = 503  # admission: signaling found no transceiver with room


class AdmissionRefused(Exception):
    """Signaling refused calls of a step because every transceiver declared itself
    full: capacity is reached below this step, which is a finding, not a failure."""

    def __init__(self, calls: int, refused: int, detail: str) -> None:
        super().__init__(f"{refused} of {calls} calls refused: {detail}")
        self.record = {"calls": calls, "refused": refused, "detail": detail}


async def measure_step(
    probes: Probes,
    load: Page,
    meter: CpuMeter,
    calls: int,
    load_calls: int,
    args: argparse.Namespace,
    profile: Profiler | None,
) -> dict[str, Any]:
    rtp0, t0 = await call_browser.load_rtp(load), time.monotonic()
    meter.start()
    recording = asyncio.ensure_future(profile.record(args.window)) if profile else None
    try:
        aiortc_rtt, chromium_rtt, _ = await asyncio.gather(
            probes.aiortc.measure(args.bursts),
            call_browser.demo_latency(probes.chromium, args.bursts),
            asyncio.sleep(args.window),
        )
        cpu = meter.stop()
    except BaseException:
        if recording is not None:
            recording.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await recording
        raise
    rtp1, t1 = await call_browser.load_rtp(load), time.monotonic()
    step: dict[str, Any] = {
        "calls": calls,
        "load_calls": load_calls,
        "latency": latency_figures(aiortc_rtt),
        "chromium_latency": latency_figures(chromium_rtt),
        "cpu": cpu.to_json(),
        **transceiver_cpu(cpu.process, calls),
        "foreign_cores": round(cpu.foreign, 3),
    }
    if load_calls:
        # Proof that every load call echoes: packets per call-second both ways (50 = all),
        # over the calls up at both ends of the window.
        both = rtp0.keys() & rtp1.keys()
        span = (t1 - t0) * max(1, len(both))
        sent, received, lost = (
            sum(rtp1[k][i] - rtp0[k][i] for k in both) for i in range(3)
        )  # fmt: skip
        step["load_packets_per_call_second"] = {
            "sent": round(sent / span, 1), "received": round(received / span, 1),
        }  # fmt: skip
        step["load_packets_lost"] = lost
        step["load_alive"] = len(rtp1)
    if recording is not None:
        step["profile"] = await recording
    return step


def transceiver_cpu(process: dict[str, float], calls: int) -> dict[str, Any]:
    """All transceivers' CPU (cores), each one's, and the busiest: it saturates first."""
    split = {name: round(v, 4) for name, v in process.items() if name.startswith("transceiver")}
    total = sum(split.values())
    return {
        "transceiver_cores": round(total, 4),
        "transceiver_split": split,
        "transceiver_busiest": max(split.values()),
        "cpu_ms_per_call_second": round(total * 1000 / calls, 2),
    }


class Probes:
    """The two probe calls of a step, fresh for each step so that one step's
    trouble (a call the server dropped, a jitter buffer grown by an overload)
    does not carry into the next: an aiortc client (its figure decides: no
    adaptive jitter buffer, so it measures the path) and the demo page in
    Chromium (reported: what a browser user hears, NetEq included)."""

    def __init__(self, stack: Stack, http: aiohttp.ClientSession, demo: Page) -> None:
        self.stack = stack
        self.http = http
        self.chromium = demo
        self._aiortc: call_aiortc.Probe | None = None

    @property
    def aiortc(self) -> call_aiortc.Probe:
        assert self._aiortc is not None, "probes not started"
        return self._aiortc

    async def start(self) -> None:
        self._aiortc = call_aiortc.Probe(self.stack)
        await self._aiortc.start(self.http)
        await call_browser.demo_connect(self.chromium)

    async def stop(self) -> None:
        await call_browser.demo_hangup(self.chromium)
        if self._aiortc is not None:
            await self._aiortc.stop(self.http)
            self._aiortc = None


def added(step: dict[str, Any], baseline: dict[str, Any], key: str) -> float | None:
    p95, base = step[key]["p95"], baseline[key]["p95"]
    return None if p95 is None or base is None else round(p95 - base, 1)


class Ramp:
    """Steps the load up (then bisects between the last good and the first bad
    step), measuring each with the probes and the CPU meter."""

    def __init__(
        self,
        probes: Probes,
        load: Page,
        http: aiohttp.ClientSession,
        stack: Stack,
        meter: CpuMeter,
        args: argparse.Namespace,
        profile: Profiler | None,
    ) -> None:
        self.probes = probes
        self.load = load
        self.http = http
        self.stack = stack
        self.meter = meter
        self.args = args
        self.profile = profile
        self.baseline: dict[str, Any] = {}
        self.steps: list[dict[str, Any]] = []
        self.refused: list[dict[str, Any]] = []

    async def measure_baseline(self) -> None:
        """The probes alone, twice with fresh calls; the lower aiortc p95 counts. A call
        that starts during a hiccup can carry a standing backlog for seconds, and an
        unlucky baseline would make every loaded step look better than it is."""
        candidates = []
        for _ in range(BASELINE_TRIES):
            await self.probes.stop()
            await self.probes.start()
            await asyncio.sleep(self.args.settle)  # the probes' own connect bursts settle
            candidate = await measure_step(
                self.probes, self.load, self.meter, PROBE_CALLS, 0, self.args, self.profile
            )
            print_step(candidate)
            candidates.append(candidate)
        measured = [c for c in candidates if c["latency"]["p95"] is not None]
        self.baseline = min(measured or candidates, key=lambda c: c["latency"]["p95"] or 0)
        self.baseline["candidates_p95_ms"] = [c["latency"]["p95"] for c in candidates]

    async def step(self, n: int, refine: bool = False) -> dict[str, Any]:
        """Sets the load to ``n`` calls, starts fresh probes, lets it settle, measures."""
        await self.probes.stop()
        if refine:
            # After an overload the server may have ended calls Chromium still thinks
            # are up (it notices only when consent expires): start from none.
            await call_browser.load_set(self.load, self.stack, 0)
            await call_browser.wait_active(self.http, self.stack, 0)
        status = await call_browser.load_set(self.load, self.stack, n)
        if status.get("refused"):
            said = [e for e in status["errors"] if f" {REFUSED_STATUS} " in e]
            raise AdmissionRefused(n + PROBE_CALLS, status["refused"], (said or ["503"])[0])
        try:
            await self.probes.start()
        except (CallFailed, BenchError) as exc:
            if f" {REFUSED_STATUS}:" not in str(exc):
                raise
            raise AdmissionRefused(n + PROBE_CALLS, 1, str(exc)) from exc
        active = await call_browser.wait_active(self.http, self.stack, n + PROBE_CALLS)
        spread = await call_browser.active_by_transceiver(self.http, self.stack)
        # Handshakes and agent connects of the newest calls finish before the window.
        await asyncio.sleep(self.args.settle)
        step = await measure_step(
            self.probes, self.load, self.meter, active, n, self.args, self.profile
        )
        step["load"] = status
        step["refine"] = refine
        step["active"] = active
        step["calls_by_transceiver"] = spread
        # Calls the server ended during the window (an overloaded call can fail as stalled).
        step["dropped"] = n + PROBE_CALLS - await call_browser.active_calls(self.http, self.stack)
        step["added_p95_ms"] = added(step, self.baseline, "latency")
        step["chromium_added_p95_ms"] = added(step, self.baseline, "chromium_latency")
        step["load_side_saturated"] = (
            step["cpu"]["core_busy"].get(str(LOAD_CORE), 0) > LOAD_SATURATED
        )
        step["ok"] = bool(
            status["connected"] == n
            and step.get("load_alive", 0) == n
            and active == n + PROBE_CALLS
            and step["dropped"] <= 0
            and step["latency"]["lost"] == 0
            and step["added_p95_ms"] is not None
            and step["added_p95_ms"] < ADDED_P95_LIMIT_MS
            and step["transceiver_busiest"] < 1.0
        )
        self.steps.append(step)
        print_step(step)
        return step

    async def admitted_step(self, n: int, refine: bool = False) -> dict[str, Any] | None:
        """The step, or None (recorded) when admission refused some of its calls."""
        try:
            return await self.step(n, refine)
        except AdmissionRefused as refusal:
            self.refused.append(refusal.record)
            print(f"  {n:5d}  admission refused: {refusal}", flush=True)
            return None

    async def run(self) -> None:
        good, bad = 0, None
        for n in self.args.steps:
            step = await self.admitted_step(n)
            if step is None:
                bad = n if bad is None else bad
                break
            if step["ok"] and bad is None:
                good = n
            elif not step["ok"] and bad is None:
                bad = n
            if (
                step["load"]["connected"] < n
                or step.get("load_alive", 0) < n
                or step["dropped"] > 0
                or self.leaked(step)
                or step["transceiver_busiest"] >= STOP_CPU
                or (step["added_p95_ms"] or 0) >= STOP_ADDED_P95_MS
            ):
                break
        # Bisect the gap the coarse steps left, a bounded number of times.
        for _ in range(REFINE_MAX):
            if bad is None or bad - good <= max(REFINE_RESOLUTION, bad // 10):
                break
            mid = (good + bad) // 2
            step = await self.admitted_step(mid, refine=True)
            if step is None:
                bad = mid
                continue
            if self.leaked(step):
                break
            if step["ok"]:
                good = mid
            else:
                bad = mid

    @staticmethod
    def leaked(step: dict[str, Any]) -> bool:
        """The transceiver holds more calls than are up: hung-up calls did not end
        (seen after overload), so the probes' figures no longer mean anything."""
        extra = int(step["active"]) - int(step["load_calls"]) - PROBE_CALLS
        if extra > 0:
            print(
                f"  the transceiver still holds {extra} hung-up calls {IDLE_WAIT_S:.0f} s after"
                " their hangup: stopping the ramp",
                flush=True,
            )
        return extra > 0


async def ramp(
    demo: Page,
    load: Page,
    http: aiohttp.ClientSession,
    stack: Stack,
    groups: dict[str, list[int]],
    args: argparse.Namespace,
    profile: Profiler | None,
) -> dict[str, Any]:
    probes = Probes(stack, http, demo)
    runner = Ramp(probes, load, http, stack, CpuMeter(groups), args, profile)
    error = None
    try:
        await runner.measure_baseline()
        await runner.run()
    except (BenchError, CallFailed, TimeoutError, PlaywrightError, aiohttp.ClientError) as exc:
        # Keep the steps measured so far; the summary says where it stopped.
        error = f"{type(exc).__name__}: {exc}"
        print(f"  the ramp stopped: {error}", flush=True)
    finally:
        closed = await call_browser.load_set(load, stack, 0)
        await probes.stop()
        left = await call_browser.wait_active(http, stack, 0)
    return {
        "baseline": runner.baseline,
        "steps": runner.steps,
        "refused": runner.refused,
        "closed": closed["closed"],
        "left_active": left,
        "error": error,
    }


def capacity(result: dict[str, Any]) -> dict[str, Any]:
    """The most calls that passed with no smaller count failing, and the marginal CPU
    cost per call (least squares over the unsaturated steps, baseline included)."""
    steps = sorted(result["steps"], key=lambda s: s["calls"])
    max_ok = None
    for step in steps:
        if not step["ok"]:
            break
        max_ok = step["calls"]
    base = result["baseline"]
    points = [(base["calls"], base["transceiver_cores"])] if base else []
    # Saturated steps (CPU capped) and steps that lost calls under the meter would bend the line.
    points += [
        (s["calls"], s["transceiver_cores"])
        for s in steps
        if s["transceiver_busiest"] < TRANSCEIVER_SATURATED and s.get("dropped", 0) <= 0
    ]
    slope = None
    if len(points) >= 2:
        mx = sum(x for x, _ in points) / len(points)
        my = sum(y for _, y in points) / len(points)
        var = sum((x - mx) ** 2 for x, _ in points)
        if var > 0:
            slope = sum((x - mx) * (y - my) for x, y in points) / var
    return {
        "max_calls_ok": max_ok,
        "largest_step_tried": max((s["calls"] for s in steps), default=None),
        "marginal_cpu_ms_per_call_second": None if slope is None else round(slope * 1000, 2),
        "calls_per_core_by_cpu": None if not slope else int(1 / slope),
    }
