"""Audio between aiortc and the agent: PCM16 mono at the protocol rate.

Inbound, aiortc's Opus decoder gives 48 kHz stereo frames; the agent wants
24 kHz mono. Outbound, the agent's audio arrives in bursts of any size and is
played out in 20 ms frames when the ``Pacer`` says they are due.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fractions
import time
from collections.abc import Callable

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from talkwire.protocol.audio import FRAME_SAMPLES, RATE, FrameChunker
from talkwire.transceiver.pacing import Kind, OutFrame, Pacer, Send
from talkwire.transceiver.resample import Downsampler, Upsampler

FRAME_SECONDS = FRAME_SAMPLES / RATE
OUT_RATE = 2 * RATE  # what Opus runs at
OUT_FRAME_SAMPLES = 2 * FRAME_SAMPLES
OUT_SILENCE = bytes(OUT_FRAME_SAMPLES * 2 * 2)  # stereo int16
# Bound on queued agent audio: a stalled peer cannot grow memory without limit.
MAX_QUEUED_SECONDS = 60


class InboundConverter:
    """Decoded aiortc frames -> 20 ms PCM16 mono frames at the protocol rate."""

    def __init__(self) -> None:
        self._downsampler = Downsampler()
        # Only for codecs other than Opus (48 kHz): libswresample, then framing.
        self._resampler: av.AudioResampler | None = None
        self._chunker = FrameChunker()

    def convert(self, frame: av.AudioFrame) -> list[bytes]:
        channels = len(frame.layout.channels)
        if frame.sample_rate == 2 * RATE and frame.format.name == "s16" and channels <= 2:
            samples = np.frombuffer(memoryview(frame.planes[0]), dtype=np.int16)[
                : frame.samples * channels
            ]
            return list(self._chunker.feed(self._downsampler.process(samples, channels)))
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        out: list[bytes] = []
        for resampled in self._resampler.resample(frame):
            out.extend(self._chunker.feed(resampled.to_ndarray().tobytes()))
        return out


class AgentAudioTrack(MediaStreamTrack):
    """The call's outbound audio: the agent's voice, silence between turns.

    When each frame goes, and with which RTP timestamp, is the ``Pacer``'s
    call (see pacing.py): a 20 ms grid while audio plays, a frame late for its
    slot sent as it arrives, nothing but a keep-alive while idle. Backlog from
    jitter is shed by skipping quiet frames once more than TARGET_BACKLOG
    frames wait, but only frames that came one per push (live audio, bunched
    up on the way): audio the agent sends several frames at a time is
    buffered on purpose (speech it paces itself), and its pauses are part of it.
    """

    kind = "audio"

    TARGET_BACKLOG = 2
    QUIET_PEAK = 64  # about -54 dBFS

    def __init__(self, on_playing: Callable[[bool], None] | None = None) -> None:
        super().__init__()
        self._chunker = FrameChunker()
        self._upsampler = Upsampler()
        # (pcm, live): live frames arrived one per push and may be shed as backlog.
        self._frames: collections.deque[tuple[bytes, bool]] = collections.deque()
        self._arrived = asyncio.Event()
        self._pacer: Pacer | None = None
        self._pts = 0
        self._time_base = fractions.Fraction(1, OUT_RATE)
        self._playing = False
        self._on_playing = on_playing
        self.frames_played = 0
        self.frames_skipped = 0

    def push(self, pcm: bytes) -> None:
        frames = self._chunker.feed(pcm)
        live = len(frames) == 1
        for frame in frames:
            if len(self._frames) * FRAME_SECONDS >= MAX_QUEUED_SECONDS:
                self._frames.popleft()
            self._frames.append((frame, live))
        if self._frames:
            self._arrived.set()

    def clear(self) -> None:
        """Barge-in: drop everything queued, at once, and fade out."""
        self._frames.clear()
        self._chunker.clear()
        if self._pacer is not None:
            self._pacer.end()
        self._arrived.set()  # the waiting sender decides again

    @property
    def queued_seconds(self) -> float:
        return len(self._frames) * FRAME_SECONDS

    @property
    def frames_late(self) -> int:
        """Frames sent after their slot (the agent's audio came late, the loop was busy,
        or the grid is still catching up after either)."""
        return self._pacer.frames_late if self._pacer else 0

    async def recv(self) -> av.AudioFrame:
        """A 48 kHz stereo frame, for codecs aiortc encodes itself (not Opus: see rtp_audio)."""
        return self._frame((await self._next(dtx=False)).pcm)

    async def next_frame(self) -> OutFrame:
        """The next packet's audio when it is due; while idle, only keep-alives."""
        return await self._next(dtx=True)

    async def _next(self, dtx: bool) -> OutFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._pacer is None:
            self._pacer = Pacer(dtx)
        # time.monotonic, not loop.time: uvloop's loop clock counts whole ms.
        while not isinstance(
            decision := self._pacer.decide(time.monotonic(), len(self._frames)), Send
        ):
            if self._frames:
                await asyncio.sleep(decision.until - time.monotonic())
                continue
            self._arrived.clear()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the
            # cancellation aiortc uses to stop its sender, and close would hang.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(decision.until - time.monotonic()):
                    await self._arrived.wait()
        if self.readyState != "live":
            raise MediaStreamError  # stopped while it waited
        pcm = None
        if decision.kind is Kind.AUDIO:
            self._shed_backlog()
            pcm = self._frames.popleft()[0]
        self._set_playing(pcm is not None)
        return OutFrame(pcm, decision.timestamp, canned=decision.kind is Kind.KEEPALIVE)

    def _shed_backlog(self) -> None:
        while len(self._frames) > self.TARGET_BACKLOG and _is_sheddable(self._frames[0]):
            self._frames.popleft()
            self.frames_skipped += 1

    def _set_playing(self, playing: bool) -> None:
        if playing:
            self.frames_played += 1
        if playing != self._playing:
            self._playing = playing
            if self._on_playing is not None:
                self._on_playing(playing)

    def _frame(self, pcm: bytes | None) -> av.AudioFrame:
        # 48 kHz stereo, exactly one Opus frame: aiortc's encoder passes it through unbuffered.
        frame = av.AudioFrame(format="s16", layout="stereo", samples=OUT_FRAME_SAMPLES)
        frame.planes[0].update(OUT_SILENCE if pcm is None else self._upsampler.process(pcm))
        frame.sample_rate = OUT_RATE
        frame.pts = self._pts
        frame.time_base = self._time_base
        self._pts += OUT_FRAME_SAMPLES
        return frame


def _is_sheddable(frame: tuple[bytes, bool]) -> bool:
    pcm, live = frame
    if not live:
        return False
    return int(np.abs(np.frombuffer(pcm, dtype=np.int16)).max()) <= AgentAudioTrack.QUIET_PEAK
