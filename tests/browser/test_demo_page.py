"""The demo page in headless Chromium: a call through the relay to the echo
agent, measured in the page with WebAudio; speech events from the agent's
VAD; a relay restart under a live call."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Page, Playwright
from support import (
    CONNECT_TIMEOUT_MS,
    active_calls,
    chromium,
    connect,
    hangup,
    hears_tone,
    sdp_candidates,
    speech_wav,
    transceiver_udp,
    wait_active,
    wait_for,
)

from talkwire.stack import Stack

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

TIMING_KEYS = ("answer", "ice", "dtls", "channel", "firstAudio")


@pytest_asyncio.fixture(loop_scope="module")
async def tone_page(
    playwright: Playwright, stack: Stack, tone_mic: Path, tmp_path: Path
) -> AsyncIterator[Page]:
    """The demo page in a fresh Chromium whose microphone plays 440 Hz."""
    async with chromium(playwright, tmp_path / "profile", tone_mic) as context:
        page = await context.new_page()
        # The raw microphone: an echo canceller would cancel the echoed tone.
        await page.goto(stack.demo_url + "?aec=0")
        try:
            yield page
        finally:
            await page.evaluate("talkwire.hangup()")


async def test_call_through_relay_hears_its_tone_and_hangs_up(
    tone_page: Page, stack: Stack
) -> None:
    page = tone_page
    before = await active_calls(stack)
    await connect(page)
    assert await active_calls(stack) == before + 1

    await wait_for(page, hears_tone(), "the echoed 440 Hz tone")
    await wait_for(page, "talkwire.timings.firstAudio !== undefined", "first audio timing")
    timings = await page.evaluate("talkwire.timings")
    assert set(TIMING_KEYS) <= timings.keys(), timings
    # Causal order: ICE needs the answer, DTLS runs over ICE, SCTP over DTLS.
    assert 0 < timings["answer"] <= timings["ice"] <= timings["dtls"] <= timings["channel"]
    assert timings["firstAudio"] > timings["answer"]

    # The only address the browser learns or uses is the relay's.
    relay = stack.relay_address
    answer = await page.evaluate("talkwire.answerSdp")
    candidates = sdp_candidates(answer)
    assert candidates, answer
    assert set(candidates) == {relay}, candidates
    t_host, t_port = transceiver_udp(stack)
    assert t_port != relay[1]
    assert f"{t_host} {t_port} " not in answer and f":{t_port}" not in answer, answer
    page_candidates = await page.evaluate("talkwire.path.answer")
    assert {(c["address"], c["port"]) for c in page_candidates} == {relay}
    await wait_for(page, "talkwire.path.selected !== null", "the selected candidate pair")
    selected = await page.evaluate("talkwire.path.selected")
    assert (selected["address"], selected["port"]) == relay

    latency = await page.evaluate("talkwire.measureLatency(8)")
    assert latency["samples"], latency
    assert latency["p50"] > 0
    # The mic is live again after the measurement: the tone comes back.
    await wait_for(page, hears_tone(), "the tone after the latency measurement")
    print(f"\ndemo page timings (ms after offer POST): {json.dumps(timings)}")
    print(f"audio round trip: {json.dumps(latency)}")

    await hangup(page)
    assert await page.evaluate("talkwire.hangupStatus") in (200, 204)
    await wait_active(stack, before)


async def test_speech_reaches_the_agent_vad(
    playwright: Playwright, stack: Stack, tmp_path: Path
) -> None:
    mic = speech_wav(tmp_path / "speech.wav", "Hello from the browser. Can you hear me?")
    async with chromium(playwright, tmp_path / "profile", mic) as context:
        page = await context.new_page()
        await page.goto(stack.demo_url + "?aec=0")
        await connect(page)
        try:
            await wait_for(
                page,
                "(talkwire.eventCounts['input_audio_buffer.speech_stopped'] || 0) > 0",
                "speech_started then speech_stopped from the agent",
                CONNECT_TIMEOUT_MS,
            )
            types = [e["type"] for e in await page.evaluate("talkwire.events")]
            started = types.index("input_audio_buffer.speech_started")
            assert started < types.index("input_audio_buffer.speech_stopped"), types
            # The echo carried the speech back.
            assert await page.evaluate("talkwire.remote.onsets") > 0
        finally:
            await page.evaluate("talkwire.hangup()")


async def test_relay_restart_under_live_call_resumes_without_ice_restart(
    tone_page: Page, stack: Stack
) -> None:
    page = tone_page
    await connect(page)
    await wait_for(page, hears_tone(), "the echoed tone before the restart")
    ufrags = await page.evaluate("talkwire.currentUfrags()")
    relay = stack.relay_address

    await stack.kill("relay")
    await wait_for(page, "!talkwire.remote.loud", "the echo to stop while the relay is down")
    await stack.start_relay()
    assert stack.relay_address == relay

    await wait_for(page, hears_tone(), "the echo to resume through the new relay")
    assert await page.evaluate("talkwire.currentUfrags()") == ufrags
    ice_states = await page.evaluate("talkwire.iceStates")
    assert "failed" not in ice_states, ice_states
    assert await page.evaluate("talkwire.state") == "connected"
