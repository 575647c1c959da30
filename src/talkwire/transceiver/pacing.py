"""When each outbound audio packet goes, and which RTP timestamp it carries (sans-IO).

Chromium's jitter buffer (NetEq) sizes itself from how far each packet's
arrival strays from its RTP timestamp. A sender that moves its clock to meet
the agent's audio but keeps counting timestamps 20 ms apart looks like jitter:
NetEq then held 54 ms against a 40 ms target, where a fixed grid gave 36 / 20
(``bench/call.py``, one run). A fixed grid alone makes a frame wait up to 20 ms
for its slot. So timestamps follow a grid, and the grid moves only in ways
NetEq ignores:

- While audio plays, packets go on a 20 ms grid whose phase the first frame
  set. A frame late for its slot goes out the moment it arrives, still with
  its slot's timestamp, and the grid catches up: audio that keeps arriving a
  few ms after the grid reaches NetEq with a constant offset, which is no
  jitter and costs no wait.
- Frames that keep waiting for their slot move the grid earlier, to just
  before them (see ``_send_audio``).
- When no frame has come 40 ms after one was due, the audio has ended (or
  paused): a few packets of encoded silence on a new grid let the far
  decoder fade out, their timestamps counting the gap; then the line is
  idle: no packets but a keep-alive every 100 ms, and no grid. The next frame
  goes out the moment it arrives and starts a new grid, its timestamp
  counting the time since the last packet.

Without DTX (codecs aiortc encodes itself: their timestamps count 20 ms per
packet) there is a packet in every slot from the first: silence when no frame
is queued, no waiting for a late one, no new grid.

A source that runs slightly fast (frames every 19.9 ms) is followed by the
grid advances, so packets then go a little faster than their timestamps; much
faster, and its frames queue and are shed as backlog.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from talkwire.protocol.audio import FRAME_MS
from talkwire.transceiver.opus import OPUS_CLOCK, TIMESTAMP_STEP

SLOT_S: Final = FRAME_MS / 1000
# A playing line waits this long past a frame's due time before it takes the audio
# as ended: a frame that comes later starts a new grid, one that comes sooner is late.
LATE_S: Final = 0.04
FADE_SLOTS: Final = 5
# Whatever is due this soon goes now: event-loop timers are no finer (uvloop
# counts whole ms), and a shorter sleep only spins the loop until the clock
# ticks over. Timestamps come from slots, so going early changes none.
EARLY_S: Final = 0.001
# An idle line's one packet per 100 ms (Opus DTX sends one per 400 ms) is also what
# tells a restarted relay where the client is (its flow is learned from return
# traffic), so a client speaking to an idle line is heard again within 100 ms.
KEEPALIVE_S: Final = 0.1
# Frames that all waited for their slot this many times in a row move the grid
# earlier, to just before the earliest of them (a margin for timer lateness).
ADVANCE_AFTER: Final = 10
ADVANCE_MARGIN_S: Final = 0.0005


class Kind(enum.Enum):
    AUDIO = "audio"  # the next queued frame
    FADE = "fade"  # encoded silence, so the far decoder fades out with the encoder
    KEEPALIVE = "keepalive"  # canned silence while idle


@dataclass(frozen=True, slots=True)
class Send:
    kind: Kind
    timestamp: int  # in Opus's 48 kHz clock, from the call's first packet


@dataclass(frozen=True, slots=True)
class Wait:
    until: float  # or until a frame arrives, whichever comes first


@dataclass(frozen=True, slots=True)
class OutFrame:
    """One outbound packet's worth: the agent's PCM (None: silence) and its RTP timestamp."""

    pcm: bytes | None
    timestamp: int
    canned: bool = False  # idle: a keep-alive, which needs no encoder


class Pacer:
    """Decides, for the time ``now`` and the frames queued, to send or to wait."""

    def __init__(self, dtx: bool = True) -> None:
        self._dtx = dtx
        self._slot: float | None = None  # the next slot's start; None while idle
        self._timestamp = 0  # the next slot's timestamp
        self._fades: int | None = 0  # fade packets sent since the audio; None while playing
        self._ended = False  # cleared: the audio is over, whatever may still come late
        self._last_audio_at = 0.0
        self._last_slot: float | None = None  # the start of the last packet's slot
        self._last_timestamp = -TIMESTAMP_STEP
        self._held_since: float | None = None  # when the next slot's frame began to wait
        self._backlog = False  # the next frame was queued before the last one went
        self._held_in_row = 0
        self._least_hold = SLOT_S
        self.frames_late = 0
        self.grid_advances = 0

    @property
    def idle(self) -> bool:
        return self._slot is None

    def end(self) -> None:
        """The agent's audio was cleared (barge-in): fade out now, not after LATE_S."""
        if self._fades is None:
            self._ended = True

    def decide(self, now: float, queued: int) -> Send | Wait:
        """``queued``: the frames waiting to go, the next one first."""
        if not self._dtx:
            return self._steady(now, queued)
        if self._slot is None:
            return self._idle(now, queued)
        if queued:
            if now < self._slot - EARLY_S:
                if self._held_since is None and not self._backlog:
                    self._held_since = now
                return Wait(self._slot)
            if queued == 1 and now > self._slot + LATE_S:
                # A source that keeps coming this late is slow, not jittery: a new
                # grid at its phase, or the lag would grow and later leave as a burst.
                self._start_grid(now)
            # On time or late (a slow agent, a busy loop), a frame keeps its slot's
            # timestamp and the grid catches up: skipping the slot instead would make
            # every later frame wait one.
            return self._send_audio(now, queued)
        self._held_since, self._backlog = None, False
        if self._fades is None:
            due = max(self._slot, self._last_audio_at + SLOT_S) + LATE_S
            if now < due - EARLY_S and not self._ended:
                return Wait(due)  # the frame may still come, late
            # None came: the audio ended or paused. Silence follows on a grid from now,
            # its timestamp counting the gap, so that no packet looks late to NetEq.
            start = now if self._ended else max(now, due)  # a timer may fire a little early
            self._fades, self._ended = 0, False
            self._start_grid(start)
        if self._fades >= FADE_SLOTS:
            self._slot = None
            return self._idle(now, queued)
        if now < self._slot - EARLY_S:
            return Wait(self._slot)
        self._fades += 1
        return self._send(Kind.FADE)

    def _steady(self, now: float, queued: int) -> Send | Wait:
        """Without DTX: a packet in every slot from the first, silence when none is queued
        (aiortc's own encoders count 20 ms per packet, whatever the clock says)."""
        if self._slot is None:
            self._slot = now
        if now < self._slot - EARLY_S:
            return Wait(self._slot)
        if queued:
            return self._send_audio(now, queued)
        return self._send(Kind.FADE)

    def _idle(self, now: float, queued: int) -> Send | Wait:
        if self._last_slot is None or queued:
            start = now
        else:
            start = max(now, self._last_slot + KEEPALIVE_S)
        if now < start - EARLY_S:
            return Wait(start)
        self._start_grid(start)
        self._ended = False
        if queued:
            return self._send_audio(now, queued)
        send = self._send(Kind.KEEPALIVE)
        self._slot = None
        return send

    def _start_grid(self, start: float) -> None:
        """A grid whose first slot begins at ``start``, its timestamp counting the time
        since the last packet's slot."""
        self._slot = start
        if self._last_slot is None:
            self._timestamp = 0
            return
        # A frame that comes within the last packet's slot goes now, one step on: an early
        # packet once, then a grid at the agent's phase, beats a wait of up to 20 ms.
        elapsed = round((start - self._last_slot) * OPUS_CLOCK)
        self._timestamp = self._last_timestamp + max(TIMESTAMP_STEP, elapsed)

    def _send_audio(self, now: float, queued: int) -> Send:
        """Sends the frame; frames that keep waiting for their slot move the grid earlier.

        An earlier grid with the timestamps unchanged reaches NetEq as packets a
        little early, once, which it ignores: only late packets grow its target.
        The phase the first frame set may have been a late one; this is how the
        grid finds the agent's phase anyway. A frame that waited behind another
        (the agent is ahead: speech it sends in advance) says nothing of the
        phase, and must not speed the audio up.
        """
        assert self._slot is not None
        hold = 0.0 if self._held_since is None else self._slot - self._held_since
        if now > self._slot + 2 * ADVANCE_MARGIN_S:
            self.frames_late += 1
        self._held_since, self._backlog = None, queued > 1
        self._fades, self._last_audio_at = None, now
        send = self._send(Kind.AUDIO)
        if hold <= 2 * ADVANCE_MARGIN_S:
            self._held_in_row, self._least_hold = 0, SLOT_S
            return send
        self._held_in_row += 1
        self._least_hold = min(self._least_hold, hold)
        if self._held_in_row >= ADVANCE_AFTER:
            self._slot -= self._least_hold - ADVANCE_MARGIN_S
            self._held_in_row, self._least_hold = 0, SLOT_S
            self.grid_advances += 1
        return send

    def _send(self, kind: Kind) -> Send:
        assert self._slot is not None
        send = Send(kind, self._timestamp)
        self._last_slot, self._last_timestamp = self._slot, self._timestamp
        self._slot += SLOT_S
        self._timestamp += TIMESTAMP_STEP
        return send
