"""The agent server and SDK over real loopback WebSockets, driven as the transceiver drives it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest

from talkwire.agents.base import Agent, Call
from talkwire.agents.echo import EchoAgent
from talkwire.agents.server import AgentServer, ServerSettings, live_calls, start_agent_server
from talkwire.protocol.audio import FRAME_BYTES, RATE

RECEIVE_TIMEOUT = 10.0
SESSION = {
    "model": "echo",
    "audio": {
        "input": {"format": {"type": "audio/pcm", "rate": 24000}},
        "output": {"format": {"type": "audio/pcm", "rate": 24000}},
    },
}


class BoomOnAudio(Agent):
    """Raises on the third audio frame."""

    name = "boom"

    def __init__(self, call: Call) -> None:
        super().__init__(call)
        self.frames = 0

    async def on_audio(self, pcm: bytes) -> None:
        self.frames += 1
        if self.frames == 3:
            raise RuntimeError("boom")
        await self.call.send_audio(pcm)


class BoomOnStart(Agent):
    async def on_start(self) -> dict[str, Any]:
        raise RuntimeError("cannot start")


class BoomInTask(Agent):
    """A background task it owns fails when asked to."""

    async def on_event(self, event: dict[str, Any]) -> None:
        if event["type"] == "test.fail":
            self.call.create_task(self._fail())
        else:
            await super().on_event(event)

    async def _fail(self) -> None:
        raise RuntimeError("task failed")


class HangsUp(Agent):
    async def on_event(self, event: dict[str, Any]) -> None:
        if event["type"] == "test.bye":
            self.call.close()


class Sleeper(Agent):
    """Owns a task that never ends on its own: it must be cancelled with the call."""

    closed: asyncio.Event

    async def on_start(self) -> dict[str, Any]:
        self.call.create_task(asyncio.Event().wait(), name="sleeper")
        return self.call.session

    async def on_close(self) -> None:
        Sleeper.closed.set()


def tone_frames(ms: int, peak: float = 0.1) -> list[bytes]:
    t = np.arange(RATE * ms // 1000) / RATE
    data = (peak * np.sin(2 * np.pi * 440 * t) * 32767).astype("<i2").tobytes()
    return [data[i : i + FRAME_BYTES] for i in range(0, len(data), FRAME_BYTES)]


@pytest.fixture
async def server() -> AsyncIterator[AgentServer]:
    agents = {
        "echo": EchoAgent,
        "boom": BoomOnAudio,
        "boom_start": BoomOnStart,
        "boom_task": BoomInTask,
        "hangs_up": HangsUp,
        "sleeper": Sleeper,
    }
    srv = await start_agent_server("127.0.0.1", 0, agents, ServerSettings(handshake_timeout=5.0))
    try:
        yield srv
    finally:
        await srv.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def receive_event(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await ws.receive(timeout=RECEIVE_TIMEOUT)
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    event: dict[str, Any] = json.loads(msg.data)
    return event


async def connect(
    http: aiohttp.ClientSession, server: AgentServer, name: str = "echo", call_id: str = "rtc_1"
) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    ws = await http.ws_connect(f"{server.url}/v1/agents/{name}?call_id={call_id}")
    await ws.send_str(json.dumps({"type": "session.update", "session": SESSION}))
    created = await receive_event(ws)
    return ws, created


async def echo_round(ws: aiohttp.ClientWebSocketResponse, frames: list[bytes]) -> bytes:
    """Send frames; collect binary until as many bytes came back (events are skipped)."""
    for frame in frames:
        await ws.send_bytes(frame)
    want = sum(len(f) for f in frames)
    got = bytearray()
    for _ in range(10 * len(frames) + 100):
        if len(got) >= want:
            break
        msg = await ws.receive(timeout=RECEIVE_TIMEOUT)
        if msg.type is aiohttp.WSMsgType.BINARY:
            got += msg.data
        else:
            assert msg.type is aiohttp.WSMsgType.TEXT, msg
    return bytes(got)


async def receive_until_closed(ws: aiohttp.ClientWebSocketResponse) -> list[dict[str, Any]]:
    events = []
    for _ in range(1000):
        msg = await ws.receive(timeout=RECEIVE_TIMEOUT)
        if msg.type is aiohttp.WSMsgType.TEXT:
            events.append(json.loads(msg.data))
        elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            return events
    raise AssertionError("connection did not close")


async def test_handshake_answers_session_created(
    server: AgentServer, http: aiohttp.ClientSession
) -> None:
    ws, created = await connect(http, server, call_id="rtc_abc")
    assert created["type"] == "session.created"
    assert created["event_id"].startswith("event_")
    session = created["session"]
    assert session["model"] == "echo"
    assert session["object"] == "realtime.session"
    assert session["id"].startswith("sess_")
    assert session["talkwire"] == {"call_id": "rtc_abc"}
    pcm = {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["input"]["format"] == pcm
    assert session["audio"]["output"]["format"] == pcm
    await ws.close()


async def test_unknown_agent_is_404_json(server: AgentServer, http: aiohttp.ClientSession) -> None:
    url = server.url.replace("ws://", "http://") + "/v1/agents/nope"
    async with http.get(url) as resp:
        assert resp.status == 404
        body = await resp.json()
    assert body["error"]["code"] == "unknown_agent"
    assert "nope" in body["error"]["message"]
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(f"{server.url}/v1/agents/nope")
    assert info.value.status == 404


async def test_a_server_with_a_secret_refuses_upgrades_without_it(
    http: aiohttp.ClientSession,
) -> None:
    secret = "s3cret-" + "x" * 30
    settings = ServerSettings(handshake_timeout=5.0, internal_secret=secret)
    server = await start_agent_server("127.0.0.1", 0, {"echo": EchoAgent}, settings)
    try:
        for headers in ({}, {"Authorization": "Bearer " + secret[::-1]}):
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await http.ws_connect(f"{server.url}/v1/agents/echo", headers=headers)
            assert info.value.status == 401
        base = server.url.replace("ws://", "http://")
        async with http.get(base + "/v1/agents/echo") as resp:  # refused before the 426
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "invalid_internal_secret"
        async with http.get(base + "/healthz") as resp:  # the probe stays open
            assert (await resp.json())["calls"] == 0
        ws = await http.ws_connect(
            f"{server.url}/v1/agents/echo", headers={"Authorization": f"Bearer {secret}"}
        )
        await ws.send_str(json.dumps({"type": "session.update", "session": SESSION}))
        assert (await receive_event(ws))["type"] == "session.created"
        await ws.close()
    finally:
        await server.close()


async def test_plain_get_is_426_and_bad_call_id_400(
    server: AgentServer, http: aiohttp.ClientSession
) -> None:
    base = server.url.replace("ws://", "http://")
    async with http.get(base + "/v1/agents/echo") as resp:
        assert resp.status == 426
    async with http.get(base + "/v1/agents/echo", params={"call_id": "bad id!"}) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "invalid_call_id"


async def test_healthz_counts_live_calls(server: AgentServer, http: aiohttp.ClientSession) -> None:
    base = server.url.replace("ws://", "http://")
    ws, _ = await connect(http, server)
    async with http.get(base + "/healthz") as resp:
        body = await resp.json()
    assert body["status"] == "ok"
    assert body["calls"] == 1
    assert "echo" in body["agents"]
    await ws.close()


async def test_junk_text_frame_gets_error_and_call_goes_on(
    server: AgentServer, http: aiohttp.ClientSession
) -> None:
    ws, _ = await connect(http, server)
    frames = tone_frames(100)
    assert await echo_round(ws, frames) == b"".join(frames)
    for junk in ["not json", "[1,2]", '{"no_type": 1}', '{"type": 3}']:
        await ws.send_str(junk)
        event = await receive_event(ws)
        assert event["type"] == "error"
        assert event["error"]["code"] == "invalid_event"
    await ws.send_bytes(b"\x01\x02\x03")  # odd length: not PCM16
    event = await receive_event(ws)
    assert event["error"]["code"] == "invalid_audio"
    assert await echo_round(ws, frames) == b"".join(frames)
    await ws.close()


@pytest.mark.parametrize(
    ("first", "code"),
    [
        (b"\x00\x00", "handshake"),
        ('{"type": "response.create"}', "handshake"),
        ('{"type": "session.update", "session": 5}', "handshake"),
        ("nope", "invalid_event"),
        (
            json.dumps(
                {
                    "type": "session.update",
                    "session": {
                        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}
                    },
                }
            ),
            "unsupported_audio_format",
        ),
    ],
)
async def test_bad_handshake_gets_error_and_close(
    server: AgentServer, http: aiohttp.ClientSession, first: str | bytes, code: str
) -> None:
    ws = await http.ws_connect(f"{server.url}/v1/agents/echo")
    if isinstance(first, bytes):
        await ws.send_bytes(first)
    else:
        await ws.send_str(first)
    events = await receive_until_closed(ws)
    assert [e["error"]["code"] for e in events] == [code]
    assert ws.close_code == 1008


async def test_handshake_timeout_gets_error_and_close(http: aiohttp.ClientSession) -> None:
    srv = await start_agent_server(
        "127.0.0.1", 0, {"echo": EchoAgent}, ServerSettings(handshake_timeout=0.2)
    )
    try:
        ws = await http.ws_connect(f"{srv.url}/v1/agents/echo")
        events = await receive_until_closed(ws)  # says nothing: the server gives up
        assert [e["error"]["code"] for e in events] == ["timeout"]
        assert ws.close_code == 1008
    finally:
        await srv.close()


async def test_server_close_during_handshake_does_not_wait_for_it(
    http: aiohttp.ClientSession,
) -> None:
    # A handshake timeout far beyond the test's own: closing must not wait for it.
    srv = await start_agent_server(
        "127.0.0.1", 0, {"echo": EchoAgent}, ServerSettings(handshake_timeout=3600.0)
    )
    ws = await http.ws_connect(f"{srv.url}/v1/agents/echo")
    assert live_calls(srv.runner.app) == 1
    closing = asyncio.create_task(srv.close())
    await receive_until_closed(ws)
    await asyncio.wait_for(closing, RECEIVE_TIMEOUT)
    assert ws.close_code == 1001


async def test_failing_agent_ends_only_its_own_call(
    server: AgentServer, http: aiohttp.ClientSession
) -> None:
    good, _ = await connect(http, server, "echo", "rtc_good")
    bad, _ = await connect(http, server, "boom", "rtc_bad")
    frames = tone_frames(60)
    assert await echo_round(good, frames) == b"".join(frames)
    for frame in frames:
        await bad.send_bytes(frame)
    events = await receive_until_closed(bad)
    assert [e["type"] for e in events] == ["error"]
    assert events[0]["error"]["code"] == "agent_error"
    assert events[0]["error"]["type"] == "server_error"
    assert bad.close_code == 1011
    # The other call and the server are untouched.
    assert await echo_round(good, frames) == b"".join(frames)
    third, created = await connect(http, server, "echo", "rtc_third")
    assert created["type"] == "session.created"
    await good.close()
    await third.close()


async def test_failing_on_start_ends_the_call(
    server: AgentServer, http: aiohttp.ClientSession
) -> None:
    ws, event = await connect(http, server, "boom_start")
    assert event["type"] == "error"
    assert event["error"]["code"] == "agent_error"
    await receive_until_closed(ws)
    assert ws.close_code == 1011


async def test_failing_agent_task_ends_the_call(
    server: AgentServer, http: aiohttp.ClientSession
) -> None:
    ws, created = await connect(http, server, "boom_task")
    assert created["type"] == "session.created"
    await ws.send_str('{"type": "test.fail"}')
    events = await receive_until_closed(ws)
    assert [e["error"]["code"] for e in events] == ["agent_error"]
    assert ws.close_code == 1011


async def test_agent_can_hang_up(server: AgentServer, http: aiohttp.ClientSession) -> None:
    ws, _ = await connect(http, server, "hangs_up")
    await ws.send_str('{"type": "test.bye"}')
    assert await receive_until_closed(ws) == []
    assert ws.close_code == 1000


async def test_session_update_merges_and_keeps_link_format(
    server: AgentServer, http: aiohttp.ClientSession
) -> None:
    ws, _ = await connect(http, server, "boom_task", "rtc_s")
    update = {
        "type": "session.update",
        "event_id": "event_c1",
        "session": {
            "instructions": "be brief",
            "talkwire": {"call_id": "rtc_other"},
            "audio": {"output": {"format": {"type": "audio/pcmu"}, "voice": "marin"}},
        },
    }
    await ws.send_str(json.dumps(update))
    event = await receive_event(ws)
    assert event["type"] == "session.updated"
    session = event["session"]
    assert session["instructions"] == "be brief"
    assert session["model"] == "echo"
    assert session["talkwire"] == {"call_id": "rtc_s"}
    assert session["audio"]["output"] == {
        "format": {"type": "audio/pcm", "rate": 24000},
        "voice": "marin",
    }
    await ws.send_str('{"type": "session.update", "session": "x", "event_id": "event_c2"}')
    event = await receive_event(ws)
    assert event["type"] == "error"
    assert event["error"]["event_id"] == "event_c2"
    await ws.close()


async def test_server_close_ends_live_calls_going_away(http: aiohttp.ClientSession) -> None:
    Sleeper.closed = asyncio.Event()
    srv = await start_agent_server("127.0.0.1", 0, {"sleeper": Sleeper})
    ws, _ = await connect(http, srv, "sleeper")
    # The peer keeps reading while the server stops, as a transceiver does.
    closing = asyncio.create_task(srv.close())
    await receive_until_closed(ws)
    await closing
    assert Sleeper.closed.is_set()
    assert ws.close_code == 1001


async def test_no_tasks_leak_after_calls_end(
    server: AgentServer, http: aiohttp.ClientSession
) -> None:
    Sleeper.closed = asyncio.Event()
    before = asyncio.all_tasks()
    calls = [await connect(http, server, "echo", f"rtc_{i}") for i in range(3)]
    sleeper, _ = await connect(http, server, "sleeper", "rtc_sleeper")
    boom, _ = await connect(http, server, "boom", "rtc_boom")
    frames = tone_frames(100)
    for ws, _ in calls:
        assert await echo_round(ws, frames) == b"".join(frames)
    for frame in frames:
        await boom.send_bytes(frame)
    await receive_until_closed(boom)
    assert len(asyncio.all_tasks()) > len(before)  # the calls did run tasks
    for ws, _ in calls:
        await ws.close()
    await sleeper.close()
    # Tasks that remain must all finish on their own: a leak would stay pending.
    leftover = asyncio.all_tasks() - before - {asyncio.current_task()}
    if leftover:
        _, pending = await asyncio.wait(leftover, timeout=RECEIVE_TIMEOUT)
        assert not pending, pending
    assert Sleeper.closed.is_set()
    assert live_calls(server.runner.app) == 0


async def test_metrics_count_live_calls_how_calls_ended_and_refused_upgrades(
    server: AgentServer, http: aiohttp.ClientSession
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    base = server.url.replace("ws://", "http://")

    async def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        async with http.get(base + "/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    good, _ = await connect(http, server, "echo", "rtc_m_good")
    bad, _ = await connect(http, server, "boom", "rtc_m_bad")
    async with http.get(base + "/v1/agents/echo") as resp:
        assert resp.status == 426
    assert (await samples())[("talkwire_agent_calls_active", (("agent", "echo"),))] == 1
    for frame in tone_frames(60):  # boom fails on audio
        await bad.send_bytes(frame)
    await receive_until_closed(bad)
    await good.close()
    ended_bad = ("talkwire_agent_calls_ended_total", (("agent", "boom"), ("end", "agent_error")))
    ended_good = ("talkwire_agent_calls_ended_total", (("agent", "echo"), ("end", "ok")))
    for _ in range(100):  # counted once the server's side of each call has finished
        now = await samples()
        if now.get(ended_bad) == 1 and now.get(ended_good) == 1:
            break
        await asyncio.sleep(0.02)
    assert now.get(ended_bad) == 1 and now.get(ended_good) == 1, now
    assert now[("talkwire_agent_calls_active", (("agent", "echo"),))] == 0
    refused = ("talkwire_agent_upgrades_refused_total", (("reason", "upgrade_required"),))
    assert now[refused] == 1
