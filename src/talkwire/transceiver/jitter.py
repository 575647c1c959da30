"""An audio "jitter buffer" that hands every packet straight to the decoder.

aiortc's JitterBuffer releases a frame only when a packet of the *next*
timestamp arrives (even with prefetch 0): 20 ms on every audio frame. An Opus
RTP packet is always one whole frame, so it can be decoded on arrival; late
or duplicate packets (older than the newest seen) are dropped, and the
decoder conceals the gap. Voice AI wants the audio now, not smoothed.
"""

from __future__ import annotations

from typing import Any

from aiortc.jitterbuffer import JitterFrame
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_gt


class PassThroughJitterBuffer:
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
        return False, JitterFrame(data=data, timestamp=packet.timestamp)


def install(receiver: Any) -> None:
    """Give an aiortc audio RTCRtpReceiver the pass-through buffer."""
    receiver._RTCRtpReceiver__jitter_buffer = PassThroughJitterBuffer()
