"""Text helpers shared by the voice agent, its tests and its benchmark (pure functions).

``normalize`` folds a transcript into lower-case words without punctuation and
with digits spelled out, so "It's 5 o'clock." and "it's five o'clock" compare
equal; ``word_error_rate`` scores a hypothesis against a reference on that
form; ``speakable_parts`` cuts a reply into the pieces text-to-speech takes
one at a time (a short first piece means the first audio comes sooner).
"""

from __future__ import annotations

import re
from typing import Final

SMALL_NUMBERS: Final = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
TENS: Final = [
    "_",
    "_",
    "twenty",
    "thirty",
    "forty",
    "fifty",
    "sixty",
    "seventy",
    "eighty",
    "ninety",
]
_WORD_RE: Final = re.compile(r"[a-z0-9']+")
_NUMBER_RE: Final = re.compile(r"(\d+)(st|nd|rd|th)?\b")
# A sentence ends at . ! ? (or a run of them) followed by space; a phrase also at , ; :
_SENTENCE_END_RE: Final = re.compile(r"(?<=[.!?])\s+")
_PHRASE_END_RE: Final = re.compile(r"(?<=[,;:])\s+")


def number_words(n: int) -> str:
    """0..999_999 spelled out ("twenty one"); larger numbers digit by digit."""
    if n < 20:
        return SMALL_NUMBERS[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return TENS[tens] + ("" if ones == 0 else " " + SMALL_NUMBERS[ones])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return (
            SMALL_NUMBERS[hundreds] + " hundred" + ("" if rest == 0 else " " + number_words(rest))
        )
    if n < 1_000_000:
        thousands, rest = divmod(n, 1000)
        return (
            number_words(thousands) + " thousand" + ("" if rest == 0 else " " + number_words(rest))
        )
    return " ".join(SMALL_NUMBERS[int(d)] for d in str(n))


def ordinal_words(n: int) -> str:
    """21 → "twenty first"."""
    head, _, last = number_words(n).rpartition(" ")
    irregular = {"one": "first", "two": "second", "three": "third", "five": "fifth",
                 "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}  # fmt: skip
    if last in irregular:
        last = irregular[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return f"{head} {last}".strip()


def _spell_number(match: re.Match[str]) -> str:
    value = int(match.group(1))
    return f" {ordinal_words(value) if match.group(2) else number_words(value)} "


def normalize(text: str) -> str:
    """Lower-case words, digits spelled out, punctuation (but apostrophes) dropped."""
    lowered = _NUMBER_RE.sub(_spell_number, text.lower())
    lowered = lowered.replace("\u2019", "'").replace("-", " ")
    words = (w.strip("'") for w in _WORD_RE.findall(lowered))
    return " ".join(w for w in words if w)


def words(text: str) -> list[str]:
    return normalize(text).split()


# Sounds, not words: a turn of nothing else is no turn (and interrupts nothing).
FILLERS: Final = frozenset(
    [
        "uh",
        "uhh",
        "um",
        "umm",
        "uhm",
        "hmm",
        "hm",
        "mm",
        "mmm",
        "mhm",
        "ah",
        "ahh",
        "oh",
        "er",
        "erm",
        "eh",
        "huh",
    ]
)


def content_words(text: str) -> list[str]:
    """The words of ``text`` that say something: fillers like "uh" and "hmm" left out."""
    return [w for w in words(text) if w not in FILLERS]


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance over words: substitutions + deletions + insertions."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, 1):
        current = [i]
        for j, hyp_word in enumerate(hypothesis, 1):
            current.append(
                min(
                    previous[j] + 1,
                    current[j - 1] + 1,
                    previous[j - 1] + (ref_word != hyp_word),
                )
            )
        previous = current
    return previous[-1]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Edits needed to turn the hypothesis into the reference, per reference word."""
    ref = words(reference)
    if not ref:
        return 0.0 if not words(hypothesis) else 1.0
    return edit_distance(ref, words(hypothesis)) / len(ref)


def speakable_parts(text: str) -> list[str]:
    """A whole reply cut the way streamed text is (see SentenceBuffer)."""
    buffer = SentenceBuffer()
    return buffer.feed(text) + buffer.flush()


class SentenceBuffer:
    """Collects streamed text (an LLM's deltas) and hands out speakable parts.

    A part is a sentence; the reply's first part ends already at its first
    phrase break (, ; :), because a short first part is synthesised sooner
    and the first audio is what the user waits for.
    """

    __slots__ = ("_parts_out", "_pending")

    def __init__(self) -> None:
        self._pending = ""
        self._parts_out = 0

    def feed(self, delta: str) -> list[str]:
        """Parts completed by ``delta``; the unfinished tail waits for more text."""
        self._pending += delta
        done: list[str] = []
        while (cut := self._next_cut()) is not None:
            start, end = cut
            part, self._pending = self._pending[:start].strip(), self._pending[end:]
            if part:
                done.append(part)
                self._parts_out += 1
        return done

    def flush(self) -> list[str]:
        """The rest, at the end of the stream."""
        rest, self._pending = self._pending.strip(), ""
        if not rest:
            return []
        self._parts_out += 1
        return [rest]

    def _next_cut(self) -> tuple[int, int] | None:
        # Only punctuation followed by whitespace is known to end its part.
        found = [_SENTENCE_END_RE.search(self._pending)]
        if self._parts_out == 0:
            found.append(_PHRASE_END_RE.search(self._pending))
        matches = [m for m in found if m is not None]
        if not matches:
            return None
        first = min(matches, key=lambda m: m.start())
        return first.start(), first.end()
