"""A stand-in for the transceiver: one call's WebSocket to an agent, driven from Python.

It does what the transceiver does on the internal protocol (docs/protocol.md):
the ``session.update`` handshake, then a steady stream of 20 ms PCM frames
paced from a monotonic clock (silence between what you ``play``), while it
records every event and every audio frame the agent sends with its arrival
time. Tests and benchmarks use it to drive agents without WebRTC; so can
you, to test an agent of your own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from talkwire.internal_auth import bearer
from talkwire.protocol.audio import FRAME_BYTES, FRAME_MS, PCM_FORMAT, RATE, SAMPLE_BYTES
from talkwire.protocol.events import make_event

FRAME_S = FRAME_MS / 1000
SILENT_FRAME = bytes(FRAME_BYTES)


@dataclass
class Timed:
    at: float  # time.monotonic() on arrival
    value: Any


@dataclass
class Played:
    """A clip handed to ``play``: when its first and last frames were sent."""

    pcm: bytes
    started: float | None = None
    ended: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class LinkClient:
    def __init__(
        self, url: str, session: dict[str, Any] | None = None, secret: str | None = None
    ) -> None:
        self.url = url
        self.secret = secret  # the agent server's internal secret, if it wants one
        self.session = {"type": "realtime", **(session or {})}
        audio = dict(self.session.get("audio") or {})
        for direction in ("input", "output"):
            audio[direction] = {**dict(audio.get(direction) or {}), "format": dict(PCM_FORMAT)}
        self.session["audio"] = audio
        self.events: list[Timed] = []
        self.audio: list[Timed] = []  # agent audio: Timed(at, bytes)
        self._queue: list[Played] = []
        self._arrived = asyncio.Event()
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.close_code: int | None = None

    async def connect(self, timeout: float = 30.0) -> dict[str, Any]:
        """Handshake; returns the agent's session.created, then audio starts flowing."""
        self._http = aiohttp.ClientSession(headers=bearer(self.secret))
        self._ws = await self._http.ws_connect(self.url, max_msg_size=4 * 1024 * 1024)
        await self._ws.send_str(json.dumps(make_event("session.update", session=self.session)))
        self._tasks.append(asyncio.create_task(self._receive()))
        created = await self.next_event("session.created", timeout=timeout)
        self._tasks.append(asyncio.create_task(self._send_audio()))
        return created

    def play(self, pcm: bytes) -> Played:
        """Queue user audio (PCM16 24 kHz); it goes out in real time after what is queued."""
        clip = Played(pcm[: len(pcm) - len(pcm) % SAMPLE_BYTES])
        self._queue.append(clip)
        return clip

    async def send_event(self, event: dict[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send_str(json.dumps(event))

    # -- what came back ------------------------------------------------------------

    def types(self) -> list[str]:
        return [e.value["type"] for e in self.events]

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e.value for e in self.events if e.value["type"] == kind]

    async def next_event(
        self,
        kind: str,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        *,
        after: int = 0,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """The first event of ``kind`` at index >= ``after`` (waiting for it if needed)."""
        found = await self.wait_event(kind, predicate, after=after, timeout=timeout)
        return found.value  # type: ignore[no-any-return]

    async def wait_event(
        self,
        kind: str,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        *,
        after: int = 0,
        timeout: float = 10.0,
    ) -> Timed:
        """Like next_event, with the arrival time."""
        async with asyncio.timeout(timeout):
            index = after
            while True:
                while index < len(self.events):
                    event = self.events[index]
                    index += 1
                    if event.value["type"] == kind and (
                        predicate is None or predicate(event.value)
                    ):
                        return event
                self._arrived.clear()
                await self._arrived.wait()

    def audio_between(self, start: float, end: float = float("inf")) -> bytes:
        return b"".join(a.value for a in self.audio if start <= a.at < end)

    # -- lifetime ------------------------------------------------------------------

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._ws is not None:
            await self._ws.close()
        if self._http is not None:
            await self._http.close()

    async def _receive(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            now = time.monotonic()
            if message.type == aiohttp.WSMsgType.TEXT:
                self.events.append(Timed(now, json.loads(message.data)))
            elif message.type == aiohttp.WSMsgType.BINARY:
                self.audio.append(Timed(now, message.data))
            self._arrived.set()
        self.close_code = self._ws.close_code
        self._arrived.set()

    async def _send_audio(self) -> None:
        assert self._ws is not None
        next_at = time.monotonic()
        clip: Played | None = None
        offset = 0
        while True:
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            next_at += FRAME_S
            if clip is None and self._queue:
                clip, offset = self._queue.pop(0), 0
                clip.started = time.monotonic()
            if clip is None:
                frame = SILENT_FRAME
            else:
                frame = clip.pcm[offset : offset + FRAME_BYTES].ljust(FRAME_BYTES, b"\0")
                offset += FRAME_BYTES
                if offset >= len(clip.pcm):
                    clip.ended = time.monotonic()
                    clip.done.set()
                    clip = None
            with contextlib.suppress(ConnectionResetError):
                await self._ws.send_bytes(frame)


def frames_of(pcm: bytes) -> int:
    return len(pcm) // FRAME_BYTES


__all__ = ["RATE", "LinkClient", "Played", "Timed"]
