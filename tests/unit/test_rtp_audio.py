"""Opus straight between RTP and the agent's PCM: codec, level, inbound tap, outbound encoder.

Also pins the aiortc internals the adapters patch, so an aiortc upgrade that
moves them fails here rather than in a call.
"""

from __future__ import annotations

import numpy as np
import pytest
from aiortc import RTCRtpReceiver, RTCRtpSender
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpsender import RTCEncodedFrame
from aiortc.rtp import RtpPacket

from talkwire.protocol.audio import FRAME_BYTES, FRAME_SAMPLES, RATE
from talkwire.transceiver.opus import (
    SILENCE_PACKET,
    OpusDecoder,
    OpusEncoder,
    audio_level_dbov,
)
from talkwire.transceiver.pacing import OutFrame
from talkwire.transceiver.rtp_audio import InboundTap, OutboundOpus

OPUS = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)
PCMU = RTCRtpCodecParameters(mimeType="audio/PCMU", clockRate=8000, channels=1, payloadType=0)


def tone_frames(hz: float, frames: int, level: float = 0.3) -> list[bytes]:
    t = np.arange(frames * FRAME_SAMPLES) / RATE
    samples = (np.sin(2 * np.pi * hz * t) * level * 32767).astype(np.int16)
    return [samples[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES].tobytes() for i in range(frames)]


def dominant_hz(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / RATE)[int(np.argmax(spectrum))])


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype=np.int16).astype(np.float64)
    return float(np.sqrt(np.mean(samples**2)))


def test_opus_round_trip_keeps_the_tone_and_its_level_one_packet_per_frame() -> None:
    encoder, decoder = OpusEncoder(), OpusDecoder()
    frames = tone_frames(700.0, 50)
    packets = [encoder.encode(frame) for frame in frames]
    assert all(packets)  # one packet for every frame, none held back
    decoded = [decoder.decode(packet) for packet in packets]
    assert all(len(pcm) == FRAME_BYTES for pcm in decoded)  # 20 ms in, 20 ms out
    steady_in, steady_out = b"".join(frames[10:]), b"".join(decoded[10:])
    assert abs(dominant_hz(steady_out) - 700.0) < 15
    assert rms(steady_out) == pytest.approx(rms(steady_in), rel=0.15)


def test_the_codec_adds_under_4_ms_of_delay() -> None:
    # CELT only: 2.5 ms of codec delay (and the half-band filter's few samples);
    # Opus's "voip" mode adds SILK's lookahead, 6.8 ms in all here.
    encoder, decoder = OpusEncoder(), OpusDecoder()
    noise = np.random.default_rng(7).normal(0, 6000, 10 * FRAME_SAMPLES).astype(np.int16)
    pcm = bytes(10 * FRAME_BYTES) + noise.tobytes()
    frames = [pcm[i : i + FRAME_BYTES] for i in range(0, len(pcm), FRAME_BYTES)]
    out = np.frombuffer(b"".join(decoder.decode(encoder.encode(f)) for f in frames), np.int16)
    onset = int(np.argmax(np.abs(out) > 3000)) - 10 * FRAME_SAMPLES
    assert 0 <= onset < 0.004 * RATE


def test_a_broken_packet_decodes_to_nothing_and_the_decoder_carries_on() -> None:
    encoder, decoder = OpusEncoder(), OpusDecoder()
    assert decoder.decode(b"") == b""
    assert decoder.decode(b"\xff" * 3) == b""  # code-3 packet with an impossible frame count
    assert len(decoder.decode(encoder.encode(tone_frames(440.0, 1)[0]))) == FRAME_BYTES


def test_canned_silence_decodes_to_one_silent_frame() -> None:
    pcm = OpusDecoder().decode(SILENCE_PACKET)
    assert len(pcm) == FRAME_BYTES and rms(pcm) == 0.0


def test_audio_level_follows_rfc_6465() -> None:
    full_scale = np.full(FRAME_SAMPLES, 32767, dtype=np.int16).tobytes()
    assert audio_level_dbov(full_scale) == 0
    assert audio_level_dbov(bytes(FRAME_BYTES)) == -127
    assert audio_level_dbov(b"") == -127
    # A sine at amplitude A has an RMS of A/sqrt(2): -3 dB below a square wave of A.
    assert audio_level_dbov(tone_frames(1000.0, 1, level=1.0)[0]) == -3
    assert audio_level_dbov(tone_frames(1000.0, 1, level=0.1)[0]) == -23
    tiny = np.full(FRAME_SAMPLES, 1, dtype=np.int16).tobytes()
    assert audio_level_dbov(tiny) == -90


def rtp(seq: int, payload: bytes, payload_type: int = 111) -> RtpPacket:
    packet = RtpPacket(payload_type=payload_type, sequence_number=seq, timestamp=seq * 960)
    packet._data = payload  # type: ignore[attr-defined]
    return packet


def test_inbound_tap_decodes_opus_on_arrival_and_passes_other_codecs_through() -> None:
    heard: list[bytes] = []
    tap = InboundTap({111: OPUS, 0: PCMU}, heard.append)
    encoder = OpusEncoder()
    for seq, frame in zip((65534, 65535, 0), tone_frames(500.0, 3), strict=True):
        assert tap.add(rtp(seq, encoder.encode(frame))) == (False, None)
    assert len(heard) == 3 and all(len(pcm) == FRAME_BYTES for pcm in heard)
    assert tap.add(rtp(65535, b"late")) == (False, None)
    assert tap.add(rtp(1, b"\xff\xff\xff")) == (False, None)
    _, frame = tap.add(rtp(2, b"\x7f" * 160, payload_type=0))
    assert frame is not None and frame.data == b"\x7f" * 160  # aiortc decodes PCMU
    assert (tap.decoded_packets, tap.late_packets, tap.undecodable_packets) == (3, 1, 1)
    assert len(heard) == 3


class ScriptedSource:
    def __init__(self, frames: list[OutFrame]) -> None:
        self._frames = frames

    async def next_frame(self) -> OutFrame:
        return self._frames.pop(0)


async def test_outbound_encodes_each_frame_inline_with_its_level_and_the_pacers_timestamp() -> None:
    speech = tone_frames(300.0, 3)
    script = [OutFrame(pcm, 960 * i) for i, pcm in enumerate(speech)]
    script += [OutFrame(None, 5000), OutFrame(None, 6000), OutFrame(None, 30000, canned=True)]
    outbound = OutboundOpus(ScriptedSource(list(script)), unused)
    frames = [await outbound.next_encoded_frame(OPUS) for _ in script]
    assert all(isinstance(frame, RTCEncodedFrame) for frame in frames)
    sent = [frame for frame in frames if frame is not None]
    assert [f.timestamp for f in sent] == [f.timestamp for f in script]
    assert [f.audio_level for f in sent[:3]] == [audio_level_dbov(s) for s in speech]
    assert all(f.audio_level == -127 for f in sent[3:])
    # Encoded silence while the far decoder fades out, the canned packet once idle.
    assert all(f.payloads[0] != SILENCE_PACKET for f in sent[3:5])
    assert sent[5].payloads == [SILENCE_PACKET] and outbound.canned_silence == 1
    decoder = OpusDecoder()
    assert abs(dominant_hz(b"".join(decoder.decode(f.payloads[0]) for f in sent[:3])) - 300) < 30


async def unused(codec: RTCRtpCodecParameters) -> RTCEncodedFrame | None:
    raise AssertionError("Opus must not take aiortc's path")


async def test_outbound_leaves_other_codecs_to_aiortc() -> None:
    marker = RTCEncodedFrame([b"pcmu"], 0, -127)

    async def aiortc_path(codec: RTCRtpCodecParameters) -> RTCEncodedFrame | None:
        assert codec is PCMU
        return marker

    outbound = OutboundOpus(ScriptedSource([]), aiortc_path)
    assert await outbound.next_encoded_frame(PCMU) is marker


def test_the_aiortc_internals_the_adapters_patch_are_still_there() -> None:
    class Transport:
        state = "new"

        def _register_rtp_sender(self, *args: object) -> None:
            pass

    receiver = RTCRtpReceiver("audio", Transport())  # type: ignore[arg-type]
    assert isinstance(receiver._RTCRtpReceiver__codecs, dict)  # type: ignore[attr-defined]
    assert hasattr(receiver, "_RTCRtpReceiver__jitter_buffer")
    assert callable(RTCRtpSender._next_encoded_frame)
