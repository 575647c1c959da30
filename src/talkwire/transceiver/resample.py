"""48 kHz stereo <-> 24 kHz mono, one 20 ms frame in, one 20 ms frame out.

libswresample (what aiortc and PyAV use) keeps a filter delay and hands back
464 samples for the first 480, so a frame-sized consumer waits a whole frame
more on every packet; aiortc's Opus encoder does the same when fed 24 kHz.
That was 40 ms of the echo round trip. A short half-band FIR with its history
kept between frames costs well under a millisecond of delay and never buffers.
"""

from __future__ import annotations

import numpy as np

_TAPS = 31


def _half_band_taps(count: int) -> np.ndarray:
    n = np.arange(count) - (count - 1) / 2
    taps: np.ndarray = 0.5 * np.sinc(n / 2) * np.blackman(count)
    normalized: np.ndarray = (taps / taps.sum()).astype(np.float32)
    return normalized


HALF_BAND = _half_band_taps(_TAPS)
# A half-band filter is zero at every other tap but the centre: decimating by two,
# the kept outputs are the even taps over the even samples plus the centre tap
# times one odd sample (half the multiplies of a convolution, and none thrown away).
_CENTRE = (_TAPS - 1) // 2
_EVEN_TAPS = HALF_BAND[0::2].copy()


class Downsampler:
    """48 kHz interleaved stereo (or mono) int16 -> 24 kHz mono int16."""

    def __init__(self) -> None:
        self._history = np.zeros(_TAPS - 1, dtype=np.float32)

    def process(self, samples: np.ndarray, channels: int) -> bytes:
        mono = samples.astype(np.float32)
        if channels > 1:
            mono = mono.reshape(-1, channels).mean(axis=1)
        padded = np.concatenate((self._history, mono))
        self._history = padded[-(_TAPS - 1) :]
        even = np.correlate(padded[0::2], _EVEN_TAPS, mode="valid")
        centre = padded[_CENTRE::2][: len(even)] * HALF_BAND[_CENTRE]
        return _to_int16(even + centre).tobytes()


class Upsampler:
    """24 kHz mono int16 -> 48 kHz interleaved stereo int16."""

    def __init__(self) -> None:
        self._history = np.zeros(_TAPS - 1, dtype=np.float32)

    def process(self, pcm: bytes) -> bytes:
        mono = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
        stuffed = np.zeros(len(mono) * 2, dtype=np.float32)
        stuffed[::2] = mono * 2  # zero-stuffing halves the level; restore it
        padded = np.concatenate((self._history, stuffed))
        self._history = padded[-(_TAPS - 1) :]
        filtered = _to_int16(np.convolve(padded, HALF_BAND, mode="valid"))
        return np.repeat(filtered, 2).tobytes()


def _to_int16(samples: np.ndarray) -> np.ndarray:
    clipped: np.ndarray = np.clip(np.rint(samples), -32768, 32767).astype(np.int16)
    return clipped
