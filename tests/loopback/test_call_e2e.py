"""Whole calls on loopback: aiortc client -> relay -> transceiver -> agent -> back.

Every part is a real process started by talkwire.stack (the same code
`talkwire up` runs); the client is talkwire.client, a real aiortc peer.
"""

from __future__ import annotations

import asyncio
import re
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import pytest_asyncio
import websockets
from aioice import stun as aioice_stun
from aiortc import RTCRtpSender
from openai import AsyncOpenAI

from talkwire.agents.base import Agent
from talkwire.agents.server import AgentServer, start_agent_server
from talkwire.client import CLIENT_RATE, CallFailed, RealtimeCall, tone
from talkwire.protocol.events import make_event, response_object
from talkwire.registry.redis_registry import RedisRegistry
from talkwire.signaling.config import SignalingConfig
from talkwire.signaling.server import start_signaling
from talkwire.stack import Stack, StackConfig
from talkwire.transceiver.sdp import candidate_addresses

pytestmark = pytest.mark.asyncio(loop_scope="module")

TONE_HZ = 1000.0


class ClosingAgent(Agent):
    """Hangs up on the transceiver as soon as the call starts."""

    async def on_start(self) -> dict[str, Any]:
        session = await super().on_start()
        self.call.close()
        return session


class JunkAgent(Agent):
    """Sends one frame that is not JSON, then echoes like the echo agent."""

    async def on_start(self) -> dict[str, Any]:
        session = await super().on_start()
        await self.call._ws.send_str("this is not json")
        return session

    async def on_audio(self, pcm: bytes) -> None:
        await self.call.send_audio(pcm)


class TalkerAgent(Agent):
    """Starts a 5 s response of tone at once, sent 100 ms at a time as fast as it can."""

    async def on_start(self) -> dict[str, Any]:
        session = await super().on_start()
        self.call.create_task(self._talk())
        return session

    async def _talk(self) -> None:
        response = response_object("resp_talker", "in_progress")
        await self.call.send_event(make_event("response.created", response=response))
        pcm = tone(TONE_HZ, 5.0, rate=24000).tobytes()
        for start in range(0, len(pcm), 4800):
            await self.call.send_audio(pcm[start : start + 4800])


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def agents() -> AsyncIterator[AgentServer]:
    server = await start_agent_server(
        "127.0.0.1", 0, {"closing": ClosingAgent, "junk": JunkAgent, "talker": TalkerAgent}
    )
    yield server
    await server.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(agents: AgentServer) -> AsyncIterator[Stack]:
    base = agents.url.rstrip("/")
    config = StackConfig(
        http_port=0,
        relay_port=0,
        demo=False,
        connect_timeout=3.0,
        extra_models={
            "closing": f"{base}/v1/agents/closing",
            "junk": f"{base}/v1/agents/junk",
            "talker": f"{base}/v1/agents/talker",
        },
    )
    stack = Stack(config)
    await stack.start()
    yield stack
    await stack.stop()


def dominant_hz(samples: np.ndarray, rate: int = CLIENT_RATE) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


LOUD = 2000


async def echo_check(call: RealtimeCall, hz: float = TONE_HZ) -> np.ndarray:
    """Play a 0.4 s tone; return what came back since it started, once most of it has."""
    started: list[float] = []
    call.source.play(tone(hz, 0.4), on_start=started.append)
    back = np.zeros(0, dtype=np.int16)
    for _ in range(100):  # at most 5 s
        await asyncio.sleep(0.05)  # audio arrives at its own pace: poll what was recorded
        if started:
            back = call.received_audio(since=started[0])
            if (np.abs(back) > LOUD).sum() > 0.3 * CLIENT_RATE:
                break
    return back


def heard_hz(back: np.ndarray) -> float:
    """The tone in the last 0.2 s of loud audio (earlier audio may be a previous tone's tail)."""
    loud = np.flatnonzero(np.abs(back) > LOUD)
    assert len(loud) > 0.2 * CLIENT_RATE, "the tone did not come back"
    end = int(loud[-1])
    return dominant_hz(back[end - CLIENT_RATE // 5 : end])


async def transceiver_health(stack: Stack, url: str | None = None) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.get((url or stack.transceiver_url) + "/health") as response,
    ):
        health: dict[str, Any] = await response.json()
        return health


async def wait_active(stack: Stack, expected: int) -> None:
    for _ in range(600):  # 30 s: a bound for a loaded CI host, not an expectation
        if (await transceiver_health(stack))["active"] == expected:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"transceiver never reached {expected} active calls")


def new_call(stack: Stack, model: str = "echo") -> RealtimeCall:
    return RealtimeCall(
        stack.signaling_url, stack.config.api_key, {"type": "realtime", "model": model}
    )


async def test_tone_comes_back_through_the_relay_and_hangup_ends_the_call(stack: Stack) -> None:
    call = new_call(stack)
    await call.connect()
    try:
        created = await call.next_event("session.created")
        assert created["session"]["talkwire"]["call_id"] in call.location
        # The only candidate is the relay: the transceiver's address never leaves.
        assert set(candidate_addresses(call.answer_sdp)) == {stack.relay_address}
        back = await echo_check(call)
        assert abs(heard_hz(back) - TONE_HZ) < 15
        assert (await transceiver_health(stack))["active"] == 1
    finally:
        await call.hangup()
    await wait_active(stack, 0)


async def test_a_sideband_connection_sees_the_calls_events_and_steers_its_agent(
    stack: Stack,
) -> None:
    call = new_call(stack)
    await call.connect()
    sdk = AsyncOpenAI(base_url=stack.signaling_url + "/v1", api_key=stack.config.api_key)
    call_id = call.location.rsplit("/", 1)[1]
    try:
        await call.next_event("session.created")
        async with sdk.realtime.connect(call_id=call_id) as sideband:
            # Server events reach the sideband as they reach the browser ...
            call.source.play(tone(TONE_HZ, 0.4))
            async with asyncio.timeout(10):
                while (await sideband.recv()).type != "input_audio_buffer.speech_started":
                    pass
            # ... and its client events reach the agent, whose answer both see.
            await sideband.session.update(session={"type": "realtime", "instructions": "side"})
            async with asyncio.timeout(10):
                while (event := await sideband.recv()).type != "session.updated":
                    pass
            assert event.session.instructions == "side"
            assert (await call.next_event("session.updated"))["session"]["instructions"] == "side"
            await sideband.send({"type": "nope", "event_id": 5})  # junk: refused, not fatal
            async with asyncio.timeout(10):
                while (event := await sideband.recv()).type != "error":
                    pass
            assert event.error.code == "invalid_event"
            await call.hangup()  # the call ends: so does its sideband
            with pytest.raises(websockets.ConnectionClosed):
                async with asyncio.timeout(10):
                    while True:
                        await sideband.recv()
    finally:
        await call.close()
    await wait_active(stack, 0)


async def test_a_sideband_needs_an_api_key_and_a_live_call(stack: Stack) -> None:
    sdk = AsyncOpenAI(base_url=stack.signaling_url + "/v1", api_key=stack.config.api_key)
    with pytest.raises(websockets.InvalidStatus) as unknown:
        async with sdk.realtime.connect(call_id="rtc_" + "0" * 32):
            pass
    assert unknown.value.response.status_code == 404
    secret = await sdk.realtime.client_secrets.create(session={"type": "realtime", "model": "echo"})
    browser = AsyncOpenAI(base_url=stack.signaling_url + "/v1", api_key=secret.value)
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with browser.realtime.connect(call_id="rtc_" + "0" * 32):
            pass
    assert refused.value.response.status_code == 401


async def test_many_sequential_and_concurrent_calls_each_hear_their_own_tone(
    stack: Stack,
) -> None:
    for _ in range(5):
        call = new_call(stack)
        await call.connect()
        try:
            back = await echo_check(call, 600.0)
            assert abs(heard_hz(back) - 600.0) < 15
        finally:
            await call.hangup()
    await wait_active(stack, 0)

    tones = [400.0, 700.0, 1000.0, 1300.0, 1600.0, 1900.0]
    calls = [new_call(stack) for _ in tones]
    try:
        await asyncio.gather(*(c.connect() for c in calls))
        assert (await transceiver_health(stack))["active"] == len(calls)
        results = await asyncio.gather(
            *(echo_check(c, hz) for c, hz in zip(calls, tones, strict=True))
        )
        for hz, back in zip(tones, results, strict=True):
            # Each call hears its own tone, never another call's.
            assert abs(heard_hz(back) - hz) < 15
    finally:
        await asyncio.gather(*(c.hangup() for c in calls))
    await wait_active(stack, 0)


async def test_a_call_that_offers_only_pcmu_echoes_through_aiortcs_own_codec_path(
    stack: Stack,
) -> None:
    call = new_call(stack)
    pcmu = [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType == "audio/PCMU"]
    for transceiver in call.pc.getTransceivers():
        if transceiver.kind == "audio":
            transceiver.setCodecPreferences(pcmu)
    await call.connect()
    try:
        assert "PCMU/8000" in call.answer_sdp and "opus" not in call.answer_sdp
        back = await echo_check(call, 600.0)
        assert abs(heard_hz(back) - 600.0) < 15
    finally:
        await call.hangup()
    await wait_active(stack, 0)


async def relay_metric(stack: Stack, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(stack.relay_metrics_url) as response:
        text = await response.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_relay_restart_under_a_live_call_recovers_from_return_traffic(stack: Stack) -> None:
    call = new_call(stack)
    await call.connect()
    try:
        back = await echo_check(call)
        assert (np.abs(back) > LOUD).sum() > 0.2 * CLIENT_RATE
        await stack.kill("relay")
        await stack.start_relay()
        # aiortc clients send no check until consent (5 s); the first packet the
        # transceiver sends through the new relay must recreate the flow.
        back = await echo_check(call, 800.0)
        assert abs(heard_hz(back) - 800.0) < 15
        learned = await relay_metric(stack, 'talkwire_relay_flows_created_total{source="return"')
        assert learned >= 1
        assert call.pc.iceConnectionState == "completed"
    finally:
        await call.hangup()
    await wait_active(stack, 0)


# A flood of garbage from 8 loopback addresses, paced to a rate, bounded in count
# and time; prints how many it sent. A child process, so it has a core of its own.
FLOOD = """
import os, socket, sys, time
host, port, pps, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
socks = []
for i in range(8):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((f"127.6.0.{i + 1}", 0))
    s.setblocking(False)
    socks.append(s)
stun = bytes.fromhex("000100302112a442") + os.urandom(12) + bytes.fromhex("00060024") + b"A" * 36
garbage = [os.urandom(n) for n in range(1, 200, 7)] + [stun, b"\\x16\\xfe\\xfd" + bytes(40)]
sent, start, n = 0, time.monotonic(), len(garbage)
while sent < pps * seconds:
    due = int((time.monotonic() - start) * pps)
    if due > pps * seconds or time.monotonic() - start > seconds + 1:
        break
    while sent < due:
        try:
            socks[sent % 8].sendto(garbage[sent % n], (host, port))
        except BlockingIOError:
            pass
        sent += 1
    time.sleep(0.001)
print(sent, time.monotonic() - start, flush=True)
"""
FLOOD_PPS = 100_000
FLOOD_BURSTS = 20


async def test_a_call_keeps_its_echo_through_a_garbage_flood_at_the_relay(stack: Stack) -> None:
    call = new_call(stack)
    await call.connect()
    try:
        dropped_before = await relay_metric(stack, "talkwire_relay_drops_total")
        host, port = stack.relay_address
        seconds = FLOOD_BURSTS * 0.6 + 2  # outlasts the bursts below (bounded anyway)
        flood = await asyncio.create_subprocess_exec(
            sys.executable, "-c", FLOOD, host, str(port), str(FLOOD_PPS), str(seconds),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            heard = 0
            for _ in range(FLOOD_BURSTS):
                back = await echo_check(call)
                heard += (np.abs(back) > LOUD).sum() > 0.2 * CLIENT_RATE
        finally:
            out, _ = await asyncio.wait_for(flood.communicate(), seconds + 30)
        sent, took = out.split()
        rate = int(sent) / float(took)
        dropped = await relay_metric(stack, "talkwire_relay_drops_total") - dropped_before
        print(f"flood {int(sent)} datagrams at {rate:.0f} pps: relay counted {dropped:.0f},"
              f" {heard} of {FLOOD_BURSTS} bursts heard")  # fmt: skip
        assert heard >= 0.95 * FLOOD_BURSTS
        assert rate >= 0.5 * FLOOD_PPS  # it was a flood (a slow CI host sends less)
        assert dropped >= 0.5 * int(sent)  # and it reached the relay (the kernel may drop some)
        assert call.pc.iceConnectionState == "completed"
    finally:
        await call.hangup()
    await wait_active(stack, 0)


async def test_a_client_sending_to_the_transceiver_directly_gets_nothing(stack: Stack) -> None:
    call = new_call(stack)
    await call.connect()
    try:
        ready = stack.components["transceiver"].ready
        match = re.search(r"udp (\S+):(\d+)", ready)
        assert match is not None
        transceiver_udp = (match.group(1), int(match.group(2)))
        ufrag = re.search(r"a=ice-ufrag:(\S+)", call.answer_sdp)
        assert ufrag is not None
        request = aioice_stun.Message(
            message_method=aioice_stun.Method.BINDING,
            message_class=aioice_stun.Class.REQUEST,
        )
        request.attributes["USERNAME"] = f"{ufrag.group(1)}:evil"
        request.attributes["PRIORITY"] = 1
        request.add_fingerprint()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.3)
            sock.bind(("127.0.0.1", 0))
            for _ in range(3):
                sock.sendto(bytes(request), transceiver_udp)
                sock.sendto(b"\x80" + bytes(100), transceiver_udp)
            with pytest.raises(TimeoutError):
                sock.recvfrom(2048)  # the one place a timeout is the assertion
        # ...and the live call is untouched.
        back = await echo_check(call)
        assert (np.abs(back) > LOUD).sum() > 0.2 * CLIENT_RATE
    finally:
        await call.hangup()


async def test_the_stacks_internal_ports_want_its_secret_and_no_argv_shows_it(
    stack: Stack,
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(stack.transceiver_url + "/calls", json={}) as response:
            assert response.status == 401
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(stack.agent_url)
        assert refused.value.status == 401
        assert (await transceiver_health(stack))["active"] == 0  # probes stay open
    for component in stack.components.values():
        assert component.process is not None
        assert stack.internal_secret.encode() not in _argv(component.process.pid), component.name


def _argv(pid: int) -> bytes:
    """What `ps` shows every user of the host."""
    return Path(f"/proc/{pid}/cmdline").read_bytes()


async def test_an_agent_that_closes_ends_only_its_own_call_with_an_error(stack: Stack) -> None:
    good = new_call(stack)
    await good.connect()
    bad = new_call(stack, "closing")
    try:
        await bad.connect()
        error = await bad.next_event("error")
        assert error["error"]["code"] in ("agent_closed", "agent_failed")
    except CallFailed:
        pass  # the call may end before DTLS; then no event reaches the client
    finally:
        await bad.close()
    try:
        back = await echo_check(good)
        assert (np.abs(back) > LOUD).sum() > 0.2 * CLIENT_RATE
    finally:
        await good.hangup()
    await wait_active(stack, 0)


async def test_an_agent_sending_junk_degrades_its_call_with_an_error_event(stack: Stack) -> None:
    call = new_call(stack, "junk")
    await call.connect()
    try:
        error = await call.next_event("error")
        assert error["error"]["code"] == "agent_protocol_error"
        back = await echo_check(call)  # the call goes on
        assert (np.abs(back) > LOUD).sum() > 0.2 * CLIENT_RATE
    finally:
        await call.hangup()
    await wait_active(stack, 0)


async def test_a_clear_drops_queued_agent_audio_at_once_and_names_the_response(
    stack: Stack,
) -> None:
    call = new_call(stack, "talker")
    await call.connect()
    try:
        started = await call.next_event("output_audio_buffer.started")
        assert started["response_id"] == "resp_talker"
        for _ in range(100):  # some of the 5 s plays; the rest waits at the transceiver
            if (np.abs(call.received_audio()) > LOUD).sum() > 0.1 * CLIENT_RATE:
                break
            await asyncio.sleep(0.05)
        call.send_event({"type": "output_audio_buffer.clear"})
        cleared = await call.next_event("output_audio_buffer.cleared")
        assert cleared["response_id"] == "resp_talker"
        at = time.monotonic()
        await call.next_event("output_audio_buffer.stopped")
        # Stopped within a few frames of the clear, not after the 4.7 s still queued:
        # what comes next (the fade-out, then a keep-alive every 0.1 s) is all quiet.
        for _ in range(100):
            if call.received and call.received[-1][0] > at + 0.6:
                break
            await asyncio.sleep(0.05)  # frames arrive on the far end's clock
        late = call.received_audio(since=at + 0.1)
        assert len(late) > 0, "no audio frames came after the clear"
        assert (np.abs(late) > LOUD).sum() == 0
    finally:
        await call.hangup()
    await wait_active(stack, 0)


async def test_a_call_that_never_connects_ends_at_the_connect_timeout(stack: Stack) -> None:
    call = new_call(stack)
    # Offer, take the answer, but never start ICE: the transceiver must give up.
    await call.pc.setLocalDescription(await call.pc.createOffer())
    async with aiohttp.ClientSession() as http:
        async with http.post(
            stack.signaling_url + "/v1/realtime/calls",
            data=call.pc.localDescription.sdp,
            headers={
                "Authorization": f"Bearer {stack.config.api_key}",
                "Content-Type": "application/sdp",
            },
        ) as response:
            assert response.status == 201
        assert (await transceiver_health(stack))["active"] >= 1
    await call.close()
    await wait_active(stack, 0)


async def test_two_transceivers_share_calls_and_each_call_hears_its_own_tone() -> None:
    # Capacity 3 each: five calls cannot all fit on one, whatever each one's load reads.
    stack = Stack(
        StackConfig(http_port=0, relay_port=0, demo=False, transceivers=2, transceiver_capacity=3)
    )
    await stack.start()
    tones = [500.0, 800.0, 1100.0, 1400.0, 1700.0]
    calls = [new_call(stack) for _ in tones]
    try:
        assert len(stack.transceiver_urls) == 2
        for call in calls:  # one at a time, so each placement sees the last one's count
            await call.connect()
        actives = [
            (await transceiver_health(stack, url))["active"] for url in stack.transceiver_urls
        ]
        assert sorted(actives) == [2, 3]
        results = await asyncio.gather(
            *(echo_check(c, hz) for c, hz in zip(calls, tones, strict=True))
        )
        for hz, back in zip(tones, results, strict=True):
            assert abs(heard_hz(back) - hz) < 15
    finally:
        await asyncio.gather(*(c.hangup() for c in calls))
        await stack.stop()


async def signaling_counts(url: str) -> dict[str, int]:
    async with aiohttp.ClientSession() as http, http.get(url + "/healthz") as response:
        counts: dict[str, int] = (await response.json())["transceivers"]
        return counts


async def wait_counts(url: str, **wanted: int) -> None:
    for _ in range(300):  # 15 s: announcements and staleness run on their own clocks
        counts = await signaling_counts(url)
        if all(counts.get(k) == v for k, v in wanted.items()):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"signaling saw {counts}, not {wanted}")


@pytest_asyncio.fixture(loop_scope="module")
async def fleet(redis_server: Any) -> AsyncIterator[Stack]:
    """Two transceivers and signaling that know each other only through Redis."""
    stack = Stack(
        StackConfig(
            http_port=0, relay_port=0, demo=False, transceivers=2, registry_url=redis_server.url
        )
    )
    await stack.start()
    yield stack
    await stack.stop()


async def test_a_redis_fleet_finds_transceivers_shares_calls_and_outlives_failures(
    redis_server: Any, fleet: Stack
) -> None:
    stack = fleet
    shared = RedisRegistry.from_url(redis_server.url)
    other = await start_signaling(
        SignalingConfig(
            api_keys=(stack.config.api_key,),
            models={"echo": stack.agent_url},
            internal_secret=stack.internal_secret,
        ),
        shared,
    )
    calls: list[RealtimeCall] = []
    try:
        # Found through Redis alone: signaling was given no transceiver URL.
        await wait_counts(stack.signaling_url, known=2, accepting=2)
        await wait_counts(other.url, known=2, accepting=2)
        first = new_call(stack)
        calls.append(first)
        await first.connect()
        assert abs(heard_hz(await echo_check(first)) - TONE_HZ) < 15

        # A crashed transceiver stops getting calls within seconds; the rest go on.
        names = ["transceiver", "transceiver-2"]
        actives = [(await transceiver_health(stack, u))["active"] for u in stack.transceiver_urls]
        survivor = stack.transceiver_urls[actives.index(1)]  # the one carrying the first call
        await stack.kill(names[actives.index(0)])
        await wait_counts(stack.signaling_url, accepting=1)
        for _ in range(3):
            call = new_call(stack)
            calls.append(call)
            await call.connect()  # placement never picks the dead one
        assert (await transceiver_health(stack, survivor))["active"] == 4

        # Redis gone: live calls keep their audio; Redis back (empty): announced again.
        redis_server.kill()
        assert abs(heard_hz(await echo_check(first, 700.0)) - 700.0) < 15
        refused = new_call(stack)
        calls.append(refused)
        with pytest.raises(CallFailed, match=r"503.*registry_unavailable"):
            await refused.connect()
        redis_server.start()
        await wait_counts(stack.signaling_url, known=1, accepting=1)

        # The call map is shared: a call made through one signaling ends through another.
        late = new_call(stack)
        calls.append(late)
        await late.connect()
        assert (await transceiver_health(stack, survivor))["active"] == 5
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                other.url + late.location + "/hangup",
                headers={"Authorization": f"Bearer {stack.config.api_key}"},
            ) as response,
        ):
            assert response.status == 200
        for _ in range(200):  # 10 s: the call's release runs on the transceiver's schedule
            if (await transceiver_health(stack, survivor))["active"] == 4:
                break
            await asyncio.sleep(0.05)
        assert (await transceiver_health(stack, survivor))["active"] == 4
    finally:
        for call in calls:
            await call.close()
        await other.close()
        await shared.close()


async def test_a_draining_transceiver_keeps_its_call_takes_no_new_one_then_leaves_the_registry(
    fleet: Stack,
) -> None:
    stack = fleet
    calls: list[RealtimeCall] = []
    try:
        await wait_counts(stack.signaling_url, known=2, accepting=2)
        live = new_call(stack)
        calls.append(live)
        await live.connect()
        actives = [(await transceiver_health(stack, u))["active"] for u in stack.transceiver_urls]
        draining = ["transceiver", "transceiver-2"][actives.index(1)]
        stopping = asyncio.create_task(stack.terminate(draining))
        await wait_counts(stack.signaling_url, known=2, accepting=1)  # announced as draining
        assert abs(heard_hz(await echo_check(live)) - TONE_HZ) < 15  # its call goes on
        newcomer = new_call(stack)
        calls.append(newcomer)
        await newcomer.connect()
        survivor = stack.transceiver_urls[actives.index(0)]
        assert (await transceiver_health(stack, survivor))["active"] == 1
        assert await stopping == 0  # drained (the stack's 2 s deadline), then a clean exit
        await wait_counts(stack.signaling_url, known=1, accepting=1)  # and it left the registry
    finally:
        for call in calls:
            await call.close()
