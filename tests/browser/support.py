"""Helpers for the browser tests: fake-microphone WAVs, launching Debian's
Chromium, and page-side waits that fail with what the page knew."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from playwright.async_api import BrowserContext, Page, Playwright
from playwright.async_api import TimeoutError as PlaywrightTimeout

from talkwire.stack import Stack

# /usr/bin/chromium is Debian's shell wrapper; playwright needs the binary.
CHROMIUM = Path("/usr/lib/chromium/chromium")
RATE = 48_000
TONE_HZ = 440.0
# Bounds for page-side waits, not expectations: they only turn a hang into a failure.
CONNECT_TIMEOUT_MS = 15_000
WAIT_TIMEOUT_MS = 10_000
ACTIVE_POLL_S = 0.05
ACTIVE_POLL_MAX = 200  # 10 s


# -- fake microphones ---------------------------------------------------------


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    pcm = np.clip(samples, -1.0, 1.0)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((pcm * 32767).astype("<i2").tobytes())
    return path


def tone_wav(path: Path, hz: float = TONE_HZ, seconds: float = 4.0, level: float = 0.3) -> Path:
    # A whole number of cycles, so Chromium's looping of the file is seamless.
    n = round(round(seconds * hz) * RATE / hz)
    t = np.arange(n) / RATE
    return write_wav(path, level * np.sin(2 * np.pi * hz * t))


def speech_wav(path: Path, text: str, silence_s: float = 1.5) -> Path:
    """espeak-ng speech at 48 kHz, then silence long enough for any VAD to end the turn."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.fail("espeak-ng is not installed: run scripts/bootstrap")
    raw = path.with_suffix(".espeak.wav")
    subprocess.run([espeak, "-w", str(raw), text], check=True, capture_output=True, timeout=30)
    with wave.open(str(raw), "rb") as w:
        assert w.getsampwidth() == 2 and w.getnchannels() == 1, "espeak-ng wrote unexpected PCM"
        rate = w.getframerate()
        speech = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2") / 32768.0
    t_out = np.arange(int(len(speech) * RATE / rate)) / RATE
    resampled = np.interp(t_out, np.arange(len(speech)) / rate, speech)
    peak = float(np.max(np.abs(resampled))) or 1.0
    gap = np.zeros(int(silence_s * RATE))
    return write_wav(path, np.concatenate([gap, 0.7 * resampled / peak, gap]))


# -- Chromium ----------------------------------------------------------------------


def chromium_args(mic_wav: Path) -> list[str]:
    return [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={mic_wav}",
        # Without it Chromium gathers no loopback candidate: no ICE on this host.
        "--allow-loopback-in-peer-connection",
        "--autoplay-policy=no-user-gesture-required",
    ]


@asynccontextmanager
async def chromium(
    playwright: Playwright, user_data_dir: Path, mic_wav: Path
) -> AsyncIterator[BrowserContext]:
    """One Chromium process whose microphone plays ``mic_wav`` (in a loop)."""
    context = await playwright.chromium.launch_persistent_context(
        str(user_data_dir),
        executable_path=str(CHROMIUM),
        headless=True,
        args=chromium_args(mic_wav),
    )
    try:
        yield context
    finally:
        await context.close()


# -- page helpers ----------------------------------------------------------------


async def snapshot(page: Page, name: str = "talkwire") -> str:
    """What the page knows, for failure messages."""
    try:
        return str(
            await page.evaluate(
                f"""() => {{
                const t = window.{name};
                if (!t) return "no window.{name}";
                const out = {{}};
                for (const [k, v] of Object.entries(t)) {{
                    if (typeof v === "function" || k === "pc" || k === "dc") continue;
                    if (k.endsWith("Sdp")) continue;
                    out[k] = v;
                }}
                if (t.spectrum) out.spectrumNow = t.spectrum();
                return JSON.stringify(out);
            }}"""
            )
        )
    except Exception as exc:
        return f"(page unreadable: {exc})"


async def wait_for(
    page: Page,
    expression: str,
    what: str,
    timeout_ms: int = WAIT_TIMEOUT_MS,
    name: str = "talkwire",
) -> None:
    try:
        await page.wait_for_function(expression, timeout=timeout_ms)
    except PlaywrightTimeout:
        known = await snapshot(page, name)
        raise AssertionError(f"timed out waiting for {what}: {known}") from None


def hears_tone(hz: float = TONE_HZ, name: str = "talkwire", min_rms: float = 0.05) -> str:
    """A page expression: the remote audio is loud and its peak is ``hz``
    (±2 FFT bins of an 8192-point analyser at 48 kHz)."""
    return (
        f"(() => {{ const s = window.{name}.spectrum();"
        f" return s.rms > {min_rms} && Math.abs(s.peakHz - {hz}) < 12; }})()"
    )


async def connect(page: Page) -> None:
    await page.click("#connect")
    await wait_for(
        page,
        "talkwire.state === 'connected' && (talkwire.eventCounts['session.created'] || 0) > 0",
        "the demo page to connect and receive session.created",
        CONNECT_TIMEOUT_MS,
    )


async def hangup(page: Page) -> None:
    await page.click("#hangup")
    await wait_for(page, "talkwire.state === 'closed'", "the page to hang up")


def sdp_candidates(sdp: str) -> list[tuple[str, int]]:
    """(address, port) of every ``a=candidate`` line."""
    found = re.findall(r"^a=candidate:\S+ \d+ \S+ \d+ (\S+) (\d+) typ ", sdp, flags=re.M)
    return [(address, int(port)) for address, port in found]


def transceiver_udp(stack: Stack) -> tuple[str, int]:
    # Its ready line: "http://HOST:PORT udp HOST:PORT".
    words = stack.components["transceiver"].ready.split()
    host, _, port = words[words.index("udp") + 1].rpartition(":")
    return host.strip("[]"), int(port)


async def active_calls(stack: Stack) -> int:
    async with (
        aiohttp.ClientSession() as http,
        http.get(stack.transceiver_url.rstrip("/") + "/health") as response,
    ):
        body: dict[str, Any] = json.loads(await response.text())
    return int(body["active"])


async def wait_active(stack: Stack, expected: int) -> None:
    """Polls the transceiver's health (it has no push channel), bounded."""
    seen = -1
    for _ in range(ACTIVE_POLL_MAX):
        seen = await active_calls(stack)
        if seen == expected:
            return
        await asyncio.sleep(ACTIVE_POLL_S)
    raise AssertionError(f"transceiver has {seen} active calls, expected {expected}")
