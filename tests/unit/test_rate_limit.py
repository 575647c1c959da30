"""Token buckets for signaling's request limits, driven by a moved clock."""

from __future__ import annotations

import pytest

from talkwire.errors import ConfigError
from talkwire.rate_limit import Rate, RateLimiter


def test_a_burst_passes_then_one_request_per_refill() -> None:
    limiter = RateLimiter(Rate(per_s=2.0, burst=3))
    assert [limiter.take("a", 100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a", 100.0) == pytest.approx(0.5)  # half a second to the next token
    assert limiter.take("a", 100.25) == pytest.approx(0.25)  # refused ones spend nothing
    assert limiter.take("a", 100.5) == 0.0
    assert limiter.take("a", 100.5) > 0
    assert limiter.take("b", 100.5) == 0.0  # every key has its own bucket


def test_an_idle_bucket_refills_only_to_its_burst() -> None:
    limiter = RateLimiter(Rate(per_s=1.0, burst=2))
    limiter.take("a", 0.0)
    results = [limiter.take("a", 3600.0) for _ in range(3)]
    assert results[:2] == [0.0, 0.0] and results[2] > 0


def test_the_table_is_bounded_and_forgets_refilled_buckets_first() -> None:
    limiter = RateLimiter(Rate(per_s=1.0, burst=1), max_keys=100)
    limiter.take("busy", 0.0)  # empty now: it must be remembered
    for i in range(10_000):
        limiter.take(f"flood-{i}", 0.0 if i < 99 else 10.0)
        assert len(limiter) <= 100
    # The flood's old keys (refilled by t=10) went first; "busy" was refilled too by
    # then, so forgetting it costs nothing: it gets the full bucket it would have.
    assert limiter.take("busy", 10.0) == 0.0
    fresh = RateLimiter(Rate(per_s=1.0, burst=1), max_keys=100)
    fresh.take("busy", 0.0)
    for i in range(99):
        fresh.take(f"k{i}", 0.0)
    fresh.take("busy", 0.0)  # refused, and now the most recently used
    fresh.take("newcomer", 0.0)  # over the bound with nothing refilled: oldest go
    assert fresh.take("busy", 0.0) > 0  # still limited: it was not forgotten


@pytest.mark.parametrize(
    ("text", "rate"),
    [("10/50", Rate(10.0, 50)), ("2.5", Rate(2.5, 3)), ("0.5", Rate(0.5, 1)), ("OFF", None)],
)
def test_parse(text: str, rate: Rate | None) -> None:
    assert Rate.parse(text) == rate


@pytest.mark.parametrize("text", ["", "ten", "10/", "0/5", "-1/5", "10/0", "inf/5", "nan"])
def test_parse_rejects_nonsense(text: str) -> None:
    with pytest.raises(ConfigError):
        Rate.parse(text)
