"""Headless Chromium for the call benchmark: the demo page (setup timings,
echo round trip, the probe call), the floor page (two peer connections in
one page), and the load page (many calls from one renderer)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from playwright.async_api import Page
from playwright.async_api import TimeoutError as PlaywrightTimeout

from talkwire.internal_auth import bearer
from talkwire.stack import Stack

ROOT = Path(__file__).resolve().parent.parent
PAGES = Path(__file__).resolve().parent / "pages"
sys.path.insert(0, str(ROOT / "tests" / "browser"))
from support import CHROMIUM, chromium, tone_wav  # noqa: E402

__all__ = ["CHROMIUM", "chromium", "tone_wav"]

CONNECT_TIMEOUT_MS = 15_000
STEP_TIMEOUT_MS = 10_000
# One burst waits at most 1.5 s for its echo (the pages' BURST_TIMEOUT_MS), plus the quiet.
BURST_BOUND_MS = 3_500
IDLE_POLL_S = 0.05
IDLE_POLL_MAX = 200


class BenchError(Exception):
    """A measurement could not be taken; the message says what the page knew."""


@asynccontextmanager
async def page_server() -> AsyncIterator[str]:
    """Serves bench/pages on http://127.0.0.1:PORT (a secure context for WebRTC)."""
    app = web.Application()
    app.router.add_static("/", PAGES)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def wait_page(page: Page, expression: str, what: str, timeout_ms: int) -> None:
    try:
        await page.wait_for_function(expression, timeout=timeout_ms)
    except PlaywrightTimeout:
        raise BenchError(f"timed out waiting for {what}") from None


async def active_by_transceiver(http: aiohttp.ClientSession, stack: Stack) -> dict[str, int]:
    """Each transceiver's live calls, by its id (its component name in the stack)."""
    counts = {}
    for url in stack.transceiver_urls:
        async with http.get(url.rstrip("/") + "/health") as response:
            health = await response.json(content_type=None)
        counts[str(health["id"])] = int(health["active"])
    return counts


async def active_calls(http: aiohttp.ClientSession, stack: Stack) -> int:
    return sum((await active_by_transceiver(http, stack)).values())


async def wait_active(http: aiohttp.ClientSession, stack: Stack, expected: int) -> int:
    """Polls the transceivers' health (no push channel), bounded; returns the last total."""
    seen = -1
    for _ in range(IDLE_POLL_MAX):
        seen = await active_calls(http, stack)
        if seen == expected:
            return seen
        await asyncio.sleep(IDLE_POLL_S)
    return seen


async def server_timings(http: aiohttp.ClientSession, stack: Stack, call_id: str) -> dict[str, Any]:
    """The transceiver's own milestones for a live call (ms after it got the offer)."""
    for base in stack.transceiver_urls:  # whichever one signaling placed it on
        url = f"{base.rstrip('/')}/calls/{call_id}"
        async with http.get(url, headers=bearer(stack.internal_secret)) as response:
            if response.status == 200:
                body: dict[str, Any] = await response.json(content_type=None)
                return dict(body.get("timings_ms", {}))
    return {}


# What Chromium's receiver did with the audio it got (cumulative; diff two).
_RECEIVE_STATS = """async (pc) => {
  const out = {};
  const stats = await pc.getStats();
  stats.forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") {
      Object.assign(out, {
        jitterBufferDelay: s.jitterBufferDelay, jitterBufferTargetDelay: s.jitterBufferTargetDelay,
        jitterBufferEmittedCount: s.jitterBufferEmittedCount, packetsReceived: s.packetsReceived,
        packetsLost: s.packetsLost, concealedSamples: s.concealedSamples,
        removedSamplesForAcceleration: s.removedSamplesForAcceleration,
        insertedSamplesForDeceleration: s.insertedSamplesForDeceleration, jitter: s.jitter,
      });
    }
    if (s.type === "media-playout") {
      Object.assign(out, {
        totalPlayoutDelay: s.totalPlayoutDelay, totalSamplesCount: s.totalSamplesCount,
      });
    }
  });
  return out;
}"""


async def receive_stats(page: Page, pc_expression: str) -> dict[str, float]:
    stats: dict[str, float] = await page.evaluate(
        f"(async () => ({_RECEIVE_STATS})({pc_expression}))()"
    )
    return stats


def receive_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float | None]:
    """Chromium's receive side over a window: mean jitter-buffer delay and target, playout
    delay (ms), and what NetEq did (concealed, accelerated, decelerated samples)."""

    def d(key: str) -> float:
        return float(after.get(key, 0) or 0) - float(before.get(key, 0) or 0)

    def mean_ms(total: str, count: str) -> float | None:
        return round(1000 * d(total) / d(count), 1) if d(count) > 0 else None

    return {
        "jitter_buffer_ms": mean_ms("jitterBufferDelay", "jitterBufferEmittedCount"),
        "jitter_buffer_target_ms": mean_ms("jitterBufferTargetDelay", "jitterBufferEmittedCount"),
        "playout_ms": mean_ms("totalPlayoutDelay", "totalSamplesCount"),
        "packets": d("packetsReceived"),
        "lost": d("packetsLost"),
        "concealed_samples": d("concealedSamples"),
        "accelerated_samples": d("removedSamplesForAcceleration"),
        "decelerated_samples": d("insertedSamplesForDeceleration"),
        "jitter_ms": round(1000 * float(after.get("jitter", 0) or 0), 1),
    }


# -- the demo page ----------------------------------------------------------------


async def open_demo(page: Page, stack: Stack) -> None:
    await page.goto(stack.demo_url + "?aec=0")
    await wait_page(page, "window.talkwire && talkwire.state === 'idle'", "the demo page", 10_000)


async def demo_connect(page: Page) -> None:
    await page.evaluate("talkwire.connect()")
    await wait_page(
        page,
        "talkwire.state !== 'connecting' && (talkwire.state !== 'connected'"
        " || talkwire.timings.firstAudio !== undefined)",
        "the demo call to connect and hear its echo",
        CONNECT_TIMEOUT_MS,
    )
    state = await page.evaluate("talkwire.state")
    if state != "connected":
        raise BenchError(f"demo call ended {state}: {await page.evaluate('talkwire.error')}")


async def demo_hangup(page: Page) -> None:
    await page.evaluate("talkwire.hangup()")


async def demo_setup(
    page: Page, stack: Stack, http: aiohttp.ClientSession, n: int
) -> list[dict[str, Any]]:
    """n calls, one after another: the page's timings and the transceiver's."""
    out = []
    for _ in range(n):
        await demo_connect(page)
        timings: dict[str, Any] = await page.evaluate("({...talkwire.timings})")
        call_url: str = await page.evaluate("talkwire.callUrl")
        server = await server_timings(http, stack, call_url.rsplit("/", 1)[-1])
        await demo_hangup(page)
        await wait_active(http, stack, 0)
        out.append({"client": timings, "server": server})
    return out


async def demo_latency(page: Page, bursts: int) -> dict[str, Any]:
    before = await receive_stats(page, "talkwire.pc")
    result: dict[str, Any] | None = await asyncio.wait_for(
        page.evaluate(f"talkwire.measureLatency({bursts})"),
        (bursts * BURST_BOUND_MS + 5000) / 1000,
    )
    if result is None:
        raise BenchError("the demo page did not measure (call not connected)")
    result["receiver"] = receive_delta(before, await receive_stats(page, "talkwire.pc"))
    return result


# -- the floor page --------------------------------------------------------------


async def floor_connect(page: Page) -> dict[str, Any]:
    await page.evaluate("floor.connect()")
    await wait_page(
        page,
        "floor.state === 'failed' || (floor.state === 'connected'"
        " && floor.timings.firstAudio !== undefined)",
        "the floor peer connections to connect and echo",
        CONNECT_TIMEOUT_MS,
    )
    if await page.evaluate("floor.state") != "connected":
        raise BenchError(f"floor call failed: {await page.evaluate('floor.error')}")
    timings: dict[str, Any] = await page.evaluate("({...floor.timings})")
    return timings


async def floor_setup(page: Page, n: int) -> list[dict[str, Any]]:
    out = []
    for _ in range(n):
        out.append({"client": await floor_connect(page)})
        await page.evaluate("floor.hangup()")
    return out


async def floor_latency(page: Page, bursts: int) -> dict[str, Any]:
    await floor_connect(page)
    try:
        before = [await receive_stats(page, f"floor.{pc}") for pc in ("pc1", "pc2")]
        result: dict[str, Any] | None = await asyncio.wait_for(
            page.evaluate(f"floor.measureLatency({bursts})"),
            (bursts * BURST_BOUND_MS + 5000) / 1000,
        )
        after = [await receive_stats(page, f"floor.{pc}") for pc in ("pc1", "pc2")]
    finally:
        await page.evaluate("floor.hangup()")
    if result is None:
        raise BenchError("the floor page did not measure")
    # pc1 hears the echo (as the demo page does); pc2 is the echoing peer.
    result["receiver"] = receive_delta(before[0], after[0])
    result["echo_receiver"] = receive_delta(before[1], after[1])
    return result


# -- the load page ----------------------------------------------------------------


async def load_set(page: Page, stack: Stack, total: int, parallel: int = 4) -> dict[str, Any]:
    """Opens or hangs up calls until the page has ``total``; waits (bounded) until
    the opened ones connect. Returns what the page knows, and how many it closed."""
    closed: int = await asyncio.wait_for(page.evaluate(f"load.closeDownTo({total})"), 60)
    await asyncio.wait_for(
        page.evaluate(
            "([base, key, total, parallel]) => load.openUntil(base, key, total, parallel)",
            [stack.signaling_url, stack.config.api_key, total, parallel],
        ),
        60 + total,
    )
    with contextlib.suppress(PlaywrightTimeout):  # reported below: connected < total
        await page.wait_for_function("load.pending() === 0", timeout=CONNECT_TIMEOUT_MS)
    status: dict[str, Any] = await page.evaluate(
        "({connected: load.connected, failed: load.failed, errors: load.errors.slice(0, 5),"
        " calls: load.calls.length, refused: load.calls.filter((e) => e.refused).length})"
    )
    status["closed"] = closed
    return status


async def load_rtp(page: Page) -> dict[str, list[int]]:
    """Per connected load call: [RTP packets sent, received, lost] so far."""
    rows: dict[str, list[int]] = await asyncio.wait_for(page.evaluate("load.rtpByCall()"), 30)
    return rows
