"""Streaming rational resampling (polyphase FIR) for the voice agent's models.

The link carries 24 kHz; silero and Whisper want 16 kHz (2/3), piper speaks
at 22.05 kHz (160/147 to 24 kHz). One small polyphase filter serves both:
each output sample is a dot product of one filter phase with the last few
input samples, so a block in gives its outputs at once (a delay of half the
filter, well under a millisecond), with history carried between blocks.
"""

from __future__ import annotations

import math

import numpy as np

TAPS_PER_PHASE = 24


def _design(up: int, down: int, taps_per_phase: int) -> np.ndarray:
    """A Kaiser-windowed sinc low-pass at the lower Nyquist, split into ``up`` phases."""
    length = up * taps_per_phase
    cutoff = 0.9 / max(up, down)  # fraction of the upsampled Nyquist; 10 % transition band
    n = np.arange(length) - (length - 1) / 2
    taps = cutoff * np.sinc(cutoff * n) * np.kaiser(length, 8.0) * up
    # Output m at phase p = m*down % up is sum_k taps[p + k*up] * x[newest - k]; the
    # window it is dotted with runs oldest first, so each phase is stored reversed.
    phases = taps.reshape(taps_per_phase, up).T[:, ::-1]
    return np.ascontiguousarray(phases, dtype=np.float32)


class Resampler:
    """float32 mono at ``rate_in`` → float32 mono at ``rate_out``, block by block."""

    def __init__(self, rate_in: int, rate_out: int, taps_per_phase: int = TAPS_PER_PHASE) -> None:
        g = math.gcd(rate_in, rate_out)
        self.up, self.down = rate_out // g, rate_in // g
        self._taps = taps_per_phase
        self._phases = _design(self.up, self.down, taps_per_phase)
        self._history = np.zeros(taps_per_phase - 1, dtype=np.float32)
        self._consumed = 0  # input samples before the history's end
        self._produced = 0  # output samples so far

    def process(self, samples: np.ndarray) -> np.ndarray:
        x = np.concatenate((self._history, samples.astype(np.float32, copy=False)))
        total_in = self._consumed + len(samples)
        # Output m sits at input position m*down/up; it needs inputs up to floor of that.
        last = (total_in * self.up - 1) // self.down  # the last output whose input has arrived
        m = np.arange(self._produced, last + 1, dtype=np.int64)
        if len(m) == 0:
            self._keep(x, total_in)
            return np.zeros(0, dtype=np.float32)
        position = m * self.down
        newest = position // self.up  # index of the newest input sample each output uses
        phase = position % self.up
        base = self._consumed - (self._taps - 1)  # global index of x[0]
        windows = np.lib.stride_tricks.sliding_window_view(x, self._taps)
        picked = windows[newest - base - (self._taps - 1)]
        out: np.ndarray = np.einsum("ij,ij->i", picked, self._phases[phase]).astype(np.float32)
        self._produced = last + 1
        self._keep(x, total_in)
        return out

    def flush(self) -> np.ndarray:
        """The outputs still held by the filter's delay (end of a stream)."""
        return self.process(np.zeros(self._taps // 2, dtype=np.float32))

    def _keep(self, x: np.ndarray, total_in: int) -> None:
        self._history = x[-(self._taps - 1) :].copy()
        self._consumed = total_in
