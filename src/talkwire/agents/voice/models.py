"""The voice agent's models, loaded once per process and shared by every call."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits

from talkwire.agents.voice.pool import BACKGROUND, URGENT, InferencePool
from talkwire.agents.voice.stt import Transcription, WhisperEngine
from talkwire.agents.voice.tts import PiperEngine
from talkwire.agents.voice.vad import VadPool


def default_workers() -> int:
    """One inference thread per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


@dataclass
class VoiceModels:
    stt: WhisperEngine
    tts: PiperEngine
    vads: VadPool
    pool: InferencePool
    load_s: float = 0.0
    stt_audio_s: float = field(default=0.0)
    stt_compute_s: float = field(default=0.0)
    tts_audio_s: float = field(default=0.0)
    tts_compute_s: float = field(default=0.0)

    @classmethod
    def load(cls, workers: int | None = None) -> VoiceModels:
        started = time.perf_counter()
        # OpenBLAS worker threads spin for a while after every matmul, and
        # Whisper's mel filterbank is one per pass: measured 160 ms of CPU for
        # a 35 ms pass with them, 35 ms without. Parallelism comes from the pool.
        threadpool_limits(limits=1, user_api="blas")
        workers = workers or default_workers()
        # One thread per inference job; the pool runs a job per core side by side.
        models = cls(
            stt=WhisperEngine(threads=1, workers=workers),
            tts=PiperEngine(threads=1),
            vads=VadPool(),
            pool=InferencePool(workers),
        )
        models.vads.release(models.vads.acquire())  # load silero once, before the first call
        models.load_s = time.perf_counter() - started
        return models

    async def transcribe(self, audio: np.ndarray, *, urgent: bool) -> Transcription:
        """PoolBusy if not urgent and the workers are behind."""
        result = await self.pool.run(
            lambda: self.stt.transcribe(audio), URGENT if urgent else BACKGROUND
        )
        self.stt_audio_s += result.audio_s
        self.stt_compute_s += result.compute_s
        return result

    async def synthesize(self, text: str) -> bytes:
        speech = await self.pool.run(lambda: self.tts.synthesize(text), URGENT)
        self.tts_audio_s += speech.audio_s
        self.tts_compute_s += speech.compute_s
        return speech.pcm

    def stats(self) -> dict[str, float | int]:
        """Real-time factors so far (compute time per second of audio) and pool counters."""
        return {
            "stt_rtf": self.stt_compute_s / self.stt_audio_s if self.stt_audio_s else 0.0,
            "tts_rtf": self.tts_compute_s / self.tts_audio_s if self.tts_audio_s else 0.0,
            "stt_audio_s": round(self.stt_audio_s, 2),
            "tts_audio_s": round(self.tts_audio_s, 2),
            "pool_urgent_jobs": self.pool.stats.jobs[URGENT],
            "pool_background_jobs": self.pool.stats.jobs[BACKGROUND],
            "pool_refused": self.pool.stats.refused,
            "pool_busy_s": round(self.pool.stats.busy_s, 3),
            "load_s": round(self.load_s, 3),
        }

    def close(self) -> None:
        self.pool.close()
