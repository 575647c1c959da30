"""The transceiver in this process, so its tasks, threads and tables can be counted.

The relay and the echo agent are real processes (talkwire.stack); calls come
from real aiortc peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import aioice.stun
import numpy as np
import pytest
import pytest_asyncio
from aiohttp import web

from talkwire import route_token
from talkwire.client import CLIENT_RATE, CallFailed, RealtimeCall, tone
from talkwire.internal_auth import bearer
from talkwire.registry.memory import MemoryRegistry
from talkwire.route_token import Keyring
from talkwire.secret_files import write_private
from talkwire.signaling.config import SignalingConfig
from talkwire.signaling.server import RunningSignaling, start_signaling
from talkwire.signaling.state import STATE
from talkwire.stack import Stack
from talkwire.transceiver.api import make_transceiver_app
from talkwire.transceiver.load import LoadLimits
from talkwire.transceiver.sdp import OfferError
from talkwire.transceiver.service import Transceiver, TransceiverConfig, Unavailable

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module")
async def transceiver(stack: Stack) -> AsyncIterator[Transceiver]:
    config = TransceiverConfig(
        keyring=Keyring.from_file(stack.keyring_path),
        internal_secret=stack.internal_secret,  # the stack's echo agent asks for it
        public_addresses=[stack.relay_address],
        capacity=5,
        connect_timeout=5.0,
        # The clients share this loop, so its lag is partly the test's own: admission
        # here trips on CPU (the saturation test), not on a busy CI host's scheduling.
        load_limits=LoadLimits(max_lag_s=0.25),
    )
    transceiver = Transceiver(config)
    await transceiver.start()
    yield transceiver
    await transceiver.stop()


async def place_call(transceiver: Transceiver, agent_url: str, call_id: str) -> RealtimeCall:
    client = RealtimeCall("http://unused", "unused")
    offer = await client.offer()
    call = await transceiver.create_call(call_id, offer, {"model": "echo"}, agent_url)
    assert call.answer_sdp is not None
    try:
        await client.accept(call.answer_sdp)
    except CallFailed as exc:
        # What the server saw, so a rare failure on a busy host can be told apart.
        demux = transceiver.shared_socket.demux
        raise AssertionError(
            f"{call_id}: {exc}; server ICE done {call.timings.ice_connected is not None},"
            f" DTLS done {call.timings.dtls_connected is not None}, ended {call.end_reason},"
            f" client ICE {client.pc.iceConnectionState}, demux drops {dict(demux.drops)}"
        ) from exc
    return client


async def test_a_hundred_calls_leave_no_task_thread_or_table_entry_behind(
    stack: Stack, transceiver: Transceiver
) -> None:
    # One call first, so lazily created process-wide state is not counted as a leak.
    warm = await place_call(transceiver, stack.agent_url, "rtc_warmup")
    await transceiver.hangup("rtc_warmup")
    await warm.close()
    await _wait_idle(transceiver)
    tasks_before = len(asyncio.all_tasks())
    threads_before = threading.active_count()

    for batch in range(20):
        await _wait_admitting(transceiver)
        clients = [
            await place_call(transceiver, stack.agent_url, f"rtc_{batch}_{i}") for i in range(5)
        ]
        assert len(transceiver.calls) == 5
        await clients[0].next_event("session.created")
        for i, client in enumerate(clients):
            if i % 2:
                await transceiver.hangup(f"rtc_{batch}_{i}")  # server side ends it
            await client.close()  # or the client goes away
        await _wait_idle(transceiver)

    gc.collect()
    assert transceiver.calls == {}
    assert transceiver.shared_socket.demux.sessions == 0
    assert transceiver.shared_socket.demux.clients == 0
    assert len(asyncio.all_tasks()) <= tasks_before
    # aiortc decodes each call on its own thread: all must be gone. Encoding
    # uses the loop's default executor, a bounded pool that may have grown.
    assert _decoder_threads() == []
    assert threading.active_count() <= threads_before + min(32, (os.cpu_count() or 1) + 4)
    errors = transceiver.metrics.errors.collect()[0].samples
    assert [s.labels for s in errors if "close_timeout" in s.labels.get("kind", "")] == []
    ended = transceiver.metrics.calls.collect()[0].samples
    assert sum(s.value for s in ended if s.name.endswith("_total")) == 101


async def _wait_gone(transceiver: Transceiver, *call_ids: str) -> None:
    """Until the calls (all, if none is named) have ended and been released."""
    for _ in range(600):  # 30 s: a bound for a loaded CI host, not an expectation
        if not (set(call_ids or transceiver.calls) & set(transceiver.calls)):
            return
        await asyncio.sleep(0.05)  # calls end on their supervisors' schedule
    raise AssertionError(f"calls still live: {list(transceiver.calls)}")


async def _wait_idle(transceiver: Transceiver) -> None:
    await _wait_gone(transceiver)


async def _wait_admitting(transceiver: Transceiver) -> None:
    """Until the load gauge takes calls again: this loop also runs the clients, and on
    a slow host five setups at once can pass the CPU limit the admission test is about."""
    for _ in range(600):  # 30 s: a bound, not an expectation
        if transceiver.load.overload is None:
            return
        await asyncio.sleep(0.05)  # the gauge samples on its own timer
    raise AssertionError(f"still overloaded: {transceiver.load.overload}")


async def test_capacity_and_drain_refuse_new_calls_but_keep_live_ones(
    stack: Stack, transceiver: Transceiver
) -> None:
    clients = [await place_call(transceiver, stack.agent_url, f"rtc_cap_{i}") for i in range(5)]
    try:
        extra = RealtimeCall("http://unused", "unused")
        offer = await extra.offer()
        with pytest.raises(Unavailable, match="capacity"):
            await transceiver.create_call("rtc_cap_extra", offer, {}, stack.agent_url)
        await extra.close()
        # A hung-up call frees its place at once, though it is still closing.
        again = RealtimeCall("http://unused", "unused")
        offer = await again.offer()
        await transceiver.hangup("rtc_cap_4")
        call = await transceiver.create_call("rtc_cap_4b", offer, {}, stack.agent_url)
        await clients[4].close()
        clients[4] = again
        assert call.answer_sdp is not None
        await again.accept(call.answer_sdp)
        await _wait_gone(transceiver, "rtc_cap_4")
        assert transceiver.health()["active"] == 5
        drain = asyncio.create_task(transceiver.drain())
        await asyncio.sleep(0)
        assert transceiver.health()["draining"] is True
        with pytest.raises(Unavailable, match="draining"):
            await transceiver.create_call("rtc_cap_late", offer, {}, stack.agent_url)
        assert not drain.done()  # live calls keep it open
        for i, client in enumerate(clients):
            await transceiver.hangup(f"rtc_cap_{i}" if i < 4 else "rtc_cap_4b")
            await client.close()
        await asyncio.wait_for(drain, 10)
    finally:
        for client in clients:
            await client.close()
        transceiver.draining = False


BAD_OFFERS = {
    "": "must start with 'v=0'",
    "hello": "must start with 'v=0'",
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n": (
        "no audio"
    ),
}


@contextlib.asynccontextmanager
async def serving(transceiver: Transceiver) -> AsyncIterator[str]:
    """The transceiver's internal API on a real port; yields its URL."""
    runner = web.AppRunner(make_transceiver_app(transceiver))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_the_internal_api_rejects_bad_requests_with_clear_errors(
    stack: Stack, transceiver: Transceiver
) -> None:
    async with (
        serving(transceiver) as url,
        aiohttp.ClientSession(headers=bearer(stack.internal_secret)) as http,
    ):
        for sdp, message in BAD_OFFERS.items():
            body = {"call_id": "rtc_bad", "sdp": sdp, "agent_url": stack.agent_url}
            async with http.post(url + "/calls", json=body) as response:
                assert response.status == 400
                error = (await response.json())["error"]
                assert error["code"] == "invalid_offer"
                assert message in error["message"]
        async with http.post(url + "/calls", data=b"{not json") as response:
            assert response.status == 400
        body = {"call_id": "rtc_bad", "sdp": "v=0", "agent_url": "http://x"}
        async with http.post(url + "/calls", json=body) as response:
            assert (await response.json())["error"]["code"] == "invalid_agent_url"
        async with http.post(url + "/calls/rtc_nope/hangup") as response:
            assert response.status == 404
        async with http.get(url + "/health") as response:
            health = json.loads(await response.text())
            assert health["active"] == 0 and health["capacity"] == 5
    assert transceiver.calls == {}


async def test_the_internal_api_wants_the_shared_secret_except_for_probes(
    stack: Stack, transceiver: Transceiver
) -> None:
    wrong = [
        {},
        {"Authorization": "Bearer " + "x" * 43},
        {"Authorization": f"Basic {stack.internal_secret}"},
        {"Authorization": f"Bearer {stack.internal_secret[:-1]}"},
        {"Authorization": "Bearer sécret"},  # not ASCII: refused, not a crash
    ]
    async with serving(transceiver) as url, aiohttp.ClientSession() as http:
        for headers in wrong:
            for method, path in [
                ("POST", "/calls"),
                ("POST", "/calls/rtc_x/hangup"),
                ("GET", "/calls/rtc_x"),
            ]:
                async with http.request(method, url + path, headers=headers, json={}) as response:
                    assert response.status == 401, (headers, path)
                    error = (await response.json())["error"]
                    assert error["code"] == "invalid_internal_secret"
                    assert stack.internal_secret not in await response.text()
        for probe in ("/health", "/metrics"):
            async with http.get(url + probe) as response:
                assert response.status == 200, probe
        async with http.post(url + "/calls", json={}, headers=bearer(stack.internal_secret)) as r:
            assert r.status == 400  # past the check, to the request's own errors
    assert transceiver.calls == {}


async def test_signaling_places_a_call_only_with_the_transceivers_secret(
    stack: Stack, transceiver: Transceiver
) -> None:
    async def signaling(secret: str) -> RunningSignaling:
        config = SignalingConfig(
            api_keys=("sk-test",),
            models={"echo": stack.agent_url},
            transceivers=(url,),
            health_interval_s=0.05,
            internal_secret=secret,
        )
        return await start_signaling(config, MemoryRegistry())

    async def placeable(server: RunningSignaling) -> None:
        async with aiohttp.ClientSession() as http:
            for _ in range(200):  # 10 s: a bound, not an expectation
                async with http.get(server.url + "/healthz") as response:
                    if (await response.json())["transceivers"]["accepting"]:
                        return
                await asyncio.sleep(0.05)  # the health poll's own schedule
        raise AssertionError("the transceiver never became placeable")

    async with serving(transceiver) as url:
        wrong = await signaling("wrong-secret-" + "0" * 20)
        try:
            await placeable(wrong)  # probes need no secret: placement is what fails
            refused = RealtimeCall(wrong.url, "sk-test", {"model": "echo"})
            with pytest.raises(CallFailed, match="503"):
                await refused.connect()
            await refused.close()
            failures = wrong.app[STATE].metrics.placement_failures
            assert failures.labels("transceiver_failed")._value.get() >= 1
        finally:
            await wrong.close()
        assert transceiver.calls == {}

        right = await signaling(stack.internal_secret)
        try:
            await placeable(right)
            client = RealtimeCall(right.url, "sk-test", {"model": "echo"})
            await client.connect()
            await client.next_event("session.created")  # through the agent, which checks too
            await client.close()
        finally:
            await right.close()
    await _wait_idle(transceiver)


async def test_an_agent_that_refuses_the_secret_ends_the_call_with_that_reason(
    stack: Stack,
) -> None:
    config = TransceiverConfig(
        keyring=Keyring.from_file(stack.keyring_path),
        public_addresses=[stack.relay_address],
        internal_secret="not-the-agents-secret-" + "0" * 20,
    )
    transceiver = Transceiver(config)
    await transceiver.start()
    try:
        # The agent is dialled while ICE runs, so the call ends before it comes up.
        client = RealtimeCall("http://unused", "unused")
        call = await transceiver.create_call(
            "rtc_refused", await client.offer(), {}, stack.agent_url
        )
        await _wait_idle(transceiver)
        assert call.end_reason == "agent_refused"
        samples = transceiver.metrics.calls.collect()[0].samples
        ended = {s.labels["reason"]: s.value for s in samples if s.name.endswith("_total")}
        assert ended == {"agent_refused": 1}
        await client.close()
    finally:
        await transceiver.stop()


async def test_a_rotated_keyring_signs_the_next_calls_without_a_restart(
    stack: Stack, tmp_path: Path
) -> None:
    path = tmp_path / "keyring"
    old = Keyring.from_file(stack.keyring_path)
    write_private(path, old.to_text())
    config = TransceiverConfig(
        keyring=old,
        keyring_path=str(path),
        public_addresses=[stack.relay_address],
        internal_secret=stack.internal_secret,
    )
    transceiver = Transceiver(config)
    await transceiver.start()

    async def key_of_next_call(call_id: str) -> int:
        client = RealtimeCall("http://unused", "unused")
        call = await transceiver.create_call(call_id, await client.offer(), {}, stack.agent_url)
        assert call.answer_sdp is not None
        ufrag = re.search(r"a=ice-ufrag:(\S+)", call.answer_sdp)
        assert ufrag is not None
        await transceiver.hangup(call_id)
        await client.close()
        return route_token.decode_unverified(ufrag[1]).key_id

    try:
        assert await key_of_next_call("rtc_before") == old.current
        write_private(path, old.rotated(old.current + 1, b"\x07" * 32, 60, time.time()).to_text())
        current = transceiver.metrics.keyring_current
        for _ in range(100):  # 10 s: the watcher polls once a second
            if current._value.get() == old.current + 1:
                break
            await asyncio.sleep(0.1)  # the watcher's own schedule
        assert await key_of_next_call("rtc_after") == old.current + 1
        reloads = transceiver.metrics.keyring_reloads
        assert reloads.labels("ok")._value.get() == 1
        assert reloads.labels("error")._value.get() == 0
    finally:
        await transceiver.stop()


async def test_offer_checks_are_exact() -> None:
    from talkwire.transceiver.sdp import check_offer

    for sdp, message in BAD_OFFERS.items():
        with pytest.raises(OfferError, match=message):
            check_offer(sdp)


def _refused(transceiver: Transceiver, reason: str) -> float:
    samples = transceiver.metrics.refused.collect()[0].samples
    return sum(
        s.value for s in samples if s.name.endswith("_total") and s.labels == {"reason": reason}
    )


# Longer than the fixture's lag limit (0.25 s): the overload shows as lag even
# when other processes on a busy host keep this one's CPU share under the CPU limit.
HOG_CHUNK_S = 0.6


async def _hog_loop(seconds: float) -> None:
    """What a saturated transceiver looks like from inside: the loop never idles."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        chunk = time.monotonic() + HOG_CHUNK_S
        while time.monotonic() < chunk:
            pass
        await asyncio.sleep(0)


async def test_a_saturated_transceiver_refuses_new_calls_until_its_load_falls(
    stack: Stack, transceiver: Transceiver
) -> None:
    client = RealtimeCall("http://unused", "unused")
    offer = await client.offer()
    await _hog_loop(4.0)
    assert transceiver.health()["overloaded"] is True  # by lag at least (unit tests: the CPU)
    with pytest.raises(Unavailable, match="transceiver is overloaded: "):
        await transceiver.create_call("rtc_hot", offer, {}, stack.agent_url)
    assert _refused(transceiver, "overloaded") >= 1
    assert transceiver.calls == {}
    for _ in range(120):  # 30 s: a bound for a loaded CI host; the gauge moves every 0.25 s
        if transceiver.load.overload is None:
            break
        await asyncio.sleep(0.25)
    await client.close()
    admitted = await place_call(transceiver, stack.agent_url, "rtc_cooled")
    try:
        await admitted.next_event("session.created")
    finally:
        await transceiver.hangup("rtc_cooled")
        await admitted.close()
        await _wait_idle(transceiver)


PROBE_HZ = 800.0


def _heard_probe(client: RealtimeCall, since: float) -> float:
    """Seconds of loud audio received since ``since``, counted in 10 ms blocks."""
    samples = client.received_audio(since=since)
    block = CLIENT_RATE // 100
    blocks = samples[: len(samples) // block * block].reshape(-1, block)
    return float((np.abs(blocks).max(axis=1) > 2000).sum()) / 100


def _decoder_threads() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.endswith("-decoder"))


async def test_two_hundred_calls_opened_and_dropped_at_once_leave_a_live_call_alone(
    stack: Stack,
) -> None:
    config = TransceiverConfig(
        keyring=Keyring.from_file(stack.keyring_path),
        internal_secret=stack.internal_secret,  # the stack's echo agent asks for it
        public_addresses=[stack.relay_address],
        capacity=300,
        connect_timeout=2.0,
    )
    transceiver = Transceiver(config)
    await transceiver.start()
    probe = await place_call(transceiver, stack.agent_url, "rtc_probe")
    vanished = RealtimeCall("http://unused", "unused")
    try:
        await probe.next_event("session.created")
        tasks_before = len(asyncio.all_tasks())
        decoders_before = _decoder_threads()
        # Two hundred callers that post an offer and are never heard from again.
        offer = await vanished.offer()
        started: list[float] = []
        probe.source.play(tone(PROBE_HZ, 4.0), on_start=started.append)
        outcomes = await asyncio.gather(
            *(
                transceiver.create_call(f"rtc_drop_{i}", offer, {}, stack.agent_url)
                for i in range(200)
            ),
            return_exceptions=True,
        )
        refused = [o for o in outcomes if isinstance(o, BaseException)]
        # Setups are answered two at a time: the rest of the burst waits in a bounded
        # queue, and what overflows it (or arrives once the loop is saturated) is refused.
        assert all(isinstance(o, Unavailable) for o in refused)
        reasons = Counter(o.reason for o in refused if isinstance(o, Unavailable))
        assert set(reasons) <= {"busy", "overloaded"} and reasons["busy"] > 0
        for _ in range(600):  # 30 s bound; they end at the 2 s connect timeout
            if set(transceiver.calls) == {"rtc_probe"}:
                break
            await asyncio.sleep(0.05)
        assert set(transceiver.calls) == {"rtc_probe"}
        ended = transceiver.metrics.calls.collect()[0].samples
        timeouts = sum(
            s.value
            for s in ended
            if s.labels == {"reason": "connect_timeout"} and "_total" in s.name
        )
        assert timeouts == 200 - len(refused)
        assert _refused(transceiver, "busy") == reasons["busy"]
        assert _refused(transceiver, "overloaded") == reasons["overloaded"]
        # The live call kept its audio the whole time: 90 % of its 4 s tone came back.
        assert started
        for _ in range(200):  # 10 s bound: the tone plays out in real time
            if _heard_probe(probe, started[0]) >= 3.6:
                break
            await asyncio.sleep(0.05)
        assert _heard_probe(probe, started[0]) >= 3.6
        assert transceiver.shared_socket.demux.sessions == 1
        gc.collect()
        assert len(asyncio.all_tasks()) <= tasks_before
        # The probe's client decodes on aiortc's thread; none came from the burst.
        assert _decoder_threads() == decoders_before
    finally:
        await vanished.close()
        await transceiver.hangup("rtc_probe")
        await probe.close()
        await _wait_idle(transceiver)
        await transceiver.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def stalled_agent_url() -> AsyncIterator[str]:
    """An agent that accepts the call and then never reads a byte of it."""

    released = asyncio.Event()

    async def accept_and_stall(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await released.wait()  # a hung agent: alive, connected, reading nothing
        return ws

    app = web.Application()
    app.router.add_get("/v1/agents/stalled", accept_and_stall)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # A small receive window so the stall reaches the transceiver in seconds, not minutes.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1/agents/stalled"
    released.set()
    await runner.cleanup()


async def test_a_stalled_agent_ends_only_its_own_call_and_is_counted(
    stack: Stack, transceiver: Transceiver, stalled_agent_url: str
) -> None:
    probe = await place_call(transceiver, stack.agent_url, "rtc_alive")
    stalled = await place_call(transceiver, stalled_agent_url, "rtc_stalled")
    try:
        await probe.next_event("session.created")
        started: list[float] = []
        probe.source.play(tone(PROBE_HZ, 8.0), on_start=started.append)
        # The stalled call's client keeps sending audio the agent never reads; the
        # agent answers no ping either, and the transceiver's heartbeat gives up on it.
        error = await stalled.next_event("error", timeout=30.0)
        assert error["error"]["code"] == "agent_stalled"
        for _ in range(600):  # 30 s bound
            if "rtc_stalled" not in transceiver.calls:
                break
            await asyncio.sleep(0.05)
        assert set(transceiver.calls) == {"rtc_alive"}
        ended = transceiver.metrics.calls.collect()[0].samples
        assert any(
            s.labels == {"reason": "agent_stalled"} and s.value == 1
            for s in ended
            if s.name.endswith("_total")
        )
        # The other call's echo never paused: its whole tone came back meanwhile.
        for _ in range(400):  # 20 s bound: the tone plays out in real time
            if _heard_probe(probe, started[0]) >= 7.2:
                break
            await asyncio.sleep(0.05)
        assert _heard_probe(probe, started[0]) >= 7.2
    finally:
        await transceiver.hangup("rtc_alive")
        await probe.close()
        await stalled.close()
        await _wait_idle(transceiver)


def _stun(
    username: str, password: str | None, method: aioice.stun.Method = aioice.stun.Method.BINDING
) -> aioice.stun.Message:
    message = aioice.stun.Message(message_method=method, message_class=aioice.stun.Class.REQUEST)
    message.attributes["USERNAME"] = username
    if password is not None:
        message.add_message_integrity(password.encode())
    message.add_fingerprint()
    return message


async def test_forged_stun_for_a_live_call_gets_no_answer_and_is_counted(
    stack: Stack, transceiver: Transceiver
) -> None:
    """Through the real relay (which checks only the token) to the transceiver:
    aioice would answer each forgery with an error sent to the claimed source."""
    client = await place_call(transceiver, stack.agent_url, "rtc_forged")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        binding = transceiver.calls["rtc_forged"].binding
        ufrag, password = binding.ufrag, binding.password
        counters = transceiver.shared_socket.counters
        before = Counter(counters)
        no_session = route_token.mint(transceiver.config.keyring, 0, transceiver.udp_address)
        forged = {
            "bad_integrity": [_stun(f"{ufrag}:evil", "x" * 22), _stun(f"{ufrag}:evil", None)],
            "not_binding_request": [_stun(f"{ufrag}:evil", password, aioice.stun.Method.ALLOCATE)],
            "unknown_ufrag": [_stun(f"{no_session}:evil", "x" * 22)],
        }
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        for messages in forged.values():
            for message in messages:
                sock.sendto(bytes(message), stack.relay_address)
        # Only a password holder is answered (here 401: its client ufrag is wrong). The
        # path keeps order, so any answer to a forgery would arrive before this one.
        sentinel = _stun(f"{ufrag}:evil", password)
        sock.sendto(bytes(sentinel), stack.relay_address)
        loop = asyncio.get_running_loop()
        first = aioice.stun.parse_message(await asyncio.wait_for(loop.sock_recv(sock, 2048), 10))
        assert first.transaction_id == sentinel.transaction_id
        assert first.message_class == aioice.stun.Class.ERROR
        for reason, messages in forged.items():
            assert counters[f"drop_{reason}"] - before[f"drop_{reason}"] == len(messages)
        assert transceiver.calls["rtc_forged"].end_reason is None  # the real call goes on
        assert client.pc.connectionState == "connected"
    finally:
        sock.close()
        await transceiver.hangup("rtc_forged")
        await client.close()
