"""The outbound pacer, driven by a simulated clock: when packets go, which timestamps they carry."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from talkwire.transceiver.opus import TIMESTAMP_STEP
from talkwire.transceiver.pacing import (
    ADVANCE_AFTER,
    ADVANCE_MARGIN_S,
    EARLY_S,
    FADE_SLOTS,
    KEEPALIVE_S,
    LATE_S,
    SLOT_S,
    Kind,
    Pacer,
    Send,
    Wait,
)

MS = 1e-3
EPSILON = 1e-9  # slots are sums of floats


@dataclass
class Sent:
    at: float
    kind: Kind
    timestamp: int
    arrived: float | None  # the frame's arrival, for audio


@dataclass
class Line:
    """A sender loop in simulated time: it wakes at the pacer's deadline or on a frame."""

    pacer: Pacer = field(default_factory=Pacer)
    early: float = 0.0  # wake this much before a deadline, as uvloop's ms timers do
    sent: list[Sent] = field(default_factory=list)

    def run(self, arrivals: list[float], until: float) -> list[Sent]:
        pending, queue, now = sorted(arrivals), list[float](), 0.0
        while now < until:
            decision = self.pacer.decide(now, len(queue))
            if isinstance(decision, Send):
                arrived = queue.pop(0) if decision.kind is Kind.AUDIO else None
                self.sent.append(Sent(now, decision.kind, decision.timestamp, arrived))
                continue
            assert decision.until - now > EARLY_S - EPSILON  # else the loop would spin
            wake = decision.until - self.early
            if pending and pending[0] < wake:
                wake = pending[0]
            now = max(now, wake)
            while pending and pending[0] <= now:
                queue.append(pending.pop(0))
        return self.sent

    def audio(self) -> list[Sent]:
        return [s for s in self.sent if s.kind is Kind.AUDIO]


def steps(sent: list[Sent]) -> list[int]:
    return [b.timestamp - a.timestamp for a, b in pairwise(sent)]


def waited(sent: Sent) -> float:
    assert sent.arrived is not None
    return sent.at - sent.arrived


def stream(start: float, frames: int, every: float = SLOT_S) -> list[float]:
    return [start + i * every for i in range(frames)]


def test_a_steady_stream_goes_out_as_it_arrives_twenty_ms_of_timestamp_apart() -> None:
    line = Line()
    line.run(stream(0.0073, 50), until=1.2)
    audio = line.audio()
    assert len(audio) == 50
    assert all(waited(s) < EPSILON for s in audio)  # no frame waits for a grid
    assert [b.timestamp - a.timestamp for a, b in pairwise(audio)] == [TIMESTAMP_STEP] * 49
    assert line.sent[0].kind is Kind.KEEPALIVE  # the call's first packet, at once


def test_a_late_or_missing_frame_keeps_the_timestamps_and_delays_no_later_frame() -> None:
    arrivals = stream(0.1, 12)
    arrivals[2] += 7 * MS  # late, inside its slot
    arrivals[5] = arrivals[6] - MS / 2  # late by most of a slot, then two at once

    del arrivals[8]  # lost on the way: the next frame takes its slot, late
    line = Line()
    line.run(arrivals, until=arrivals[-1] + MS)
    audio = line.audio()
    assert all(waited(s) < EPSILON for s in audio)  # every frame goes as it comes
    assert steps(audio) == [TIMESTAMP_STEP] * (len(audio) - 1)
    assert line.pacer.frames_late >= 5


def test_after_the_audio_the_decoder_fades_then_only_keep_alives_follow_the_clock() -> None:
    line = Line()
    line.run(stream(0.05, 3), until=2.0)
    after = line.sent[4:]  # keep-alive, three frames
    fades = [s for s in after if s.kind is Kind.FADE]
    keepalives = [s for s in after if s.kind is Kind.KEEPALIVE]
    assert len(fades) == FADE_SLOTS and after[: len(fades)] == fades
    assert len(keepalives) >= 3
    gaps = [b.at - a.at for a, b in pairwise(keepalives)]
    assert all(abs(g - KEEPALIVE_S) < EPSILON for g in gaps)
    # Timestamps count the time that passed, so a gap is no jitter to the far end.
    for a, b in pairwise(keepalives):
        assert b.timestamp - a.timestamp == round((b.at - a.at) * 48000)


def test_a_frame_on_an_idle_line_goes_at_once_and_starts_a_grid_at_its_phase() -> None:
    first, second = stream(0.05, 2), stream(1.0537, 20)
    line = Line()
    line.run(first + second, until=1.5)
    audio = line.audio()[2:]
    assert all(waited(s) < EPSILON for s in audio)
    before = [s for s in line.sent if s.at < audio[0].at][-1]
    assert audio[0].timestamp - before.timestamp == round((audio[0].at - before.at) * 48000)


def test_frames_that_keep_waiting_for_their_slot_move_the_grid_to_them() -> None:
    # The first frame comes 6 ms late, so the grid it sets is 6 ms after the others.
    arrivals = stream(0.05, 40)
    arrivals[0] += 6 * MS
    line = Line()
    line.run(arrivals, until=1.0)
    audio = line.audio()
    waits = [waited(s) for s in audio]
    assert min(waits[1:ADVANCE_AFTER]) > 5 * MS
    assert max(waits[ADVANCE_AFTER + 1 :]) <= ADVANCE_MARGIN_S + EPSILON
    assert line.pacer.grid_advances == 1
    assert set(steps(audio)) == {TIMESTAMP_STEP}  # moving earlier leaves them alone


def test_speech_sent_ahead_plays_at_exactly_one_frame_per_slot() -> None:
    # A reply the agent sends 2 s at a time: every frame waits behind others, which
    # says nothing of the phase; the grid must not move, or the reply plays fast.
    line = Line()
    line.run([0.1] * 100 + [1.1] * 100, until=4.5)
    audio = line.audio()
    assert len(audio) == 200 and line.pacer.grid_advances == 0
    assert all(abs(b.at - a.at - SLOT_S) < EPSILON for a, b in pairwise(audio))


def test_without_dtx_silence_fills_every_slot_and_the_line_never_idles() -> None:
    line = Line(Pacer(dtx=False))
    line.run(stream(0.5, 2) + stream(0.73, 2), until=1.0)
    assert not any(s.kind is Kind.KEEPALIVE for s in line.sent)
    assert all(abs(b.at - a.at - SLOT_S) < EPSILON for a, b in pairwise(line.sent))
    assert set(steps(line.sent)) == {TIMESTAMP_STEP}  # aiortc counts 20 ms a packet anyway
    assert len(line.audio()) == 4 and not line.pacer.idle


def test_a_clear_fades_out_at_once_instead_of_waiting_for_a_late_frame() -> None:
    line = Line()
    line.run(stream(0.05, 3), until=0.1)
    assert isinstance(line.pacer.decide(0.1, 0), Wait)  # playing: a frame may come late
    line.pacer.end()
    assert line.pacer.decide(0.1, 0) == Send(Kind.FADE, line.sent[-1].timestamp + TIMESTAMP_STEP)


def test_a_slow_source_gets_a_new_grid_so_a_later_burst_still_plays_in_real_time() -> None:
    slow = stream(0.05, 100, every=0.022)  # 10 % slow, then 1 s of audio at once
    at = slow[-1] + 0.022
    line = Line()
    line.run(slow + [at] * 50, until=4.0)
    burst = [s for s in line.audio() if s.arrived == at]
    assert len(burst) == 50
    # It catches up on at most LATE_S of lag, then plays one frame per slot.
    assert burst[-1].at - burst[0].at >= (len(burst) - 1) * SLOT_S - LATE_S - EPSILON


def test_a_timer_that_fires_early_neither_spins_nor_changes_a_timestamp() -> None:
    exact, early = Line(), Line(early=0.3 * MS)
    arrivals = stream(0.05, 20) + stream(0.61, 5, every=0.02)
    exact.run(arrivals, until=1.5)
    early.run(arrivals, until=1.5)
    assert [s.timestamp for s in early.sent] == [s.timestamp for s in exact.sent]


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.floats(min_value=0.0, max_value=0.5), min_size=1, max_size=60),
    dtx=st.booleans(),
)
def test_timestamps_never_overlap_and_every_frame_goes_in_order(
    gaps: list[float], dtx: bool
) -> None:
    arrivals, at = [], 0.0
    for gap in gaps:
        at += gap
        arrivals.append(at)
    line = Line(Pacer(dtx), early=0.3 * MS)
    sent = line.run(arrivals, until=at + 1.0)
    assert all(b.timestamp - a.timestamp >= TIMESTAMP_STEP for a, b in pairwise(sent))
    audio = line.audio()
    assert [s.arrived for s in audio] == sorted(arrivals)
    assert all(waited(s) >= 0 for s in audio)


def test_a_frame_just_after_a_keep_alive_goes_at_once_one_step_on() -> None:
    line = Line()
    line.run([3 * MS], until=5 * MS)
    keepalive, frame = line.sent
    assert keepalive.kind is Kind.KEEPALIVE and waited(frame) < EPSILON
    assert frame.timestamp - keepalive.timestamp == TIMESTAMP_STEP  # never overlapping it
