"""A full spoken turn in headless Chromium: the demo page, the relay, the voice agent.

Chromium's fake microphone plays an espeak-ng question (in a loop); the page
must show both sides of the conversation and play the agent's answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Playwright
from support import CONNECT_TIMEOUT_MS, chromium, connect, snapshot, speech_wav, wait_for

from talkwire.stack import Stack, StackConfig

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def voice_stack() -> AsyncIterator[Stack]:
    s = Stack(StackConfig(http_port=0, relay_port=0, voice=True))
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


async def test_the_demo_page_holds_a_spoken_turn_with_the_voice_agent(
    playwright: Playwright, voice_stack: Stack, tmp_path: Path
) -> None:
    # Long silences: the looped question must not talk over the answer.
    mic = speech_wav(tmp_path / "question.wav", "What is twelve plus thirty?", silence_s=3.0)
    async with chromium(playwright, tmp_path / "profile", mic) as context:
        page = await context.new_page()
        await page.goto(voice_stack.demo_url + "?aec=0")
        await page.evaluate("talkwire.configLoaded")
        assert await page.input_value("#model") == "voice"  # the server's default
        await connect(page)
        try:
            await wait_for(
                page,
                "(talkwire.eventCounts['response.done'] || 0) > 0",
                "the agent's answer",
                timeout_ms=3 * CONNECT_TIMEOUT_MS,
            )
            lines = await page.evaluate("talkwire.conversation()")
            user = [line for line in lines if line["role"] == "user" and line["final"]]
            agent = [line for line in lines if line["role"] == "assistant" and line["final"]]
            assert user and "12 plus 30" in user[0]["text"], await snapshot(page)
            assert agent and agent[0]["text"] == "12 plus 30 is 42.", await snapshot(page)
            shown = await page.inner_text("#transcript")
            assert "12 plus 30 is 42." in shown
            # The answer was heard, not just written: the page's detector saw it.
            await wait_for(page, "talkwire.remote.onsets > 0", "the agent's voice")
        finally:
            await page.evaluate("talkwire.hangup()")
