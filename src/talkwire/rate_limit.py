"""Rate limits: one token bucket per key (a client IP, an API key, a network prefix).

Sans-IO: the caller passes the time, so tests move a clock instead of
sleeping. The table is bounded: past ``max_keys`` it first forgets buckets
that have refilled (they hold no state), then the oldest, so a flood of new
keys costs memory up to the bound and no more. A forgotten key starts again
with a full bucket; the per-IP limit in front still holds a flood of keys.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass

from talkwire.errors import ConfigError

DEFAULT_MAX_KEYS = 100_000


@dataclass(frozen=True)
class Rate:
    """``per_s`` requests per second on average, ``burst`` at once."""

    per_s: float
    burst: int

    def __post_init__(self) -> None:
        if not (self.per_s > 0 and math.isfinite(self.per_s)) or self.burst < 1:
            raise ConfigError("a rate needs a positive per-second rate and a burst of at least 1")

    @classmethod
    def parse(cls, text: str) -> Rate | None:
        """``"10/50"`` (10 per second, bursts of 50), ``"10"`` (burst 10), or ``"off"``."""
        if text.strip().lower() == "off":
            return None
        per_s, slash, burst = text.partition("/")
        try:
            if slash and not burst:
                raise ValueError(text)
            rate = float(per_s)
            return cls(rate, int(burst) if burst else max(1, math.ceil(rate)))
        except ValueError:
            raise ConfigError(
                f"rate {text!r}: expected PER_SECOND[/BURST] (like 10/50) or 'off'"
            ) from None


class RateLimiter:
    def __init__(self, rate: Rate, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self.rate = rate
        self.max_keys = max_keys
        self._buckets: dict[Hashable, tuple[float, float]] = {}  # key -> (tokens, as of when)

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: Hashable, now: float) -> float:
        """Spend one request of ``key``: 0.0 if allowed, else the seconds until it would be."""
        tokens, then = self._buckets.pop(key, (float(self.rate.burst), now))
        tokens = min(float(self.rate.burst), tokens + max(0.0, now - then) * self.rate.per_s)
        if tokens >= 1.0:
            tokens -= 1.0
            wait = 0.0
        else:
            wait = (1.0 - tokens) / self.rate.per_s
        self._buckets[key] = (tokens, now)  # re-inserted: the dict's order is last use
        if len(self._buckets) > self.max_keys:
            self._shrink(now)
        return wait

    def _shrink(self, now: float) -> None:
        # Down to 90 %, so a flood of new keys pays for a scan once per 10 % of them.
        target = self.max_keys * 9 // 10
        burst, per_s = float(self.rate.burst), self.rate.per_s
        full = [k for k, (t, when) in self._buckets.items() if t + (now - when) * per_s >= burst]
        for key in full:
            del self._buckets[key]
        while len(self._buckets) > target:
            del self._buckets[next(iter(self._buckets))]  # least recently used
