"""Turn detection for the voice agent, sans-IO: speech probabilities in, turn events out.

The Realtime API's ``server_vad`` settings drive it: speech starts on the
first window whose probability reaches ``threshold``; it pauses when the
probability falls below ``threshold - HYSTERESIS``; a pause that lasts
``silence_duration_ms`` ends the turn. The pause itself is reported too,
because that is when the agent starts on its reply (speculatively: speech
that resumes within the silence takes it back). Time is audio time in
milliseconds, passed in with every window, never read from a clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

HYSTERESIS: Final = 0.15
DEFAULT_THRESHOLD: Final = 0.5
DEFAULT_PREFIX_PADDING_MS: Final = 300
# Shorter than the Realtime API's 500 ms: the reply is prepared during the
# silence, so every millisecond of it is a millisecond the user waits.
DEFAULT_SILENCE_DURATION_MS: Final = 300
MAX_PREFIX_PADDING_MS: Final = 2_000
MAX_SILENCE_DURATION_MS: Final = 10_000
# semantic_vad's eagerness, mapped onto the silence that ends a turn.
EAGERNESS_SILENCE_MS: Final = {"low": 800, "medium": 500, "auto": 400, "high": 250}

_PARAM: Final = "session.audio.input.turn_detection"


class SessionValueError(ValueError):
    """A session field has a value the agent cannot use; ``param`` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, slots=True)
class TurnConfig:
    threshold: float = DEFAULT_THRESHOLD
    prefix_padding_ms: int = DEFAULT_PREFIX_PADDING_MS
    silence_duration_ms: int = DEFAULT_SILENCE_DURATION_MS
    create_response: bool = True
    interrupt_response: bool = True

    def as_session(
        self, kind: str = "server_vad", extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The ``turn_detection`` object as session.updated reports it."""
        return {
            **(extra or {}),
            "type": kind,
            "threshold": self.threshold,
            "prefix_padding_ms": self.prefix_padding_ms,
            "silence_duration_ms": self.silence_duration_ms,
            "create_response": self.create_response,
            "interrupt_response": self.interrupt_response,
        }


def _number(td: dict[str, Any], key: str, low: float, high: float, default: float) -> float:
    value = td.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise SessionValueError(
            f"{_PARAM}.{key}", f"{_PARAM}.{key} must be a number in [{low}, {high}]"
        )
    return float(value)


def _integer(td: dict[str, Any], key: str, high: int, default: int) -> int:
    value = td.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise SessionValueError(
            f"{_PARAM}.{key}", f"{_PARAM}.{key} must be an integer number of ms in [0, {high}]"
        )
    return value


def _flag(td: dict[str, Any], key: str) -> bool:
    value = td.get(key, True)
    if value is None:
        return True
    if not isinstance(value, bool):
        raise SessionValueError(f"{_PARAM}.{key}", f"{_PARAM}.{key} must be true or false")
    return value


def parse_turn_detection(value: object) -> TurnConfig | None:
    """A session's ``turn_detection`` → config, None for manual turns; SessionValueError if bad."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise SessionValueError(_PARAM, f"{_PARAM} must be an object or null")
    kind = value.get("type", "server_vad")
    if kind == "server_vad":
        silence_default = DEFAULT_SILENCE_DURATION_MS
    elif kind == "semantic_vad":
        eagerness = value.get("eagerness", "auto")
        if eagerness not in EAGERNESS_SILENCE_MS:
            raise SessionValueError(
                f"{_PARAM}.eagerness", f"{_PARAM}.eagerness must be one of low, medium, high, auto"
            )
        silence_default = EAGERNESS_SILENCE_MS[eagerness]
    else:
        raise SessionValueError(
            f"{_PARAM}.type", f"{_PARAM}.type must be server_vad or semantic_vad"
        )
    return TurnConfig(
        threshold=_number(value, "threshold", 0.0, 1.0, DEFAULT_THRESHOLD),
        prefix_padding_ms=_integer(
            value, "prefix_padding_ms", MAX_PREFIX_PADDING_MS, DEFAULT_PREFIX_PADDING_MS
        ),
        silence_duration_ms=_integer(
            value, "silence_duration_ms", MAX_SILENCE_DURATION_MS, silence_default
        ),
        create_response=_flag(value, "create_response"),
        interrupt_response=_flag(value, "interrupt_response"),
    )


TurnKind = Literal["started", "paused", "resumed", "stopped"]


@dataclass(frozen=True, slots=True)
class TurnEvent:
    kind: TurnKind
    # started: where speech began; paused/resumed: where the silence began/ended;
    # stopped: where the silence began (the end of the speech itself).
    at_ms: int
    # Milliseconds of speech in the turn so far (windows at or above the stop threshold).
    speech_ms: int


class TurnDetector:
    """Speech / pause / end-of-turn decisions over a stream of VAD windows."""

    __slots__ = ("_config", "_silence_from", "_speech_ms", "state")

    def __init__(self, config: TurnConfig | None = None) -> None:
        self._config = config or TurnConfig()
        self.state: Literal["quiet", "speaking", "pausing"] = "quiet"
        self._silence_from = 0
        self._speech_ms = 0

    @property
    def config(self) -> TurnConfig:
        return self._config

    def set_config(self, config: TurnConfig) -> None:
        """New settings from the next window on; a turn in progress carries on."""
        self._config = config

    @property
    def speech_ms(self) -> int:
        return self._speech_ms

    def reset(self) -> None:
        """Forget the turn in progress (input cleared or committed by hand)."""
        self.state = "quiet"
        self._speech_ms = 0

    def feed(self, probability: float, start_ms: int, end_ms: int) -> TurnEvent | None:
        """One window [start_ms, end_ms) with its speech probability."""
        cfg = self._config
        voiced = probability >= cfg.threshold
        still_voiced = probability >= cfg.threshold - HYSTERESIS
        if self.state == "quiet":
            if not voiced:
                return None
            self.state = "speaking"
            self._speech_ms = end_ms - start_ms
            return TurnEvent("started", start_ms, self._speech_ms)
        if self.state == "speaking":
            if still_voiced:
                self._speech_ms += end_ms - start_ms
                return None
            self.state = "pausing"
            self._silence_from = start_ms
            return TurnEvent("paused", start_ms, self._speech_ms)
        # pausing
        if voiced:
            self.state = "speaking"
            self._speech_ms += end_ms - start_ms
            return TurnEvent("resumed", start_ms, self._speech_ms)
        if end_ms - self._silence_from < cfg.silence_duration_ms:
            return None
        self.state = "quiet"
        return TurnEvent("stopped", self._silence_from, self._speech_ms)


class OnsetGate:
    """A sudden rise in loudness over the recent floor: the earliest sign of speech.

    Silero needs 30-120 ms of speech to be sure; this fires on the first loud
    20 ms frame, so the agent can pause its reply at once and let silero
    decide whether to resume. The floor falls at once to quieter frames and
    creeps up slowly, so steady background noise stops triggering within seconds.
    """

    __slots__ = ("creep_db", "floor", "min_db", "rise_db")

    def __init__(self, rise_db: float = 15.0, min_db: float = -45.0, creep_db: float = 0.1) -> None:
        self.rise_db = rise_db
        self.min_db = min_db
        self.creep_db = creep_db  # per frame: 5 dB/s at 20 ms frames
        self.floor = -60.0

    def feed(self, level_db: float) -> bool:
        onset = level_db >= max(self.min_db, self.floor + self.rise_db)
        self.floor = (
            level_db if level_db < self.floor else min(level_db, self.floor + self.creep_db)
        )
        return onset
