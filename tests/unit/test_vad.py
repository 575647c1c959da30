"""talkwire.agents.vad: the energy VAD on generated signals (time is audio time)."""

from __future__ import annotations

import numpy as np
import pytest

from talkwire.agents.vad import EnergyVad, VadConfig, VadEvent, frame_dbfs
from talkwire.protocol.audio import FRAME_BYTES, FRAME_MS, RATE

FRAME_TOLERANCE_MS = 2 * FRAME_MS  # "within a frame or two of the edge"


def silence(ms: int) -> np.ndarray:
    return np.zeros(RATE * ms // 1000)


def tone(ms: int, peak_dbfs: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(RATE * ms // 1000) / RATE
    return 10 ** (peak_dbfs / 20) * np.sin(2 * np.pi * hz * t)


def noise(ms: int, rms_dbfs: float, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 10 ** (rms_dbfs / 20), RATE * ms // 1000)


def pcm(signal: np.ndarray) -> bytes:
    return (np.clip(signal, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def run(vad: EnergyVad, signal: np.ndarray) -> list[VadEvent]:
    data = pcm(signal)
    events = []
    for i in range(0, len(data), FRAME_BYTES):
        event = vad.feed(data[i : i + FRAME_BYTES])
        if event is not None:
            events.append(event)
    return events


def test_frame_dbfs_levels() -> None:
    assert frame_dbfs(bytes(FRAME_BYTES)) == -120.0
    # A sine's RMS is 3 dB under its peak.
    assert frame_dbfs(pcm(tone(20, -20.0)[:480])) == pytest.approx(-23.0, abs=0.2)
    assert frame_dbfs(pcm(noise(20, -60.0))) == pytest.approx(-60.0, abs=1.5)


def test_silence_gives_nothing() -> None:
    vad = EnergyVad()
    assert run(vad, silence(3000)) == []
    assert vad.now_ms == 3000
    assert not vad.speaking


def test_noise_below_threshold_gives_nothing() -> None:
    vad = EnergyVad()
    assert run(vad, noise(3000, -60.0)) == []


@pytest.mark.parametrize("start_ms", [1000, 1010])  # frame-aligned and not
def test_tone_burst_gives_one_start_and_one_stop_at_its_edges(start_ms: int) -> None:
    vad = EnergyVad()
    signal = np.concatenate([silence(start_ms), tone(600, -20.0), silence(1500)])
    events = run(vad, signal)
    assert [e.kind for e in events] == ["speech_started", "speech_stopped"]
    started, stopped = events
    end_ms = start_ms + 600
    assert abs(started.audio_ms - start_ms) <= FRAME_TOLERANCE_MS
    assert abs(stopped.audio_ms - end_ms) <= FRAME_TOLERANCE_MS
    # Decisions come after the edges by the configured start time and hangover.
    assert started.decided_ms - started.audio_ms == pytest.approx(
        VadConfig().start_ms, abs=FRAME_MS
    )
    assert stopped.decided_ms - stopped.audio_ms == VadConfig().hangover_ms
    assert not vad.speaking


def test_click_shorter_than_start_time_is_ignored() -> None:
    vad = EnergyVad()
    signal = np.concatenate([silence(500), tone(20, -10.0), silence(1000)])
    assert run(vad, signal) == []


def test_pause_shorter_than_hangover_stays_one_utterance() -> None:
    vad = EnergyVad(VadConfig(hangover_ms=500))
    signal = np.concatenate(
        [silence(400), tone(400, -20.0), silence(300), tone(400, -20.0), silence(1000)]
    )
    events = run(vad, signal)
    assert [e.kind for e in events] == ["speech_started", "speech_stopped"]
    assert abs(events[1].audio_ms - 1500) <= FRAME_TOLERANCE_MS


def test_hysteresis_between_thresholds() -> None:
    # -40 dBFS peak (-43 RMS) lies between stop (-45) and start (-35).
    between = tone(1000, -40.0)
    assert run(EnergyVad(), np.concatenate([silence(200), between, silence(200)])) == []
    vad = EnergyVad()
    signal = np.concatenate([silence(200), tone(300, -20.0), between, silence(1000)])
    events = run(vad, signal)
    assert [e.kind for e in events] == ["speech_started", "speech_stopped"]
    # The quieter part keeps the utterance going: it ends where the signal does.
    assert abs(events[1].audio_ms - 1500) <= FRAME_TOLERANCE_MS


def test_reset_forgets_speech_but_keeps_the_clock() -> None:
    vad = EnergyVad()
    events = run(vad, np.concatenate([silence(100), tone(200, -20.0)]))
    assert [e.kind for e in events] == ["speech_started"]
    vad.reset()
    assert not vad.speaking
    assert run(vad, silence(1000)) == []
    assert vad.now_ms == 1300
    vad.advance(RATE // 10)
    assert vad.now_ms == 1400


def test_set_config_changes_the_hangover() -> None:
    vad = EnergyVad()
    vad.set_config(VadConfig(hangover_ms=100))
    events = run(vad, np.concatenate([silence(100), tone(300, -20.0), silence(200)]))
    assert [e.kind for e in events] == ["speech_started", "speech_stopped"]
    assert events[1].decided_ms - events[1].audio_ms == 100


def test_config_and_frame_validation() -> None:
    with pytest.raises(ValueError, match="hysteresis"):
        VadConfig(start_dbfs=-50.0, stop_dbfs=-40.0)
    with pytest.raises(ValueError, match="even"):
        EnergyVad().feed(b"\x00\x00\x00")
    assert EnergyVad().feed(b"") is None
