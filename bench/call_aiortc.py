"""The aiortc client side of the call benchmark (talkwire.client.RealtimeCall)."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import aiohttp
from call_browser import server_timings
from call_stats import summary

from talkwire.client import RealtimeCall, tone
from talkwire.echo_probe import EchoProbe
from talkwire.stack import Stack

FIRST_AUDIO_TIMEOUT_S = 5.0
POLL_S = 0.005  # RealtimeCall records audio but has no event for "first audio"
CONNECT_TIMEOUT_S = 10.0


async def _wait_first_audio(call: RealtimeCall) -> None:
    deadline = time.monotonic() + FIRST_AUDIO_TIMEOUT_S
    while call.timings.first_audio is None and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(POLL_S)


async def setup(stack: Stack, http: aiohttp.ClientSession, n: int) -> list[dict[str, Any]]:
    """n calls one after another: client milestones (ms after the offer POST) and the server's."""
    out = []
    for _ in range(n):
        call = RealtimeCall(stack.signaling_url, stack.config.api_key)
        # Queued before connecting: it plays from the first frame aiortc pulls.
        call.source.play(tone(440.0, 1.0))
        try:
            await call.connect(timeout=CONNECT_TIMEOUT_S, http=http)
            await _wait_first_audio(call)
            server = await server_timings(http, stack, call.location.rsplit("/", 1)[-1])
            out.append({"client": call.timings.as_ms(), "server": server})
        finally:
            await call.hangup(http=http)
    return out


def record_rtp_arrivals(call: RealtimeCall) -> list[tuple[float, int]]:
    """(monotonic arrival, RTP timestamp) of every audio packet the call receives."""
    arrivals: list[tuple[float, int]] = []
    for transceiver in call.pc.getTransceivers():
        if transceiver.kind != "audio":
            continue
        receiver = transceiver.receiver
        original = receiver._handle_rtp_packet

        async def hooked(packet: Any, arrival_time_ms: int, original: Any = original) -> None:
            arrivals.append((time.monotonic(), packet.timestamp))
            await original(packet, arrival_time_ms=arrival_time_ms)

        receiver._handle_rtp_packet = hooked  # type: ignore[method-assign]
    return arrivals


def pacing(arrivals: list[tuple[float, int]], clock_hz: int = 48000) -> dict[str, Any]:
    """How regularly the server's RTP arrived: each packet's arrival against its
    RTP timestamp. A receiver's jitter buffer must cover the spread."""
    if len(arrivals) < 3:
        return {}
    t0, ts0 = arrivals[0]
    unwrapped = 0
    previous = ts0
    relative = []
    for at, ts in arrivals:
        step = (ts - previous) & 0xFFFFFFFF
        unwrapped += step if step < 0x80000000 else step - 0x100000000
        previous = ts
        relative.append(1000 * ((at - t0) - unwrapped / clock_hz))
    gaps = [abs(b - a) for a, b in itertools.pairwise(relative)]
    spread = sorted(r - min(relative) for r in relative)
    return {
        "packets": len(arrivals),
        "interarrival_deviation_ms": summary(gaps),
        "relative_delay_ms": {
            "p50": round(spread[len(spread) // 2], 2),
            "p95": round(spread[min(len(spread) - 1, int(0.95 * len(spread)))], 2),
            "max": round(spread[-1], 2),
        },
    }


class Probe:
    """One call that times tone bursts through the echo agent the way the demo
    page does: wait for quiet, play a burst, time it from the frame that carried
    its start to the first loud frame back. The client's jitter buffer has no
    prefetch, so the figure is the path, not a playout policy."""

    def __init__(self, stack: Stack) -> None:
        self.call = RealtimeCall(stack.signaling_url, stack.config.api_key)
        self.echo = EchoProbe(self.call)
        self.arrivals = record_rtp_arrivals(self.call)

    async def start(self, http: aiohttp.ClientSession) -> None:
        await self.call.connect(timeout=CONNECT_TIMEOUT_S, http=http)

    async def stop(self, http: aiohttp.ClientSession) -> None:
        await self.call.hangup(http=http)

    async def measure(self, bursts: int) -> dict[str, Any]:
        begin = time.monotonic()
        results = [await self.echo.round_trip() for _ in range(bursts)]
        return {
            "n": bursts,
            "samples": [r for r in results if r is not None],
            "lost": sum(r is None for r in results),
            "server_pacing": pacing([a for a in self.arrivals if a[0] >= begin]),
        }


async def latency(stack: Stack, http: aiohttp.ClientSession, bursts: int) -> dict[str, Any]:
    probe = Probe(stack)
    try:
        await probe.start(http)
        return await probe.measure(bursts)
    finally:
        await probe.stop(http)
