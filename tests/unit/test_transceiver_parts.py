"""The transceiver's sans-IO parts: demux, resampling, jitter pass-through, playout queue."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from aioice import stun as aioice_stun
from aiortc.rtp import RtpPacket
from hypothesis import given
from hypothesis import strategies as st

from talkwire import encap
from talkwire.protocol.audio import FRAME_BYTES, FRAME_SAMPLES, RATE
from talkwire.transceiver.audio import OUT_FRAME_SAMPLES, AgentAudioTrack
from talkwire.transceiver.demux import Delivery, Demux, Drop
from talkwire.transceiver.opus import TIMESTAMP_STEP
from talkwire.transceiver.pacing import KEEPALIVE_S
from talkwire.transceiver.resample import Downsampler, Upsampler
from talkwire.transceiver.rtp_audio import PassThroughBuffer
from talkwire.transceiver.sdp import candidate_addresses, strip_candidates

RELAY = ("127.0.0.1", 3479)
CLIENT = ("198.51.100.7", 50000)


PASSWORD = "p" * 22  # every test session's ICE password


def stun_message(
    username: str | None = "AAAAsession1:cli1",
    password: str | None = PASSWORD,
    method: aioice_stun.Method = aioice_stun.Method.BINDING,
    kind: aioice_stun.Class = aioice_stun.Class.REQUEST,
) -> bytes:
    message = aioice_stun.Message(message_method=method, message_class=kind)
    if username is not None:
        message.attributes["USERNAME"] = username
    if password is not None:
        message.add_message_integrity(password.encode())
    message.add_fingerprint()
    return bytes(message)


def binding_request(username: str) -> bytes:
    return stun_message(username)


def from_relay(payload: bytes, client: tuple[str, int] = CLIENT, ingress: int = 0) -> bytes:
    return encap.pack_header(client, ingress) + payload


class TestDemux:
    def test_first_check_claims_the_address_and_later_packets_follow_it(self) -> None:
        demux: Demux[str] = Demux()
        demux.register("AAAAsession1", PASSWORD, {0: "session-1"})
        routed = demux.route(from_relay(binding_request("AAAAsession1:cli1")), RELAY)
        assert isinstance(routed, Delivery)
        assert (routed.endpoint, routed.client) == ("session-1", CLIENT)
        dtls = demux.route(from_relay(b"\x16\xfe\xfd" + bytes(20)), RELAY)
        assert isinstance(dtls, Delivery) and dtls.endpoint == "session-1"
        assert dtls.payload == b"\x16\xfe\xfd" + bytes(20)
        assert demux.relay_for(CLIENT) == RELAY

    def test_unknown_ufrag_client_ingress_and_bad_header_are_dropped_and_counted(self) -> None:
        demux: Demux[str] = Demux()
        demux.register("AAAAsession1", PASSWORD, {0: "session-1"})
        assert (
            demux.route(from_relay(binding_request("BBBBother:cli1")), RELAY) is Drop.UNKNOWN_UFRAG
        )
        assert demux.route(from_relay(b"\x80" + bytes(30)), RELAY) is Drop.UNKNOWN_CLIENT
        assert demux.route(binding_request("AAAAsession1:cli1"), RELAY) is Drop.BAD_HEADER
        assert demux.drops[Drop.BAD_HEADER] == 1
        assert demux.relay_for(CLIENT) is None  # nothing unauthenticated is remembered

    def test_a_forged_or_unauthenticated_request_reaches_no_session(self) -> None:
        """aioice would answer each with an error, sent to the address it claims."""
        demux: Demux[str] = Demux()
        demux.register("AAAAsession1", PASSWORD, {0: "one"})
        forged = [
            (stun_message(password="q" * 22), Drop.BAD_INTEGRITY),
            (stun_message(password=None), Drop.BAD_INTEGRITY),
            (stun_message(username=None), Drop.MALFORMED_STUN),  # no USERNAME
        ]
        for packet, reason in forged:
            assert demux.route(from_relay(packet), RELAY) is reason
        assert demux.clients == 0 and demux.relay_for(CLIENT) is None
        # Once the real client holds the address, a spoofer of it still gets no answer...
        assert isinstance(demux.route(from_relay(stun_message()), RELAY), Delivery)
        spoofed = [
            (stun_message(password="q" * 22), Drop.BAD_INTEGRITY),
            (stun_message(method=aioice_stun.Method.ALLOCATE), Drop.NOT_BINDING_REQUEST),
            (stun_message(method=aioice_stun.Method.SEND), Drop.NOT_BINDING_REQUEST),
            (stun_message()[:-4], Drop.MALFORMED_STUN),  # length no longer matches
        ]
        for packet, reason in spoofed:
            assert demux.route(from_relay(packet), RELAY) is reason
        assert demux.drops[Drop.BAD_INTEGRITY] == 3
        # ...while what aioice only matches against its own checks still passes.
        response = stun_message(kind=aioice_stun.Class.RESPONSE)
        assert isinstance(demux.route(from_relay(response), RELAY), Delivery)
        indication = stun_message(kind=aioice_stun.Class.INDICATION)
        assert isinstance(demux.route(from_relay(indication), RELAY), Delivery)

    def test_a_client_through_a_global_relay_keeps_its_virtual_ingress_for_replies(self) -> None:
        # Ingress 17 is past the relay's own sockets: a global relay's, forwarded.
        demux: Demux[str] = Demux()
        demux.register("AAAAsession1", PASSWORD, {0: "session-1", 1: "session-1-v6"})
        routed = demux.route(from_relay(binding_request("AAAAsession1:cli1"), ingress=17), RELAY)
        assert isinstance(routed, Delivery) and routed.endpoint == "session-1"
        assert demux.ingress_for(CLIENT, 0) == 17  # replies name it again
        media = demux.route(from_relay(b"\x80" + bytes(30), ingress=17), RELAY)
        assert isinstance(media, Delivery) and media.endpoint == "session-1"
        # The same address checking in on one of the relay's own sockets is direct again.
        demux.route(from_relay(binding_request("AAAAsession1:cli1"), ingress=1), RELAY)
        assert demux.ingress_for(CLIENT, 1) == 1
        demux.unregister("AAAAsession1")
        assert demux.ingress_for(CLIENT, 0) == 0

    def test_unregister_forgets_clients_and_a_reused_address_moves_sessions(self) -> None:
        demux: Demux[str] = Demux()
        demux.register("AAAAsession1", PASSWORD, {0: "one"})
        demux.register("AAAAsession2", PASSWORD, {0: "two"})
        demux.route(from_relay(binding_request("AAAAsession1:cli1")), RELAY)
        moved = demux.route(from_relay(binding_request("AAAAsession2:cli1")), RELAY)
        assert isinstance(moved, Delivery) and moved.endpoint == "two"
        demux.unregister("AAAAsession1")
        routed = demux.route(from_relay(b"\x80" + bytes(30)), RELAY)
        assert isinstance(routed, Delivery) and routed.endpoint == "two"
        demux.unregister("AAAAsession2")
        assert (demux.sessions, demux.clients) == (0, 0)
        assert demux.relay_for(CLIENT) is None

    @given(st.binary(max_size=200))
    def test_any_datagram_is_delivered_or_dropped_never_raises(self, data: bytes) -> None:
        demux: Demux[str] = Demux()
        demux.register("AAAAsession1", PASSWORD, {0: "one"})
        result = demux.route(data, RELAY)
        assert isinstance(result, Delivery | Drop)
        result = demux.route(from_relay(data), RELAY)
        assert isinstance(result, Delivery | Drop)


def test_offer_candidates_are_stripped() -> None:
    offer = (
        "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
        "a=candidate:1 1 udp 2122260223 192.0.2.9 5000 typ host\r\n"
        "a=end-of-candidates\r\na=ice-ufrag:abcd\r\n"
    )
    assert candidate_addresses(offer) == [("192.0.2.9", 5000)]
    stripped = strip_candidates(offer)
    assert candidate_addresses(stripped) == []
    assert "end-of-candidates" not in stripped and "a=ice-ufrag:abcd" in stripped


def tone(hz: float, rate: int, seconds: float = 0.2, level: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * hz * t) * level * 32767).astype(np.int16)


def peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


class TestResampling:
    def test_down_keeps_voice_band_tones_and_one_frame_in_gives_one_frame_out(self) -> None:
        stereo = np.repeat(tone(1000, 2 * RATE), 2)
        down = Downsampler()
        frames = [
            down.process(stereo[i : i + 2 * 2 * FRAME_SAMPLES], 2)
            for i in range(0, len(stereo), 2 * 2 * FRAME_SAMPLES)
        ]
        assert all(len(f) == FRAME_BYTES for f in frames)
        out = np.frombuffer(b"".join(frames), dtype=np.int16)[100:]
        assert abs(peak_hz(out, RATE) - 1000) < 60
        assert rms(out) == pytest.approx(rms(tone(1000, RATE)), rel=0.05)

    def test_down_rejects_what_would_alias(self) -> None:
        high = tone(18000, 2 * RATE)  # would fold to 6 kHz
        out = np.frombuffer(Downsampler().process(high, 1), dtype=np.int16)[50:]
        assert rms(out) < 0.05 * rms(high)

    def test_up_keeps_the_tone_and_level_with_no_image(self) -> None:
        mono = tone(1000, RATE)
        up = Upsampler()
        frames = [
            up.process(mono[i : i + FRAME_SAMPLES].tobytes())
            for i in range(0, len(mono), FRAME_SAMPLES)
        ]
        assert all(len(f) == OUT_FRAME_SAMPLES * 4 for f in frames)
        left = np.frombuffer(b"".join(frames), dtype=np.int16)[::2][200:]
        assert abs(peak_hz(left, 2 * RATE) - 1000) < 60
        assert rms(left) == pytest.approx(rms(mono), rel=0.05)
        spectrum = np.abs(np.fft.rfft(left * np.hanning(len(left))))
        freqs = np.fft.rfftfreq(len(left), 1 / (2 * RATE))
        image = spectrum[(freqs > 22000) & (freqs < 24000)].max()
        assert image < 0.01 * spectrum.max()  # the 23 kHz mirror of 1 kHz


def rtp(seq: int, timestamp: int) -> RtpPacket:
    packet = RtpPacket(payload_type=111, sequence_number=seq, timestamp=timestamp)
    packet._data = bytes([seq % 256])  # type: ignore[attr-defined]
    return packet


def test_jitter_pass_through_decodes_each_packet_on_arrival_and_drops_late_ones() -> None:
    buffer = PassThroughBuffer()
    seqs = [65533, 65534, 65535, 0, 1]
    for i, seq in enumerate(seqs):
        _, frame = buffer.add(rtp(seq, 960 * i))
        assert frame is not None and frame.timestamp == 960 * i  # no waiting for the next
    assert buffer.add(rtp(65535, 0)) == (False, None)  # late: its slot has passed
    assert buffer.add(rtp(1, 0)) == (False, None)  # duplicate
    assert buffer.late_packets == 2


def loud(level: int = 8000) -> bytes:
    return (np.ones(FRAME_SAMPLES, dtype=np.int16) * level).tobytes()


async def test_playout_paces_bursts_in_order_and_clear_drops_them_at_once() -> None:
    track = AgentAudioTrack()
    track.push(b"".join(loud(1000 * (i + 1)) for i in range(4)))
    levels = []
    for _ in range(4):
        frame = await track.recv()
        levels.append(int(np.abs(frame.to_ndarray()).max()))
    assert levels == sorted(levels) and levels[0] > 500  # in order, all played
    track.push(loud() * 10)
    assert track.queued_seconds == pytest.approx(0.2)
    track.clear()  # barge-in
    assert track.queued_seconds == 0
    frame = await track.recv()
    assert int(np.abs(frame.to_ndarray()).max()) == 0
    track.stop()


async def test_a_live_backlog_sheds_quiet_frames_but_never_speech() -> None:
    track = AgentAudioTrack()
    quiet = bytes(FRAME_BYTES)
    for frame in [quiet] * 3 + [loud()] + [quiet] * 2 + [loud()]:
        track.push(frame)  # one frame per push: live audio bunched up by jitter
    await track.recv()
    # Backlog above the target: the quiet frames at its head go, speech stays.
    assert track.frames_skipped >= 2
    played = [int(np.abs((await track.recv()).to_ndarray()).max()) for _ in range(3)]
    assert sum(1 for p in played if p > 4000) >= 1
    assert track.frames_played >= 2
    track.stop()
    await asyncio.sleep(0)


async def test_audio_pushed_several_frames_at_a_time_keeps_its_pauses() -> None:
    track = AgentAudioTrack()
    quiet = bytes(FRAME_BYTES)
    track.push(quiet * 3 + loud() + quiet * 2 + loud())  # paced speech, sent 7 frames at once
    # Mean, not peak: the upsampler's filter rings a few samples into the next frame.
    played = [float(np.abs((await track.recv()).to_ndarray()).mean()) for _ in range(7)]
    assert track.frames_skipped == 0
    assert [p > 4000 for p in played] == [False] * 3 + [True] + [False] * 2 + [True]
    track.stop()
    await asyncio.sleep(0)


async def test_the_opus_path_keeps_alive_while_idle_and_sends_a_frame_the_moment_it_comes() -> None:
    track = AgentAudioTrack()
    first = await track.next_frame()
    assert first.canned and first.pcm is None and first.timestamp == 0
    waiting = asyncio.ensure_future(track.next_frame())
    await asyncio.sleep(0)
    assert not waiting.done()  # idle: no packet until a frame comes (or the keep-alive is due)
    track.push(loud())
    frame = await waiting
    assert frame.pcm == loud() and not frame.canned and frame.timestamp >= TIMESTAMP_STEP
    assert frame.timestamp < KEEPALIVE_S * 48000  # woken by the push, not the keep-alive
    track.stop()


async def test_the_shared_socket_ignores_datagrams_from_untrusted_sources() -> None:
    import ipaddress
    import socket

    from talkwire.transceiver.udp import SharedSocket

    delivered: list[bytes] = []

    class Endpoint(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            delivered.append(data)

    relays_only = await SharedSocket.bind(
        "127.0.0.1", 0, trusted=[ipaddress.ip_network("10.0.0.0/8")]
    )
    loopback = await SharedSocket.bind("127.0.0.1", 0)
    try:
        for shared in (relays_only, loopback):
            shared.demux.register("AAAAsession1", PASSWORD, {0: Endpoint()})
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.sendto(from_relay(binding_request("AAAAsession1:cli1")), shared.address)
            for _ in range(100):  # delivery is asynchronous: wait for the count to move
                if shared.counters["drop_untrusted_source"] or delivered:
                    break
                await asyncio.sleep(0.01)
        assert relays_only.counters["drop_untrusted_source"] == 1
        assert loopback.counters["drop_untrusted_source"] == 0
        assert len(delivered) == 1  # only through the socket that trusts loopback
    finally:
        relays_only.close()
        loopback.close()
