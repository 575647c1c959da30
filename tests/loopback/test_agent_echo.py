"""The echo agent over a real loopback WebSocket, and `talkwire agent echo` as a process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from talkwire.agents.echo import EchoAgent
from talkwire.agents.server import AgentServer, start_agent_server
from talkwire.protocol.audio import FRAME_BYTES, FRAME_MS, RATE

RECEIVE_TIMEOUT = 10.0
EDGE_TOLERANCE_MS = 2 * FRAME_MS
SESSION = {
    "model": "echo",
    "audio": {
        "input": {"format": {"type": "audio/pcm", "rate": 24000}},
        "output": {"format": {"type": "audio/pcm", "rate": 24000}},
    },
}


def pcm(signal: np.ndarray) -> bytes:
    return (np.clip(signal, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def silence(ms: int) -> bytes:
    return bytes(RATE * ms // 1000 * 2)


def tone(ms: int, peak: float = 0.1, hz: float = 440.0) -> bytes:
    t = np.arange(RATE * ms // 1000) / RATE
    return pcm(peak * np.sin(2 * np.pi * hz * t))


def frames(data: bytes) -> list[bytes]:
    assert len(data) % FRAME_BYTES == 0
    return [data[i : i + FRAME_BYTES] for i in range(0, len(data), FRAME_BYTES)]


# 200 ms silence, a 600 ms 440 Hz tone at -20 dBFS peak, then silence past the hangover.
UTTERANCE = silence(200) + tone(600) + silence(800)


@dataclass
class Received:
    events: list[dict[str, Any]] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    # Position in the audio stream at which each event arrived (bytes received before it).
    marks: list[int] = field(default_factory=list)

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    def first(self, kind: str) -> dict[str, Any]:
        return next(e for e in self.events if e["type"] == kind)


async def receive_until(
    ws: aiohttp.ClientWebSocketResponse,
    done: Callable[[Received], bool],
    into: Received | None = None,
) -> Received:
    got = into or Received()
    for _ in range(5000):
        if done(got):
            return got
        msg = await ws.receive(timeout=RECEIVE_TIMEOUT)
        if msg.type is aiohttp.WSMsgType.BINARY:
            got.audio += msg.data
        elif msg.type is aiohttp.WSMsgType.TEXT:
            got.events.append(json.loads(msg.data))
            got.marks.append(len(got.audio))
        else:
            raise AssertionError(f"connection ended: {msg}")
    raise AssertionError("too many messages")


def has(kind: str, count: int = 1) -> Callable[[Received], bool]:
    return lambda got: got.types().count(kind) >= count


@pytest.fixture
async def server() -> AsyncIterator[AgentServer]:
    agents = {"echo": EchoAgent, "echo_delay": partial(EchoAgent, delay_ms=100)}
    srv = await start_agent_server("127.0.0.1", 0, agents)
    try:
        yield srv
    finally:
        await srv.close()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def connect(
    http: aiohttp.ClientSession, url: str, name: str = "echo"
) -> tuple[aiohttp.ClientWebSocketResponse, dict[str, Any]]:
    ws = await http.ws_connect(f"{url}/v1/agents/{name}?call_id=rtc_echo")
    await ws.send_str(json.dumps({"type": "session.update", "session": SESSION}))
    msg = await ws.receive(timeout=RECEIVE_TIMEOUT)
    created: dict[str, Any] = json.loads(msg.data)
    assert created["type"] == "session.created"
    return ws, created


async def send_all(ws: aiohttp.ClientWebSocketResponse, data: bytes) -> None:
    for frame in frames(data):
        await ws.send_bytes(frame)


def check_utterance_events(got: Received, start_ms: int, end_ms: int) -> None:
    """One user turn and the echo response around it, in Realtime order."""
    types = got.types()
    started = got.first("input_audio_buffer.speech_started")
    stopped = got.first("input_audio_buffer.speech_stopped")
    committed = got.first("input_audio_buffer.committed")
    item = got.first("conversation.item.created")
    assert abs(started["audio_start_ms"] - start_ms) <= EDGE_TOLERANCE_MS
    assert abs(stopped["audio_end_ms"] - end_ms) <= EDGE_TOLERANCE_MS
    assert started["item_id"] == stopped["item_id"] == committed["item_id"] == item["item"]["id"]
    assert item["item"]["role"] == "user"
    created = got.first("response.created")
    done = got.first("response.done")
    assert created["response"]["status"] == "in_progress"
    assert done["response"]["id"] == created["response"]["id"]
    assert done["response"]["status"] == "completed"
    audio_done = got.first("response.output_audio.done")
    assert audio_done["response_id"] == created["response"]["id"]
    assert done["response"]["output"][0]["id"] == audio_done["item_id"]
    assert types.index("input_audio_buffer.speech_started") < types.index("response.created")
    assert types.index("response.created") < types.index("response.output_audio.done")
    assert types.index("response.output_audio.done") < types.index("response.done")
    assert types.index("input_audio_buffer.speech_stopped") < types.index(
        "input_audio_buffer.committed"
    )
    assert "output_audio_buffer.clear" not in types
    assert "error" not in types


async def test_echo_returns_the_same_samples_and_turn_events(
    server: AgentServer, http: aiohttp.ClientSession
) -> None:
    ws, created = await connect(http, server.url)
    td = created["session"]["audio"]["input"]["turn_detection"]
    assert td["type"] == "server_vad"
    assert td["silence_duration_ms"] == 500
    await send_all(ws, UTTERANCE)
    got = await receive_until(
        ws, lambda g: len(g.audio) >= len(UTTERANCE) and has("response.done")(g)
    )
    assert bytes(got.audio) == UTTERANCE  # byte-exact with delay 0
    check_utterance_events(got, 200, 800)
    # The response brackets the echoed tone: created before its end, done after it.
    tone_end = len(silence(200) + tone(600))
    assert got.marks[got.types().index("response.created")] < tone_end
    assert got.marks[got.types().index("response.done")] >= tone_end
    await ws.close()


async def test_delayed_echo_is_exact_and_not_early(
    server: AgentServer, http: aiohttp.ClientSession
) -> None:
    ws, _ = await connect(http, server.url, "echo_delay")
    loop = asyncio.get_running_loop()
    sent_at = loop.time()
    await send_all(ws, UTTERANCE)
    got = Received()
    await receive_until(ws, lambda g: len(g.audio) > 0, got)
    first_audio_at = loop.time()
    await receive_until(
        ws, lambda g: len(g.audio) >= len(UTTERANCE) and has("response.done")(g), got
    )
    assert bytes(got.audio) == UTTERANCE
    check_utterance_events(got, 200, 800)
    # A lower bound only: each frame is due 100 ms after it arrived, never before.
    assert first_audio_at - sent_at >= 0.1
    await ws.close()


async def test_response_create_replays_the_last_utterance(
    server: AgentServer, http: aiohttp.ClientSession
) -> None:
    ws, _ = await connect(http, server.url)
    await send_all(ws, UTTERANCE)
    got = await receive_until(ws, has("response.done"))
    await receive_until(ws, lambda g: len(g.audio) >= len(UTTERANCE), got)
    echoed = len(got.audio)
    await ws.send_str(json.dumps({"type": "response.create", "event_id": "event_c1"}))
    await receive_until(ws, has("response.done", 2), got)
    replay = bytes(got.audio[echoed:])
    # The replay is the committed turn: a piece of what was said, holding the whole tone.
    assert replay in UTTERANCE
    assert tone(600) in replay
    responses = [e for e in got.events if e["type"] == "response.done"]
    assert responses[1]["response"]["status"] == "completed"
    assert responses[1]["response"]["id"] != responses[0]["response"]["id"]
    await ws.close()


async def test_response_create_with_nothing_said_completes_empty(
    server: AgentServer, http: aiohttp.ClientSession
) -> None:
    ws, _ = await connect(http, server.url)
    await ws.send_str('{"type": "response.create"}')
    got = await receive_until(ws, has("response.done"))
    assert got.types() == ["response.created", "response.output_audio.done", "response.done"]
    assert got.audio == b""
    await ws.close()


async def test_speaking_over_a_replay_clears_playback(
    server: AgentServer, http: aiohttp.ClientSession
) -> None:
    ws, _ = await connect(http, server.url)
    long_turn = silence(100) + tone(3000) + silence(700)
    await send_all(ws, long_turn)
    got = await receive_until(ws, has("response.done"))
    await ws.send_str('{"type": "response.create"}')
    await receive_until(ws, has("response.done", 2), got)
    # The transceiver is now playing ~3 s of replay; the user talks over it.
    await send_all(ws, tone(200))
    await receive_until(ws, has("output_audio_buffer.clear"), got)
    types = got.types()
    second_start = len(types) - 1 - types[::-1].index("input_audio_buffer.speech_started")
    assert types.count("input_audio_buffer.speech_started") == 2
    assert types.index("output_audio_buffer.clear") > second_start
    await ws.close()


async def test_response_cancel_during_speech_stops_the_echo(
    server: AgentServer, http: aiohttp.ClientSession
) -> None:
    ws, _ = await connect(http, server.url)
    await send_all(ws, silence(100) + tone(200))
    got = await receive_until(ws, has("response.created"))
    response_id = got.first("response.created")["response"]["id"]
    await ws.send_str(json.dumps({"type": "response.cancel", "response_id": response_id}))
    await receive_until(ws, has("response.done"), got)
    assert got.first("response.done")["response"]["status"] == "cancelled"
    await receive_until(ws, lambda g: len(g.audio) >= len(silence(100) + tone(200)), got)
    # The rest of this turn is not echoed; its end still commits the user's item.
    await send_all(ws, tone(200) + silence(700))
    await receive_until(ws, has("input_audio_buffer.committed"), got)
    assert len(got.audio) == len(silence(100) + tone(200))
    assert got.types().count("response.done") == 1
    await ws.send_str('{"type": "response.cancel", "event_id": "event_c9"}')
    await receive_until(ws, has("error"), got)
    error = got.first("error")["error"]
    assert error["code"] == "response_cancel_not_active"
    assert error["event_id"] == "event_c9"
    await ws.close()


async def test_manual_turns_without_vad(server: AgentServer, http: aiohttp.ClientSession) -> None:
    ws, _ = await connect(http, server.url)
    await ws.send_str(
        json.dumps(
            {"type": "session.update", "session": {"audio": {"input": {"turn_detection": None}}}}
        )
    )
    got = await receive_until(ws, has("session.updated"))
    assert got.first("session.updated")["session"]["audio"]["input"]["turn_detection"] is None
    await send_all(ws, UTTERANCE)
    await receive_until(ws, lambda g: len(g.audio) >= len(UTTERANCE), got)
    await ws.send_str('{"type": "input_audio_buffer.commit"}')
    await receive_until(ws, has("conversation.item.created"), got)
    assert "input_audio_buffer.speech_started" not in got.types()
    assert "response.created" not in got.types()
    await ws.send_str('{"type": "input_audio_buffer.commit", "event_id": "event_c2"}')
    await receive_until(ws, has("error"), got)
    assert got.first("error")["error"]["code"] == "input_audio_buffer_commit_empty"
    await ws.send_str('{"type": "response.create"}')
    await receive_until(ws, has("response.done"), got)
    # Manual commit kept everything since the last one: the replay is the whole input.
    assert bytes(got.audio[len(UTTERANCE) :]) == UTTERANCE
    await ws.close()


async def test_input_clear_and_item_create(
    server: AgentServer, http: aiohttp.ClientSession
) -> None:
    ws, _ = await connect(http, server.url)
    await send_all(ws, silence(100) + tone(200))
    got = await receive_until(ws, has("response.created"))
    await ws.send_str('{"type": "input_audio_buffer.clear"}')
    await receive_until(ws, has("input_audio_buffer.cleared"), got)
    assert got.first("response.done")["response"]["status"] == "cancelled"
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
    await ws.send_str(json.dumps({"type": "conversation.item.create", "item": item}))
    await receive_until(ws, has("conversation.item.created"), got)
    created = got.first("conversation.item.created")["item"]
    assert created["id"].startswith("item_")
    assert created["content"] == item["content"]
    await ws.close()


async def test_cli_serves_echo_and_prints_ready(http: aiohttp.ClientSession) -> None:
    talkwire = Path(sys.executable).with_name("talkwire")
    proc = await asyncio.create_subprocess_exec(
        str(talkwire),
        "agent",
        "echo",
        "--listen",
        "127.0.0.1:0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        assert line.startswith("ready ws://127.0.0.1:"), line
        url = line.removeprefix("ready ")
        assert int(url.rsplit(":", 1)[1]) > 0
        ws, _ = await connect(http, url)
        data = silence(100) + tone(300)
        await send_all(ws, data)
        got = await receive_until(ws, lambda g: len(g.audio) >= len(data))
        assert bytes(got.audio) == data
        await ws.close()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
    assert code == 0


async def test_cli_rejects_bad_listen() -> None:
    talkwire = Path(sys.executable).with_name("talkwire")
    proc = await asyncio.create_subprocess_exec(
        str(talkwire),
        "agent",
        "echo",
        "--listen",
        "nonsense",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 2
    assert b"--listen" in err
