"""The voice agent over real WebRTC: aiortc client → relay → transceiver → voice agent.

Asserted on the samples the client receives: the spoken answer arrives, and
speaking over it stops it at the client at once (the transceiver drops its
queue), with the Realtime events in order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest
import pytest_asyncio

from talkwire.agents.voice.resample import Resampler
from talkwire.agents.voice.speech import espeak
from talkwire.client import CLIENT_RATE, RealtimeCall
from talkwire.stack import Stack, StackConfig

pytestmark = pytest.mark.asyncio(loop_scope="module")

TURN_TIMEOUT = 20.0
LOUD = 1500


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack() -> AsyncIterator[Stack]:
    s = Stack(StackConfig(http_port=0, relay_port=0, demo=False, voice=True))
    await s.start()
    yield s
    await s.stop()


def speech(text: str, voice: str = "en-us") -> np.ndarray:
    pcm = np.frombuffer(espeak(text, voice), dtype="<i2").astype(np.float32) / 32768.0
    up = Resampler(24000, CLIENT_RATE)
    out = np.concatenate((up.process(pcm), up.flush()))
    return (out * 32767).astype(np.int16)


def loud_frames(call: RealtimeCall, since: float, until: float = float("inf")) -> list[float]:
    return [
        at for at, samples in call.received if since <= at < until and np.abs(samples).max() > LOUD
    ]


async def first_loud(call: RealtimeCall, since: float) -> float:
    for _ in range(int(TURN_TIMEOUT / 0.02)):
        found = loud_frames(call, since)
        if found:
            return found[0]
        await asyncio.sleep(0.02)  # audio arrives at its own pace: poll what was recorded
    raise AssertionError("no agent audio arrived")


async def test_a_question_is_answered_and_barge_in_stops_the_answer_at_the_client(
    stack: Stack,
) -> None:
    call = RealtimeCall(stack.signaling_url, stack.config.api_key, {"type": "realtime"})
    await call.connect()
    try:
        created = await call.next_event("session.created")
        assert created["session"]["model"] == "voice"  # the stack's default with voice on
        asked: list[float] = []
        call.source.play(speech("Tell me a joke."), on_start=asked.append)
        await call.next_event("response.created", timeout=TURN_TIMEOUT)
        answer_starts = await first_loud(call, asked[0])
        # Let it talk for a second, then speak over it.
        await asyncio.sleep(max(0.0, answer_starts + 1.0 - time.monotonic()))
        barged: list[float] = []
        call.source.play(speech("Stop, wait a moment.", "en-gb"), on_start=barged.append)
        truncated = await call.next_event("conversation.item.truncated", timeout=TURN_TIMEOUT)
        done = await call.next_event("response.done", timeout=TURN_TIMEOUT)
        assert done["response"]["status"] == "cancelled"
        assert truncated["audio_end_ms"] >= 900
        # The answer's audio stops at the client within a few frames of the barge-in.
        last = max(loud_frames(call, answer_starts, barged[0] + 1.0))
        assert last - barged[0] < 0.25, f"agent audio went on {last - barged[0]:.3f} s"
        order = [
            e["type"]
            for e in call.event_log
            if e["type"]
            in (
                "input_audio_buffer.speech_started",
                "output_audio_buffer.cleared",
                "conversation.item.truncated",
                "response.done",
            )
        ]
        assert order[-4:] == [
            "output_audio_buffer.cleared",  # the loudness pause, before silero is sure
            "input_audio_buffer.speech_started",
            "conversation.item.truncated",
            "response.done",
        ]
        cleared = [e for e in call.event_log if e["type"] == "output_audio_buffer.cleared"]
        assert cleared[-1]["response_id"] == done["response"]["id"]
    finally:
        await call.hangup()
