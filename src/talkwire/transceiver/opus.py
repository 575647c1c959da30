"""Opus straight to and from the agent's format: 24 kHz mono PCM16, one call inline.

aiortc encodes 48 kHz stereo frames in a thread pool, runs libswresample on
every frame, and computes the RTP audio-level header in a Python loop over
1920 samples (177 us of a 420 us frame, measured). Here the encoder takes the
agent's 24 kHz mono PCM as it is (libopus accepts 24 kHz natively), the level
comes from numpy, and both are cheap enough to run inline on the event loop,
which is cheaper than a thread-pool round trip. The encoder runs CELT only
(see COMPLEXITY). libopus in PyAV always
decodes at 48 kHz: it decodes to mono there and a half-band filter halves the
rate, with no buffering either way.
"""

from __future__ import annotations

import fractions
import math
from typing import Final

import av
import numpy as np
from av.packet import Packet

from talkwire.protocol.audio import FRAME_SAMPLES, RATE
from talkwire.transceiver.resample import Downsampler

OPUS_CLOCK: Final = 48000  # RTP timestamps of Opus always count 48 kHz (RFC 7587)
TIMESTAMP_STEP: Final = FRAME_SAMPLES * OPUS_CLOCK // RATE
# Voice at 24 kHz mono: 32 kb/s is transparent for speech (aiortc sends 96 kb/s stereo).
BITRATE: Final = 32000
# CELT only ("restricted low delay"): no SILK lookahead, so decoded audio comes
# 4 ms sooner (2.5 ms of codec delay instead of 6.5; test_rtp_audio.py holds
# it), and encoding costs 0.6x of "voip"; complexity 5 of 10 makes it 0.49x,
# for 0.4 dB of segmental SNR on espeak speech (measured on this host). Below 5
# CELT drops its pitch pre-filter. The cost: no SILK in-band FEC, and CELT
# conceals a lost packet of voiced speech less well.
COMPLEXITY: Final = 5
# A 20 ms CELT frame that decodes to silence: what SFUs send while nobody speaks.
SILENCE_PACKET: Final = b"\xf8\xff\xfe"
MIN_LEVEL_DBOV: Final = -127


class OpusEncoder:
    """One 20 ms frame of 24 kHz mono PCM16 in, one Opus packet out."""

    def __init__(self, bitrate: int = BITRATE) -> None:
        codec = av.CodecContext.create("libopus", "w")
        codec.bit_rate = bitrate
        codec.format = "s16"
        codec.layout = "mono"
        codec.sample_rate = RATE
        codec.time_base = fractions.Fraction(1, RATE)
        codec.options = {"application": "lowdelay", "compression_level": str(COMPLEXITY)}
        self._codec = codec
        self._pts = 0

    def encode(self, pcm: bytes) -> bytes:
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME_SAMPLES)
        frame.planes[0].update(pcm)
        frame.sample_rate = RATE
        frame.pts = self._pts
        frame.time_base = self._codec.time_base
        self._pts += FRAME_SAMPLES
        packets = self._codec.encode(frame)
        # libopus returns exactly one packet per whole frame; never zero, never two.
        return b"".join(bytes(packet) for packet in packets)


class OpusDecoder:
    """One Opus packet (any frame length) in, 24 kHz mono PCM16 out."""

    def __init__(self) -> None:
        codec = av.CodecContext.create("libopus", "r")
        codec.format = "s16"
        codec.layout = "mono"
        codec.sample_rate = OPUS_CLOCK
        self._codec = codec
        self._downsampler = Downsampler()

    def decode(self, payload: bytes) -> bytes:
        """PCM for the packet; empty if libopus rejects it (a broken packet costs one frame)."""
        if not payload:
            return b""  # an empty packet would tell libavcodec the stream has ended
        try:
            frames = self._codec.decode(Packet(payload))
        except av.error.FFmpegError:
            return b""
        out = []
        for frame in frames:
            samples = np.frombuffer(memoryview(frame.planes[0]), dtype=np.int16)[: frame.samples]
            out.append(self._downsampler.process(samples, 1))
        return b"".join(out)


def audio_level_dbov(pcm: bytes) -> int:
    """RFC 6465 level of a PCM16 frame: 0 (loudest) to -127 dBov (silence)."""
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
    if not len(samples):
        return MIN_LEVEL_DBOV
    mean_square = float(np.dot(samples, samples)) / (len(samples) * 32767.0 * 32767.0)
    if mean_square <= 0:
        return MIN_LEVEL_DBOV
    return round(min(0.0, max(float(MIN_LEVEL_DBOV), 10 * math.log10(mean_square))))
