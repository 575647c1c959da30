"""talkwire.protocol.audio: link audio constants, validation, and the frame chunker."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from talkwire.errors import ProtocolError
from talkwire.protocol.audio import (
    FRAME_BYTES,
    FRAME_MS,
    FRAME_SAMPLES,
    MAX_PCM_BYTES,
    RATE,
    FrameChunker,
    validate_pcm,
)


def test_constants_describe_20ms_pcm16_at_24khz() -> None:
    assert RATE == 24000
    assert FRAME_MS == 20
    assert FRAME_SAMPLES == 480
    assert FRAME_BYTES == 960
    assert MAX_PCM_BYTES == 48000  # one second


def test_validate_pcm_accepts_even_lengths_up_to_one_second() -> None:
    assert validate_pcm(b"") == b""
    assert validate_pcm(bytearray(b"\x01\x02")) == b"\x01\x02"
    assert validate_pcm(memoryview(bytes(MAX_PCM_BYTES))) == bytes(MAX_PCM_BYTES)


@pytest.mark.parametrize("size", [1, 3, 961, MAX_PCM_BYTES - 1, MAX_PCM_BYTES + 2, 10**6])
def test_validate_pcm_rejects(size: int) -> None:
    with pytest.raises(ProtocolError):
        validate_pcm(bytes(size))


def _stream(n: int) -> bytes:
    return bytes(i % 251 for i in range(n))


@given(
    total=st.integers(min_value=0, max_value=8 * FRAME_BYTES + 37),
    cuts=st.lists(st.integers(min_value=0, max_value=8 * FRAME_BYTES + 37), max_size=20),
)
def test_chunker_any_split_gives_the_same_frames(total: int, cuts: list[int]) -> None:
    data = _stream(total)
    points = sorted({0, total, *(c for c in cuts if c <= total)})
    chunker = FrameChunker()
    frames: list[bytes] = []
    for a, b in itertools.pairwise(points):
        frames += chunker.feed(data[a:b])
    whole = total // FRAME_BYTES
    assert frames == [data[i * FRAME_BYTES : (i + 1) * FRAME_BYTES] for i in range(whole)]
    assert chunker.pending == total - whole * FRAME_BYTES


def test_chunker_one_big_feed() -> None:
    data = _stream(5 * FRAME_BYTES + 10)
    chunker = FrameChunker()
    frames = chunker.feed(data)
    assert b"".join(frames) == data[: 5 * FRAME_BYTES]
    assert all(len(f) == FRAME_BYTES for f in frames)
    assert chunker.pending == 10


def test_chunker_clear_drops_the_remainder() -> None:
    chunker = FrameChunker()
    assert chunker.feed(b"\x07" * (FRAME_BYTES - 2)) == []
    chunker.clear()
    assert chunker.pending == 0
    frame = _stream(FRAME_BYTES)
    # After clear, frames start fresh: nothing of the dropped bytes leaks in.
    assert chunker.feed(frame) == [frame]


def test_chunker_flush_pads_with_silence() -> None:
    chunker = FrameChunker()
    assert chunker.flush() is None
    chunker.feed(b"\x01\x02\x03\x04")
    last = chunker.flush()
    assert last == b"\x01\x02\x03\x04" + bytes(FRAME_BYTES - 4)
    assert chunker.pending == 0
    assert chunker.flush() is None


def test_chunker_custom_frame_size() -> None:
    chunker = FrameChunker(frame_bytes=4)
    assert chunker.feed(b"abcdefghij") == [b"abcd", b"efgh"]
    with pytest.raises(ValueError, match="multiple"):
        FrameChunker(frame_bytes=3)
    with pytest.raises(ValueError, match="multiple"):
        FrameChunker(frame_bytes=0)
