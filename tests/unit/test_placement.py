"""Placement is pure: records + region + now in, ordered candidates out."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from talkwire.registry.base import TransceiverInfo
from talkwire.signaling.placement import FULLNESS_STEP, accepts_calls, is_healthy, place

NOW = 1_000_000.0


def info(
    id: str,
    *,
    region: str = "eu",
    capacity: int = 10,
    active: int = 0,
    draining: bool = False,
    age: float = 0.0,
    load: float = 0.0,
    overloaded: bool = False,
) -> TransceiverInfo:
    return TransceiverInfo(
        id=id,
        api_url=f"http://127.0.0.1/{id}",
        region=region,
        cluster=f"{region}-1",
        capacity=capacity,
        active=active,
        draining=draining,
        updated_at=NOW - age,
        load=load,
        overloaded=overloaded,
    )


def ids(candidates: list[TransceiverInfo]) -> list[str]:
    return [c.id for c in candidates]


def test_least_loaded_first_by_ratio_not_count() -> None:
    # b has more calls but a lower load ratio than a.
    a = info("a", capacity=10, active=5)
    b = info("b", capacity=100, active=20)
    c = info("c", capacity=10, active=1)
    assert ids(place([a, b, c], "eu", NOW)) == ["c", "b", "a"]


def test_excludes_stale_draining_and_full() -> None:
    ok = info("ok")
    stale = info("stale", age=3.5)
    draining = info("draining", draining=True)
    full = info("full", capacity=4, active=4)
    zero = info("zero", capacity=0)
    assert ids(place([ok, stale, draining, full, zero], "eu", NOW, max_age_s=3.0)) == ["ok"]


def test_measured_load_outranks_a_low_call_count_and_overload_excludes() -> None:
    # b holds fewer calls but its CPU is busier: a new call goes to a first.
    a = info("a", capacity=100, active=30, load=0.3)
    b = info("b", capacity=100, active=10, load=0.6)
    hot = info("hot", capacity=100, active=1, load=0.9, overloaded=True)
    assert ids(place([a, b, hot], "eu", NOW)) == ["a", "b"]
    assert not accepts_calls(hot, NOW)


def test_fullness_within_a_step_is_noise_and_fewer_calls_go_first() -> None:
    # a looked a little idler at its last report but has just been given a call.
    a = info("a", capacity=100, active=1, load=0.01)
    b = info("b", capacity=100, active=0, load=0.04)
    assert ids(place([a, b], "eu", NOW)) == ["b", "a"]
    # A step apart, the emptier one wins whatever the counts ...
    c = info("c", capacity=100, active=3, load=0.02)
    d = info("d", capacity=100, active=0, load=0.6)
    assert ids(place([c, d], "eu", NOW)) == ["c", "d"]
    # ... but light load is noise next to the count: a lagging report of the
    # last burst must not send the next one all to the other side.
    e = info("e", capacity=100, active=0, load=0.3)
    f = info("f", capacity=100, active=4, load=0.05)
    assert ids(place([e, f], "eu", NOW)) == ["e", "f"]


def test_load_fields_are_optional_in_json_and_validated() -> None:
    record = info("x").to_json()
    del record["load"], record["overloaded"]
    parsed = TransceiverInfo.from_json(record)
    assert (parsed.load, parsed.overloaded) == (0.0, False)
    for bad in ({"load": -1}, {"load": "high"}, {"load": float("nan")}, {"overloaded": 1}):
        with pytest.raises(ValueError, match=r"'(load|overloaded)'"):
            TransceiverInfo.from_json({**record, **bad})


def test_freshness_boundary_and_future_records() -> None:
    assert is_healthy(info("x", age=3.0), NOW, 3.0)
    assert not is_healthy(info("x", age=3.01), NOW, 3.0)
    # A clock ahead of ours (another host) is not a reason to refuse it.
    assert is_healthy(info("x", age=-5.0), NOW, 3.0)
    assert not accepts_calls(info("x", active=10, capacity=10), NOW)


def test_region_first_then_fallback_others() -> None:
    eu_busy = info("eu-busy", region="eu", active=9)
    us_idle = info("us-idle", region="us", active=0)
    assert ids(place([us_idle, eu_busy], "eu", NOW)) == ["eu-busy", "us-idle"]


def test_falls_back_to_any_region_when_none_there() -> None:
    us = info("us", region="us", active=3)
    ap = info("ap", region="ap", active=1)
    assert ids(place([us, ap], "eu", NOW)) == ["ap", "us"]
    assert ids(place([us, ap], None, NOW)) == ["ap", "us"]


def test_empty_when_nothing_eligible() -> None:
    assert place([], "eu", NOW) == []
    assert place([info("d", draining=True), info("s", age=60)], "eu", NOW) == []


def test_ties_are_broken_randomly() -> None:
    pool = [info(f"t{i}") for i in range(3)]
    rng = random.Random(7)
    firsts = Counter(place(pool, "eu", NOW, rng=rng)[0].id for _ in range(300))
    # Each of the three equal transceivers gets a real share of first places.
    assert set(firsts) == {"t0", "t1", "t2"}
    assert min(firsts.values()) > 50


def test_ties_do_not_override_load() -> None:
    pool = [info("busy", active=5), info("idle1"), info("idle2")]
    rng = random.Random(1)
    for _ in range(50):
        assert place(pool, "eu", NOW, rng=rng)[-1].id == "busy"


records = st.builds(
    info,
    st.text("abcdef", min_size=1, max_size=4),
    region=st.sampled_from(["eu", "us"]),
    capacity=st.integers(0, 20),
    active=st.integers(0, 25),
    draining=st.booleans(),
    age=st.floats(-10, 10),
)


@given(st.lists(records, max_size=12), st.sampled_from(["eu", "us", "ap"]))
def test_properties(pool: list[TransceiverInfo], region: str) -> None:
    out = place(pool, region, NOW, rng=random.Random(0))
    assert all(accepts_calls(t, NOW) for t in out)
    assert len(out) == sum(1 for t in pool if accepts_calls(t, NOW))
    local = [t for t in out if t.region == region]
    assert out[: len(local)] == local
    for group in (local, out[len(local) :]):
        # Least full first in FULLNESS_STEP steps, then fewer calls.
        keys = [(int(t.active / t.capacity / FULLNESS_STEP), t.active) for t in group]
        assert keys == sorted(keys)
