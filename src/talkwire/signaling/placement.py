"""Which transceiver takes a new call. Pure: records and time in, an ordered
list of candidates out; the caller tries them in order."""

from __future__ import annotations

import random
from collections.abc import Iterable

from talkwire.registry.base import TransceiverInfo

DEFAULT_MAX_AGE_S = 3.0
# Fullness closer than this is noise (a CPU sample, a call being set up): the
# transceiver with fewer calls goes first. Without it a burst of offers all
# lands on whichever looked a hair emptier at its last report, a second ago.
FULLNESS_STEP = 0.05


def is_healthy(info: TransceiverInfo, now: float, max_age_s: float = DEFAULT_MAX_AGE_S) -> bool:
    """Fresh enough to trust: a transceiver that stopped reporting (crashed,
    partitioned, failing its health checks) drops out after ``max_age_s``.
    A record from the future (clock skew between hosts) counts as fresh."""
    return now - info.updated_at <= max_age_s


def accepts_calls(info: TransceiverInfo, now: float, max_age_s: float = DEFAULT_MAX_AGE_S) -> bool:
    return (
        is_healthy(info, now, max_age_s)
        and not info.draining
        and not info.overloaded
        and info.active < info.capacity
    )


# Below this share of a core, measured load is no signal for placement: it
# lags the calls by a second and swings with every call set up or torn down,
# while the call count (counted the moment a call is placed) is exact. Above
# it, load steers: calls differ in cost, and a busy process is a busy process.
LOAD_THAT_MATTERS = 0.5


def fullness(info: TransceiverInfo) -> float:
    """How full: the larger of its call count against capacity and, once it
    matters, its measured load."""
    load = info.load if info.load >= LOAD_THAT_MATTERS else 0.0
    return max(info.active / info.capacity, load)


def place(
    transceivers: Iterable[TransceiverInfo],
    region: str | None,
    now: float,
    *,
    max_age_s: float = DEFAULT_MAX_AGE_S,
    rng: random.Random | None = None,
) -> list[TransceiverInfo]:
    """Candidates in the order to try them.

    Those in ``region`` come first, least full (``fullness``, in steps of
    ``FULLNESS_STEP``) first; within a step fewer calls first (signaling counts
    each call it places at once, so a burst alternates), then at random so equal
    transceivers share new calls. The others
    follow in the same order: they are the fallback when the region has no
    one left, and the retry target when the region's only candidate fails.
    """
    pick = rng if rng is not None else random.Random()
    eligible = [t for t in transceivers if accepts_calls(t, now, max_age_s)]
    # Random tiebreaks drawn once per candidate so the sort stays consistent.
    keyed = [(int(fullness(t) / FULLNESS_STEP), t.active, pick.random(), t) for t in eligible]
    keyed.sort(key=lambda k: k[:3])
    ordered = [k[3] for k in keyed]
    local = [t for t in ordered if t.region == region]
    remote = [t for t in ordered if t.region != region]
    return local + remote
