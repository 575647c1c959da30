"""Audio on the agent link: PCM16 little-endian mono at 24 kHz, as binary WebSocket frames.

Sans-IO: constants, a validator for incoming binary frames, and a chunker that
turns the agent's arbitrarily sized audio into whole 20 ms frames for playout.
"""

from __future__ import annotations

from typing import Final

from talkwire.errors import ProtocolError

RATE: Final = 24000
CHANNELS: Final = 1
SAMPLE_BYTES: Final = 2
FRAME_MS: Final = 20
FRAME_SAMPLES: Final = RATE * FRAME_MS // 1000
FRAME_BYTES: Final = FRAME_SAMPLES * SAMPLE_BYTES
# One second per binary frame: enough for any sensible chunk, small enough to bound memory.
MAX_PCM_BYTES: Final = RATE * SAMPLE_BYTES

# The only format the link carries; sessions advertise it under audio.input/output.format.
PCM_FORMAT: Final = {"type": "audio/pcm", "rate": RATE}


def validate_pcm(data: bytes | bytearray | memoryview) -> bytes:
    """Return ``data`` as bytes if it is a whole number of PCM16 samples, at most 1 s long."""
    size = len(data)
    if size > MAX_PCM_BYTES:
        raise ProtocolError(f"audio frame of {size} bytes exceeds {MAX_PCM_BYTES} (1 s)")
    if size % SAMPLE_BYTES:
        raise ProtocolError(f"audio frame of {size} bytes is not whole PCM16 samples")
    return bytes(data)


def duration_ms(size: int) -> float:
    """Play time of ``size`` bytes of link audio, in milliseconds."""
    return size * 1000 / (RATE * SAMPLE_BYTES)


class FrameChunker:
    """Cut a byte stream into whole frames; the remainder waits for the next feed.

    Sans-IO: the transceiver feeds agent audio of any length and paces out the
    frames it gets back; ``clear()`` is barge-in (drop what has not been returned).
    """

    __slots__ = ("_buf", "frame_bytes")

    def __init__(self, frame_bytes: int = FRAME_BYTES) -> None:
        if frame_bytes <= 0 or frame_bytes % SAMPLE_BYTES:
            raise ValueError(f"frame_bytes must be a positive multiple of {SAMPLE_BYTES}")
        self.frame_bytes = frame_bytes
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held back because they do not fill a frame yet."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add ``data`` and return every whole frame now available, oldest first."""
        buf = self._buf
        buf += data
        whole = len(buf) // self.frame_bytes
        if not whole:
            return []
        n = self.frame_bytes
        frames = [bytes(buf[i * n : (i + 1) * n]) for i in range(whole)]
        # One deletion per feed keeps a large feed linear instead of quadratic.
        del buf[: whole * n]
        return frames

    def flush(self) -> bytes | None:
        """The held-back remainder padded with silence to a whole frame, or None if empty."""
        if not self._buf:
            return None
        frame = bytes(self._buf).ljust(self.frame_bytes, b"\x00")
        self._buf.clear()
        return frame

    def clear(self) -> None:
        """Drop the held-back remainder."""
        self._buf.clear()
