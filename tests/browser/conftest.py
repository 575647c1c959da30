"""Headless Chromium (Debian's, never a downloaded one) against a whole
talkwire stack on loopback, with a fake microphone that plays a WAV made at
test time. Every wait is on a page-side condition, bounded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Playwright, async_playwright
from support import CHROMIUM, tone_wav

from talkwire.stack import Stack, StackConfig


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack() -> AsyncIterator[Stack]:
    s = Stack(StackConfig(http_port=0, relay_port=0))
    await s.start()
    try:
        yield s
    finally:
        await s.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def playwright() -> AsyncIterator[Playwright]:
    if not CHROMIUM.is_file():
        pytest.fail(f"Debian's chromium is not installed ({CHROMIUM}): run scripts/bootstrap")
    async with async_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def tone_mic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tone_wav(tmp_path_factory.mktemp("mic") / "tone-440.wav")
