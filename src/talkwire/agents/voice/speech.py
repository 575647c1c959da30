"""Test speech from espeak-ng (Debian's ``espeak-ng``), as link audio: PCM16 mono 24 kHz.

For tests and benchmarks: different voices make a small, fixed, reproducible
set of speakers; nothing here is used on a call.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from pathlib import Path
from typing import Final

import numpy as np

from talkwire.agents.voice.resample import Resampler
from talkwire.errors import ConfigError
from talkwire.protocol.audio import RATE

# Peak level of the spoken clip: a normal speaking level, well clear of clipping.
SPEECH_PEAK = 0.5

# The fixed set for the word error rate (tests and bench/voice.py): short
# commands and longer sentences, in four of espeak's voices.
WER_SET: Final = (
    "What time is it?",
    "Tell me a joke.",
    "What is twelve plus thirty?",
    "Please turn on the kitchen lights.",
    "I would like to book a table for two at seven tonight.",
    "The weather is nice today, so let's go for a walk.",
    "Can you repeat what I just said?",
    "Thank you very much, goodbye.",
)
WER_VOICES: Final = ("en-us", "en-gb", "en-us+f3", "en-us+m3")


def espeak(text: str, voice: str = "en-us", speed: int = 160, peak: float = SPEECH_PEAK) -> bytes:
    """``text`` spoken by espeak-ng with ``voice``, trimmed of its silent edges."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise ConfigError("espeak-ng is not installed (Debian package espeak-ng)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "speech.wav"
        subprocess.run(  # noqa: S603 - a fixed binary; text is an argument, not a shell
            [binary, "-v", voice, "-s", str(speed), "-w", str(path), "--", text],
            check=True,
            capture_output=True,
            timeout=30,
        )
        with wave.open(str(path), "rb") as w:
            rate = w.getframerate()
            raw = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    samples = raw.astype(np.float32) / 32768.0
    resampler = Resampler(rate, RATE)
    audio = np.concatenate((resampler.process(samples), resampler.flush()))
    loud = np.flatnonzero(np.abs(audio) > 0.01)
    if len(loud):
        audio = audio[loud[0] : loud[-1] + 1]
    audio *= peak / max(1e-6, float(np.abs(audio).max()))
    return pcm16(audio)


def pcm16(audio: np.ndarray) -> bytes:
    pcm: bytes = np.clip(np.rint(audio * 32767), -32768, 32767).astype("<i2").tobytes()
    return pcm


def silence(seconds: float) -> bytes:
    return bytes(int(seconds * RATE) * 2)
