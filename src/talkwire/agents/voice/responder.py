"""What the voice agent says back: a small rule-based conversationalist (pure).

It greets, tells the time and the date, does spoken arithmetic, tells a
joke, repeats what it is asked to, explains itself, and otherwise repeats
what it heard, so a demo always shows the whole loop working. People with a
language model plug in ``llm.ChatCompletionsResponder`` instead.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal, Protocol

from talkwire.agents.voice.text import SMALL_NUMBERS, TENS, normalize

Role = Literal["user", "assistant", "system"]


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    text: str


class Responder(Protocol):
    """Streams the reply to a conversation as text deltas (whole or piece by piece)."""

    def reply(self, history: Sequence[Message], instructions: str) -> AsyncIterator[str]: ...


GREETING: Final = (
    "Hello! I'm the talkwire voice agent, running entirely on this machine. "
    "Ask me the time or the date, ask for a joke, or say anything and I'll repeat it."
)
CAPABILITIES: Final = (
    "I can tell you the time and the date, do simple arithmetic, tell a joke, "
    "or repeat what you say."
)
JOKES: Final = (
    "Why did the packet cross the network? To get to the other side, with low latency.",
    "I would tell you a UDP joke, but you might not get it.",
    "Why do programmers prefer dark mode? Because light attracts bugs.",
)
_SMALL: Final = {word: value for value, word in enumerate(SMALL_NUMBERS)}
_TENS: Final = {word: 10 * value for value, word in enumerate(TENS) if value >= 2}
_OPERATORS: Final[dict[str, Callable[[int, int], float | None]]] = {
    "plus": lambda a, b: a + b,
    "minus": lambda a, b: a - b,
    "times": lambda a, b: a * b,
    "multiplied by": lambda a, b: a * b,
    "divided by": lambda a, b: a / b if b else None,
}
_NUMBER: Final = (
    r"((?:(?:twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|"
    + "|".join(_SMALL)
    + r"|hundred|thousand)\s?)+)"
)
_ARITHMETIC_RE: Final = re.compile(
    _NUMBER + r"\s(plus|minus|times|multiplied by|divided by)\s" + _NUMBER
)
_REPEAT_RE: Final = re.compile(r"^(?:please\s+)?(?:repeat after me|say|repeat)[\s,:]+(.+)$", re.I)


def parse_number(text: str) -> int | None:
    """Spoken numbers as ``normalize`` writes them ("twenty one", "three hundred five")."""
    total, current = 0, 0
    words = text.split()
    if not words:
        return None
    for word in words:
        if word in _SMALL:
            current += _SMALL[word]
        elif word in _TENS:
            current += _TENS[word]
        elif word == "hundred":
            current = max(1, current) * 100
        elif word == "thousand":
            total += max(1, current) * 1000
            current = 0
        else:
            return None
    return total + current


def _say_number(value: float) -> str:
    if value == int(value):
        return str(int(value))
    return f"{value:.2f}".rstrip("0")


def _clock(now: datetime) -> str:
    hour = now.hour % 12 or 12
    suffix = "AM" if now.hour < 12 else "PM"
    return f"{hour}:{now.minute:02d} {suffix}" if now.minute else f"{hour} {suffix}"


def respond(text: str, now: datetime, turn: int = 0) -> str:
    """The reply to one user turn. ``turn`` counts turns, to vary the jokes."""
    said = normalize(text)
    if not said:
        return "Sorry, I didn't catch that."
    if repeat := _REPEAT_RE.match(text.strip()):
        return repeat.group(1).strip()
    if arithmetic := _ARITHMETIC_RE.search(said):
        a, b = parse_number(arithmetic.group(1)), parse_number(arithmetic.group(3))
        if a is not None and b is not None:
            result = _OPERATORS[arithmetic.group(2)](a, b)
            spoken = f"{a} {arithmetic.group(2)} {b}"
            if result is None:
                return f"{spoken} has no answer: you can't divide by zero."
            return f"{spoken} is {_say_number(result)}."
    if re.search(r"\b(what time|the time|time is it)\b", said):
        return f"It's {_clock(now)}."
    if re.search(r"\b(what day|the date|today's date|what's the date|date today)\b", said):
        return f"Today is {now:%A}, {now:%B} {now.day}, {now.year}."
    if re.search(r"\b(your name|who are you|what are you)\b", said):
        return "I'm the talkwire voice agent: speech recognition, a few rules and speech synthesis."
    if re.search(r"\bhow are you\b", said):
        return "I'm doing well, thanks for asking. How can I help?"
    if re.search(r"\b(what can you do|help me|help)\b", said):
        return CAPABILITIES
    if re.search(r"\bjoke\b", said):
        return JOKES[turn % len(JOKES)]
    if re.search(r"\bweather\b", said):
        return "I can't check the weather: I run offline, without the internet."
    if re.search(r"\b(thank you|thanks)\b", said):
        return "You're welcome!"
    if re.search(r"\b(goodbye|bye)\b", said):
        return "Goodbye! Thanks for talking with me."
    if re.match(r"(hello|hi|hey|good (morning|afternoon|evening))\b", said):
        return GREETING
    return f"You said: {text.strip()}"


class RuleResponder:
    """``respond`` behind the Responder interface; the clock is injected for tests."""

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self._clock = clock or (lambda: datetime.now().astimezone())

    async def reply(self, history: Sequence[Message], instructions: str) -> AsyncIterator[str]:
        users = [m.text for m in history if m.role == "user"]
        yield respond(users[-1] if users else "", self._clock(), len(users))
