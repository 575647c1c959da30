"""The Realtime WebSocket interface: the openai SDK's ``client.realtime.connect`` against
real signaling and a real echo agent (which wants the internal secret), all on loopback."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
import websockets
from openai import AsyncOpenAI

from talkwire.agents.echo import EchoAgent
from talkwire.agents.server import AgentServer, ServerSettings, start_agent_server
from talkwire.protocol.audio import RATE
from talkwire.registry.memory import MemoryRegistry
from talkwire.signaling.config import SignalingConfig
from talkwire.signaling.server import RunningSignaling, start_signaling
from talkwire.signaling.state import STATE

API_KEY = "sk-test-realtime-ws"
SECRET = "internal-" + "w" * 32
TONE_HZ = 440.0
EVENT_TIMEOUT_S = 10.0  # a bound for a busy host, not an expectation


def pcm(seconds: float, hz: float | None = TONE_HZ) -> bytes:
    t = np.arange(int(RATE * seconds)) / RATE
    wave = 0.3 * np.sin(2 * np.pi * hz * t) if hz else np.zeros_like(t)
    return (wave * 32767).astype("<i2").tobytes()


def dominant_hz(audio: bytes) -> float:
    samples = np.frombuffer(audio, "<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / RATE)[int(np.argmax(spectrum))])


@pytest.fixture
async def agent() -> AsyncIterator[AgentServer]:
    settings = ServerSettings(internal_secret=SECRET)
    server = await start_agent_server("127.0.0.1", 0, {"echo": EchoAgent}, settings)
    yield server
    await server.close()


@pytest.fixture
async def signaling(agent: AgentServer) -> AsyncIterator[RunningSignaling]:
    config = SignalingConfig(
        api_keys=(API_KEY,),
        models={"echo": f"{agent.url}/v1/agents/echo"},
        internal_secret=SECRET,
    )
    server = await start_signaling(config, MemoryRegistry())
    yield server
    await server.close()


def sdk(signaling: RunningSignaling, key: str = API_KEY) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=signaling.url + "/v1", api_key=key)


async def next_of(connection: Any, *kinds: str) -> Any:
    """The next event of one of ``kinds``; the others are skipped."""
    async with asyncio.timeout(EVENT_TIMEOUT_S):
        while True:
            event = await connection.recv()
            if event.type in kinds:
                return event


def ended(signaling: RunningSignaling, reason: str) -> float:
    metric = signaling.app[STATE].metrics.realtime_sessions.labels(reason)
    return float(metric._value.get())


async def test_the_sdk_talks_to_the_echo_agent_and_hears_its_tone_back(
    signaling: RunningSignaling,
) -> None:
    async with sdk(signaling).realtime.connect(model="echo") as connection:
        created = await next_of(connection, "session.created")
        assert created.session.model == "echo"
        tone = pcm(0.6)
        for start in range(0, len(tone), 4800):  # 100 ms appends, as a live client sends
            await connection.input_audio_buffer.append(
                audio=base64.b64encode(tone[start : start + 4800]).decode()
            )
        await connection.input_audio_buffer.append(audio=base64.b64encode(pcm(0.8, None)).decode())
        response = await next_of(connection, "response.created")
        heard = bytearray()
        while True:
            event = await next_of(connection, "response.output_audio.delta", "response.done")
            if event.type == "response.done":
                break
            assert event.response_id == response.response.id
            heard += base64.b64decode(event.delta)
    assert len(heard) >= 0.5 * RATE * 2  # most of the 0.6 s tone came back
    assert abs(dominant_hz(bytes(heard)) - TONE_HZ) < 10
    assert signaling.app[STATE].metrics.realtime_active._value.get() == 0


async def test_bad_client_events_get_an_error_and_the_session_goes_on(
    signaling: RunningSignaling,
) -> None:
    async with sdk(signaling).realtime.connect(model="echo") as connection:
        await next_of(connection, "session.created")
        await connection.send({"type": "input_audio_buffer.append", "audio": "@@not base64@@"})
        error = await next_of(connection, "error")
        assert error.error.code == "invalid_audio"
        await connection.send({"type": "input_audio_buffer.append", "audio": "AA=="})  # 1 byte
        assert (await next_of(connection, "error")).error.code == "invalid_audio"
        await connection.send(
            {
                "type": "session.update",
                "event_id": "event_fmt",
                "session": {
                    "type": "realtime",
                    "audio": {"input": {"format": {"type": "audio/pcmu"}}},
                },
            }
        )
        error = await next_of(connection, "error")
        assert error.error.code == "unsupported_audio_format"
        assert error.error.event_id == "event_fmt"
        await connection.session.update(session={"type": "realtime", "instructions": "hi"})
        updated = await next_of(connection, "session.updated")  # still connected, answered
        assert updated.session.instructions == "hi"


async def test_a_wrong_key_or_an_unknown_model_is_refused_before_the_upgrade(
    signaling: RunningSignaling,
) -> None:
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with sdk(signaling, "sk-wrong").realtime.connect(model="echo"):
            pass
    assert refused.value.response.status_code == 401
    with pytest.raises(websockets.InvalidStatus) as unknown:
        async with sdk(signaling).realtime.connect(model="gpt-nope"):
            pass
    assert 400 <= unknown.value.response.status_code < 500
    assert b"gpt-nope" in unknown.value.response.body


async def test_a_browser_passes_its_key_as_a_subprotocol_and_binary_frames_are_refused(
    signaling: RunningSignaling,
) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(
            signaling.url + "/v1/realtime?model=echo",
            protocols=("realtime", f"openai-insecure-api-key.{API_KEY}"),
        ) as ws,
    ):
        assert ws.protocol == "realtime"
        assert (
            json.loads(await ws.receive_str(timeout=EVENT_TIMEOUT_S))["type"] == "session.created"
        )
        await ws.send_bytes(pcm(0.02))
        error = json.loads(await ws.receive_str(timeout=EVENT_TIMEOUT_S))
        assert error["type"] == "error" and error["error"]["code"] == "invalid_event"


async def test_an_ephemeral_key_opens_a_session_on_its_model(signaling: RunningSignaling) -> None:
    secret = await sdk(signaling).realtime.client_secrets.create(
        session={"type": "realtime", "model": "echo"}
    )
    async with sdk(signaling, secret.value).realtime.connect(model="echo") as connection:
        assert (await next_of(connection, "session.created")).session.model == "echo"


async def test_the_agent_going_away_ends_the_session_cleanly_and_is_counted(
    signaling: RunningSignaling, agent: AgentServer
) -> None:
    async with sdk(signaling).realtime.connect(model="echo") as connection:
        await next_of(connection, "session.created")
        await agent.close()
        with pytest.raises(websockets.ConnectionClosed) as closed:
            async with asyncio.timeout(EVENT_TIMEOUT_S):
                while True:
                    await connection.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
    assert ended(signaling, "agent_closed") == 1


async def test_a_wrong_internal_secret_ends_the_session_with_the_agents_refusal(
    agent: AgentServer,
) -> None:
    config = SignalingConfig(
        api_keys=(API_KEY,),
        models={"echo": f"{agent.url}/v1/agents/echo"},
        internal_secret="not-the-secret-" + "0" * 20,
    )
    server = await start_signaling(config, MemoryRegistry())
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(
                server.url + "/v1/realtime?model=echo",
                headers={"Authorization": f"Bearer {API_KEY}"},
            ) as ws,
        ):
            error = json.loads(await ws.receive_str(timeout=EVENT_TIMEOUT_S))
            assert error["error"]["code"] == "agent_refused"
            assert (await ws.receive(timeout=EVENT_TIMEOUT_S)).type == aiohttp.WSMsgType.CLOSE
            assert ws.close_code == aiohttp.WSCloseCode.INTERNAL_ERROR
        assert ended(server, "agent_refused") == 1
    finally:
        await server.close()


async def test_signaling_shutting_down_closes_live_sessions_going_away(agent: AgentServer) -> None:
    config = SignalingConfig(
        api_keys=(API_KEY,), models={"echo": f"{agent.url}/v1/agents/echo"}, internal_secret=SECRET
    )
    server = await start_signaling(config, MemoryRegistry())
    async with sdk(server).realtime.connect(model="echo") as connection:
        await next_of(connection, "session.created")
        closing = asyncio.create_task(server.close())
        with pytest.raises(websockets.ConnectionClosed) as closed:
            async with asyncio.timeout(EVENT_TIMEOUT_S):
                while True:
                    await connection.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        await closing
    for _ in range(200):  # 10 s: the agent server releases the call on its own schedule
        if await agent_calls(agent) == 0:
            break
        await asyncio.sleep(0.05)
    assert await agent_calls(agent) == 0  # the bridge hung up on the agent too


async def agent_calls(agent: AgentServer) -> int:
    url = agent.url.replace("ws://", "http://") + "/healthz"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return int((await response.json())["calls"])
