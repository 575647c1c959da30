"""A simple energy voice-activity detector, sans-IO.

Feed PCM16 frames in order; get a VadEvent when speech starts or stops. Time is
audio time (samples fed so far), never the wall clock, so results depend only
on the signal. Two thresholds give hysteresis: speech starts above ``start_dbfs``
and only counts as over below the lower ``stop_dbfs``, after ``hangover_ms`` of it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from talkwire.protocol.audio import RATE, SAMPLE_BYTES

_FULL_SCALE_SQ = 32768.0 * 32768.0
SILENCE_DBFS = -120.0  # what an all-zero frame reports instead of -inf


@dataclass(frozen=True, slots=True)
class VadConfig:
    start_dbfs: float = -35.0  # RMS a frame needs to count towards speech
    stop_dbfs: float = -45.0  # RMS below which a frame counts towards silence
    start_ms: int = 60  # sustained loudness before speech is declared (ignores clicks)
    hangover_ms: int = 500  # silence after speech before it is declared over
    rate: int = RATE

    def __post_init__(self) -> None:
        if self.stop_dbfs > self.start_dbfs:
            raise ValueError("stop_dbfs must not exceed start_dbfs (hysteresis)")
        if self.start_ms < 0 or self.hangover_ms < 0 or self.rate <= 0:
            raise ValueError("start_ms and hangover_ms must be >= 0, rate > 0")


@dataclass(frozen=True, slots=True)
class VadEvent:
    kind: Literal["speech_started", "speech_stopped"]
    # The edge in audio time: start of the first loud frame, or end of the last speech frame.
    audio_ms: int
    # Audio time at the end of the frame that decided it (audio_ms plus detection latency).
    decided_ms: int


def frame_dbfs(pcm: bytes | bytearray | memoryview) -> float:
    """RMS level of a PCM16 frame relative to full scale (a full-scale square wave is 0)."""
    if len(pcm) < SAMPLE_BYTES:
        return SILENCE_DBFS
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
    mean_sq = float(np.dot(samples, samples)) / samples.size
    if mean_sq <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 10.0 * math.log10(mean_sq / _FULL_SCALE_SQ))


class EnergyVad:
    """Speech/silence decisions on frame RMS, with hysteresis and a hangover."""

    __slots__ = ("_config", "_run_samples", "_run_start", "_samples", "speaking")

    def __init__(self, config: VadConfig | None = None) -> None:
        self._config = config or VadConfig()
        self._samples = 0  # audio time, in samples
        self.speaking = False
        self._run_start = 0  # sample where the current loud (or silent) run began
        self._run_samples = 0

    @property
    def config(self) -> VadConfig:
        return self._config

    def set_config(self, config: VadConfig) -> None:
        """New thresholds from the next frame on; the clock and state carry over."""
        self._config = config

    @property
    def now_ms(self) -> int:
        """Audio time fed so far, in milliseconds."""
        return self._ms(self._samples)

    def reset(self) -> None:
        """Forget any speech in progress (input buffer cleared); the clock keeps running."""
        self.speaking = False
        self._run_samples = 0

    def advance(self, samples: int) -> None:
        """Move the clock without judging audio (detection switched off)."""
        self._samples += samples
        self._run_samples = 0

    def feed(self, pcm: bytes | bytearray | memoryview) -> VadEvent | None:
        """Judge one frame (any whole number of samples; 20 ms is the norm)."""
        if len(pcm) % SAMPLE_BYTES:
            raise ValueError("PCM16 frame must have an even length")
        n = len(pcm) // SAMPLE_BYTES
        if n == 0:
            return None
        level = frame_dbfs(pcm)
        start = self._samples
        self._samples += n
        cfg = self._config
        if not self.speaking:
            if level < cfg.start_dbfs:
                self._run_samples = 0
                return None
            if self._run_samples == 0:
                self._run_start = start
            self._run_samples += n
            if self._ms(self._run_samples) < cfg.start_ms:
                return None
            self.speaking = True
            self._run_samples = 0
            return VadEvent("speech_started", self._ms(self._run_start), self.now_ms)
        if level >= cfg.stop_dbfs:
            self._run_samples = 0
            return None
        if self._run_samples == 0:
            self._run_start = start
        self._run_samples += n
        if self._ms(self._run_samples) < cfg.hangover_ms:
            return None
        self.speaking = False
        self._run_samples = 0
        return VadEvent("speech_stopped", self._ms(self._run_start), self.now_ms)

    def _ms(self, samples: int) -> int:
        return samples * 1000 // self._config.rate
