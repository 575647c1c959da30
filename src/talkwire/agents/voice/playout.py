"""One reply's audio on its way to the transceiver, paced, with its play position (sans-IO).

The agent keeps only ``lead`` seconds of audio queued at the transceiver, so a
barge-in has little to drop and the agent always knows how much the user has
heard: the transceiver plays whatever it holds without gaps, starting at once
when its line is idle, so the play position follows from what was sent when.
An interruption rewinds to that position; resuming plays on from there (a
false interruption loses nothing). Text parts are tied to where their audio
starts, so each part's transcript goes out as its audio does, and a cut-off
reply's transcript can be truncated to what was actually heard.

Times are seconds on a monotonic clock, passed in by the caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from talkwire.protocol.audio import FRAME_BYTES, RATE, SAMPLE_BYTES

DEFAULT_LEAD_S: Final = 0.2
# Several frames per send: the transceiver treats a multi-frame push as
# deliberate buffering (never shed as jitter) and it costs fewer messages.
CHUNK_BYTES: Final = 5 * FRAME_BYTES
BYTES_PER_S: Final = RATE * SAMPLE_BYTES
# A reply longer than this keeps only its start: memory per call stays bounded.
MAX_REPLY_BYTES: Final = 120 * BYTES_PER_S


@dataclass(frozen=True, slots=True)
class Part:
    text: str
    start: int  # byte offset of its audio in the reply


@dataclass(frozen=True, slots=True)
class Chunk:
    pcm: bytes
    texts: tuple[str, ...]  # parts whose audio begins in this chunk (first time only)


class Playout:
    __slots__ = (
        "_announced",
        "_audio",
        "_drain_at",
        "_finished",
        "_lead",
        "_parts",
        "_sent",
        "paused",
        "truncated",
    )

    def __init__(self, lead_s: float = DEFAULT_LEAD_S) -> None:
        self._lead = lead_s
        self._audio = bytearray()
        self._parts: list[Part] = []
        self._sent = 0  # bytes handed to the transceiver (after a rewind: from there)
        self._drain_at = 0.0  # when the transceiver will have played all it was sent
        self._announced = 0  # parts whose text went out
        self._finished = False
        self.paused = False
        self.truncated = False  # audio beyond MAX_REPLY_BYTES was dropped

    # -- filling -------------------------------------------------------------

    def add(self, pcm: bytes, text: str = "") -> None:
        """Append synthesised audio (PCM16 at the link rate), optionally with its text."""
        room = MAX_REPLY_BYTES - len(self._audio)
        if room <= 0:
            self.truncated = True
            return
        if text:
            self._parts.append(Part(text, len(self._audio)))
        if len(pcm) > room:
            self.truncated = True
            pcm = pcm[: room - room % SAMPLE_BYTES]
        self._audio += pcm
        # Whole frames, so the transceiver never holds back a remainder.
        tail = len(self._audio) % FRAME_BYTES
        if tail:
            self._audio += bytes(FRAME_BYTES - tail)

    def finish(self) -> None:
        """No more audio will be added."""
        self._finished = True

    # -- sending ---------------------------------------------------------------

    def take(self, now: float) -> Chunk | None:
        """The next chunk to send now, or None if it is not due (or there is none)."""
        if self.paused or self._sent >= len(self._audio):
            return None
        if self._drain_at - now >= self._lead:
            return None
        start, end = self._sent, min(self._sent + CHUNK_BYTES, len(self._audio))
        self._sent = end
        self._drain_at = max(self._drain_at, now) + (end - start) / BYTES_PER_S
        texts: list[str] = []
        while self._announced < len(self._parts) and self._parts[self._announced].start < end:
            texts.append(self._parts[self._announced].text)
            self._announced += 1
        return Chunk(bytes(self._audio[start:end]), tuple(texts))

    def next_due(self, now: float) -> float | None:
        """When ``take`` will next return audio: now, later, or None (nothing to send)."""
        if self.paused or self._sent >= len(self._audio):
            return None
        return max(now, self._drain_at - self._lead)

    def wake_at(self, now: float) -> float | None:
        """When the sender has something to do: send, or see playback end; None: wait for audio."""
        if self.paused:
            return None
        if self._sent < len(self._audio):
            return max(now, self._drain_at - self._lead)
        return max(now, self._drain_at) if self._finished else None

    # -- position ----------------------------------------------------------------

    def played_bytes(self, now: float) -> int:
        queued = max(0.0, self._drain_at - now) * BYTES_PER_S
        played = max(0, self._sent - round(queued))
        return played - played % SAMPLE_BYTES

    def played_ms(self, now: float) -> int:
        return self.played_bytes(now) * 1000 // BYTES_PER_S

    @property
    def total_ms(self) -> int:
        return len(self._audio) * 1000 // BYTES_PER_S

    def done(self, now: float) -> bool:
        """All audio added, sent and played."""
        return (
            self._finished
            and not self.paused
            and self._sent >= len(self._audio)
            and now >= self._drain_at
        )

    # -- interruption ----------------------------------------------------------

    def interrupt(self, now: float) -> int:
        """Stop sending; forget what the transceiver holds (it drops it). Returns ms heard."""
        played = self.played_bytes(now)
        self._sent = played
        self._drain_at = now
        self.paused = True
        return played * 1000 // BYTES_PER_S

    def resume(self) -> None:
        """Play on from where the interruption stopped (a false interruption)."""
        self.paused = False

    def heard_text(self, now: float) -> str:
        """The transcript of what has been played: whole parts, the last one cut by time."""
        played = self.played_bytes(now)
        heard: list[str] = []
        for index, part in enumerate(self._parts):
            if part.start >= played:
                break
            end = self._parts[index + 1].start if index + 1 < len(self._parts) else len(self._audio)
            if played >= end:
                heard.append(part.text)
                continue
            words = part.text.split()
            share = (played - part.start) / max(1, end - part.start)
            cut = round(len(words) * share)
            if cut:
                heard.append(" ".join(words[:cut]))
        return " ".join(heard)

    def text(self) -> str:
        return " ".join(part.text for part in self._parts)
