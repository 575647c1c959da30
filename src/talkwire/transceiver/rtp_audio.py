"""Adapters at aiortc's two RTP audio ends: Opus in and out, inline, at the agent's rate.

Inbound, aiortc's receiver hands each packet to its jitter buffer, then to a
decoder thread, then through an asyncio queue to the track, then to our
resampler: four hops for 20 ms of audio. ``InboundTap`` sits in the jitter
buffer's slot and, for Opus, decodes the packet there and hands the agent's
PCM over at once. Outbound, ``OutboundOpus`` stands in for the sender's
``_next_encoded_frame``: the track's 24 kHz PCM is encoded inline (no thread
pool, no 48 kHz stereo detour, no per-sample Python loop for the audio level),
under the RTP timestamp the track's pacer chose.
Other codecs (PCMU, PCMA, G722) keep aiortc's own path.

Both are small patches on aiortc objects, not a fork; ``tests/unit`` pins the
aiortc internals they rely on so an aiortc upgrade that moves them fails there.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpsender import RTCEncodedFrame
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_gt

from talkwire.protocol.audio import FRAME_BYTES, FrameChunker
from talkwire.transceiver.opus import (
    MIN_LEVEL_DBOV,
    SILENCE_PACKET,
    OpusDecoder,
    OpusEncoder,
    audio_level_dbov,
)
from talkwire.transceiver.pacing import OutFrame

OPUS: Final = "audio/opus"
SILENT_FRAME: Final = bytes(FRAME_BYTES)


def is_opus(codec: RTCRtpCodecParameters | None) -> bool:
    return codec is not None and codec.mimeType.lower() == OPUS


class PassThroughBuffer:
    """A jitter buffer that holds nothing: every packet goes to the decoder on arrival.

    aiortc's own buffer releases a frame only when the next timestamp arrives
    (+20 ms on every frame, even with prefetch 0). An audio RTP packet is one
    whole frame, so it can be decoded on arrival; late or duplicate packets
    (not newer than the newest seen) are dropped and counted, the decoder
    carries on. Voice AI wants the audio now, not smoothed.
    """

    capacity = 16  # what aiortc's receiver reads; nothing is held here

    def __init__(self) -> None:
        self._newest: int | None = None
        self.late_packets = 0

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        if self._newest is not None and not uint16_gt(packet.sequence_number, self._newest):
            self.late_packets += 1
            return False, None
        self._newest = packet.sequence_number
        data: bytes = packet._data  # type: ignore[attr-defined]  # set by aiortc's depayloader
        return False, self._deliver(packet, data)

    def _deliver(self, packet: RtpPacket, data: bytes) -> JitterFrame | None:
        return JitterFrame(data=data, timestamp=packet.timestamp)


class InboundTap(PassThroughBuffer):
    """The pass-through buffer that decodes Opus itself and hands the PCM over at once."""

    def __init__(
        self,
        codecs: dict[int, RTCRtpCodecParameters],
        on_pcm: Callable[[bytes], None],
    ) -> None:
        super().__init__()
        self._codecs = codecs  # the receiver's own map, filled once it starts
        self._on_pcm = on_pcm
        self._decoder: OpusDecoder | None = None
        self._chunker = FrameChunker()
        self.decoded_packets = 0
        self.undecodable_packets = 0

    def _deliver(self, packet: RtpPacket, data: bytes) -> JitterFrame | None:
        if not is_opus(self._codecs.get(packet.payload_type)):
            return super()._deliver(packet, data)
        if self._decoder is None:
            self._decoder = OpusDecoder()
        pcm = self._decoder.decode(data)
        if not pcm:
            self.undecodable_packets += 1
            return None
        self.decoded_packets += 1
        for frame in self._chunker.feed(pcm):
            self._on_pcm(frame)
        return None


def install_pass_through(receiver: Any) -> PassThroughBuffer:
    """Give an aiortc audio RTCRtpReceiver a buffer that holds nothing."""
    buffer = PassThroughBuffer()
    receiver._RTCRtpReceiver__jitter_buffer = buffer
    return buffer


def install_inbound(receiver: Any, on_pcm: Callable[[bytes], None]) -> InboundTap:
    """Give an aiortc audio RTCRtpReceiver the tap; returns it for its counters."""
    tap = InboundTap(receiver._RTCRtpReceiver__codecs, on_pcm)
    receiver._RTCRtpReceiver__jitter_buffer = tap
    return tap


class FrameSource(Protocol):
    async def next_frame(self) -> OutFrame:
        """The next packet's audio and timestamp, when it is due."""


class OutboundOpus:
    """The sender's frame source: paced PCM from the track, Opus-encoded inline."""

    def __init__(
        self,
        source: FrameSource,
        fallback: Callable[[RTCRtpCodecParameters], Awaitable[RTCEncodedFrame | None]],
    ) -> None:
        self._source = source
        self._fallback = fallback
        self._encoder: OpusEncoder | None = None
        self.canned_silence = 0

    async def next_encoded_frame(self, codec: RTCRtpCodecParameters) -> RTCEncodedFrame | None:
        if not is_opus(codec):
            return await self._fallback(codec)
        frame = await self._source.next_frame()
        if frame.canned:
            self.canned_silence += 1
            return RTCEncodedFrame([SILENCE_PACKET], frame.timestamp, MIN_LEVEL_DBOV)
        if self._encoder is None:
            self._encoder = OpusEncoder()
        if frame.pcm is None:
            payload = self._encoder.encode(SILENT_FRAME)
            return RTCEncodedFrame([payload], frame.timestamp, MIN_LEVEL_DBOV)
        payload = self._encoder.encode(frame.pcm)
        return RTCEncodedFrame([payload], frame.timestamp, audio_level_dbov(frame.pcm))


def install_outbound(sender: Any, source: FrameSource) -> OutboundOpus:
    """Make an aiortc audio RTCRtpSender encode ``source``'s PCM itself."""
    outbound = OutboundOpus(source, sender._next_encoded_frame)
    sender._next_encoded_frame = outbound.next_encoded_frame
    return outbound
