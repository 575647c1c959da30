"""Audio between aiortc and the agent: PCM16 mono at the protocol rate.

Inbound, aiortc's Opus decoder gives 48 kHz stereo frames; the agent wants
24 kHz mono. Outbound, the agent's audio arrives in bursts of any size and is
played out in 20 ms frames paced from a monotonic clock. When the line is idle
a frame from the agent goes out at once rather than waiting for the next tick,
which keeps the echo round trip short; queued frames are paced.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fractions
import time
from collections.abc import Callable

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from talkwire.protocol.audio import FRAME_BYTES, FRAME_SAMPLES, RATE, FrameChunker

FRAME_SECONDS = FRAME_SAMPLES / RATE
SILENCE = bytes(FRAME_BYTES)
# Bound on queued agent audio: a stalled peer cannot grow memory without limit.
MAX_QUEUED_SECONDS = 60


class InboundConverter:
    """Decoded aiortc frames -> 20 ms PCM16 mono frames at the protocol rate."""

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        self._chunker = FrameChunker()

    def convert(self, frame: av.AudioFrame) -> list[bytes]:
        out: list[bytes] = []
        for resampled in self._resampler.resample(frame):
            pcm = resampled.to_ndarray().tobytes()
            out.extend(self._chunker.feed(pcm))
        return out


class AgentAudioTrack(MediaStreamTrack):
    """The call's outbound audio: the agent's voice, silence between turns."""

    kind = "audio"

    def __init__(self, on_playing: Callable[[bool], None] | None = None) -> None:
        super().__init__()
        self._chunker = FrameChunker()
        self._frames: collections.deque[bytes] = collections.deque()
        self._arrived = asyncio.Event()
        self._next_at: float | None = None
        self._pts = 0
        self._time_base = fractions.Fraction(1, RATE)
        self._playing = False
        self._on_playing = on_playing
        self.frames_played = 0
        self.first_played_at: float | None = None

    def push(self, pcm: bytes) -> None:
        for frame in self._chunker.feed(pcm):
            if len(self._frames) * FRAME_SECONDS >= MAX_QUEUED_SECONDS:
                self._frames.popleft()
            self._frames.append(frame)
        if self._frames:
            self._arrived.set()

    def clear(self) -> None:
        """Barge-in: drop everything queued, at once."""
        self._frames.clear()
        self._chunker.clear()
        self._arrived.clear()

    @property
    def queued_seconds(self) -> float:
        return len(self._frames) * FRAME_SECONDS

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._next_at is None:
            self._next_at = now
        if self._frames:
            # Paced: never send ahead of the 20 ms clock.
            delay = self._next_at - now
            if delay > 0:
                await asyncio.sleep(delay)
            pcm = self._frames.popleft()
        else:
            # Idle: whichever comes first, agent audio or the next tick.
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), max(0.0, self._next_at - now))
            if self._frames:
                pcm = self._frames.popleft()
                self._next_at = time.monotonic()
            else:
                pcm = SILENCE
        self._next_at += FRAME_SECONDS
        self._set_playing(pcm is not SILENCE)
        return self._frame(pcm)

    def _set_playing(self, playing: bool) -> None:
        if playing:
            self.frames_played += 1
            if self.first_played_at is None:
                self.first_played_at = time.monotonic()
        if playing != self._playing:
            self._playing = playing
            if self._on_playing is not None:
                self._on_playing(playing)

    def _frame(self, pcm: bytes) -> av.AudioFrame:
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(pcm)
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = self._time_base
        self._pts += FRAME_SAMPLES
        return frame
