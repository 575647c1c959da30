"""The internal protocol between transceiver and agents (docs/protocol.md), shared by both ends."""

from talkwire.protocol.audio import (
    FRAME_BYTES,
    FRAME_MS,
    FRAME_SAMPLES,
    MAX_PCM_BYTES,
    PCM_FORMAT,
    RATE,
    FrameChunker,
    validate_pcm,
)
from talkwire.protocol.events import (
    MAX_EVENT_BYTES,
    encode_event,
    error_event,
    make_event,
    merge_session,
    new_id,
    parse_event,
)

__all__ = [
    "FRAME_BYTES",
    "FRAME_MS",
    "FRAME_SAMPLES",
    "MAX_EVENT_BYTES",
    "MAX_PCM_BYTES",
    "PCM_FORMAT",
    "RATE",
    "FrameChunker",
    "encode_event",
    "error_event",
    "make_event",
    "merge_session",
    "new_id",
    "parse_event",
    "validate_pcm",
]
